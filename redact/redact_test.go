package redact

import (
	"strings"
	"testing"
)

func TestDefaultRules(t *testing.T) {
	f, err := New(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	for in, leak := range map[string]string{
		"connecting with password=hunter2xyz":                           "hunter2xyz",
		`{"api_key": "abcd1234efgh"}`:                                   "abcd1234efgh",
		"DB_PASSWORD: s3cr3t!pass":                                      "s3cr3t!pass",
		"Authorization: Bearer abc.def.ghijklmnop":                      "abc.def.ghijklmnop",
		"postgres://app:topsecret@db:5432/app":                          "topsecret",
		"aws AKIAIOSFODNN7EXAMPLE used":                                 "AKIAIOSFODNN7EXAMPLE",
		"token ghp_" + strings.Repeat("a", 36):                          "ghp_" + strings.Repeat("a", 36),
		"slack xoxb-123456789012-abcdefghij":                            "xoxb-123456789012-abcdefghij",
		"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlX3g": "eyJzdWIiOiIxMjM0NSJ9",
		// Case-insensitive matching folds ſ to s and the Kelvin sign to k.
		"pa\u017f\u017fword=hunter2xyz": "hunter2xyz",
		"api_\u212aey: abcd1234efgh":    "abcd1234efgh",
	} {
		out := f.Redact(in, nil)
		if strings.Contains(out, leak) || !strings.Contains(out, Mask) {
			t.Errorf("%q → %q still leaks %q", in, out, leak)
		}
	}
	if out := f.Redact("GET /health 200 in 3ms", nil); out != "GET /health 200 in 3ms" {
		t.Errorf("an ordinary line was changed: %q", out)
	}
}

func TestEnvSecretsAndExtraPatterns(t *testing.T) {
	secrets := EnvSecrets([]byte("# comment\nFAIL_HEALTH=0\nexport SECRET_TOKEN=\"s3cr3t-value\"\nNAME=prod\nLONG=abcdefgh\n"))
	if strings.Join(secrets, ",") != "s3cr3t-value,abcdefgh" {
		t.Fatalf("secrets %q", secrets)
	}
	f, err := New([]string{`card-\d{4}`}, true)
	if err != nil {
		t.Fatal(err)
	}
	out := f.Redact("user paid with card-1234, key s3cr3t-value and abcdefgh", secrets)
	if strings.Contains(out, "1234") || strings.Contains(out, "s3cr3t") || strings.Contains(out, "abcdefgh") {
		t.Fatalf("leak: %q", out)
	}
	if _, err := New([]string{"("}, false); err == nil {
		t.Fatal("bad pattern accepted")
	}
}

func BenchmarkRedactOrdinaryLine(b *testing.B) {
	f, _ := New(nil, false)
	line := `2026-11-27T07:05:17Z INFO request GET /api/items?page=2 200 in 3.2ms user_agent="curl/8.1"`
	b.ReportAllocs()
	for range b.N {
		f.Redact(line, nil)
	}
}

func BenchmarkRedactSecretLine(b *testing.B) {
	f, _ := New(nil, false)
	line := `connecting to postgres://app:topsecret@db:5432/app with password=hunter2xyz`
	b.ReportAllocs()
	for range b.N {
		f.Redact(line, nil)
	}
}

// FuzzRedactGates checks that the keyword gates never skip a rule that
// would have changed the text: Redact equals running every rule in turn.
func FuzzRedactGates(f *testing.F) {
	for _, s := range []string{
		"password=hunter2xyz", "PASSWORD: s3cr3tvalue", "Authorization: BEARER abcdefghijkl",
		"postgres://app:topsecret@db/app", "aws AKIAIOSFODNN7EXAMPLE", "ghp_" + strings.Repeat("a", 36),
		"xoxb-123456789012-abcd", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlX3g",
		"-----BEGIN RSA PRIVATE KEY-----", "pa\u017f\u017fword=hunter2xyz", "api_\u212aey=abcdefgh",
		"GET /health 200", "", "secret", "token:abc", "\xff\xfepassword=zzzzzz",
	} {
		f.Add(s)
	}
	filter, err := New(nil, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := s
		for _, r := range filter.rules {
			want = r.re.ReplaceAllString(want, r.repl)
		}
		if got := filter.Redact(s, nil); got != want {
			t.Fatalf("Redact(%q) = %q, every rule in turn gives %q", s, got, want)
		}
	})
}
