package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
)

var (
	testNow     = time.Unix(1_800_000_000, 0)
	secretA     = []byte("alpha-secret-0123456789")
	secretB     = []byte("bravo-secret-0123456789")
	testSubject = "berth.cmd.alpha.status"
	testBody    = []byte(`{"user":"telegram:1","id":"r1"}`)
)

func verifier(secrets ...[]byte) *Verifier {
	return &Verifier{Secrets: secrets, Now: func() time.Time { return testNow }}
}

func signed(secret []byte, ts time.Time, subject string, body []byte) map[string][]string {
	t, s := Sign(secret, ts, subject, body)
	return map[string][]string{HeaderTimestamp: {t}, HeaderSignature: {s}}
}

func wantUnauthorized(t *testing.T, err error, what string) {
	t.Helper()
	var e *events.Error
	if !errors.As(err, &e) || e.Code != events.CodeUnauthorized {
		t.Fatalf("%s: err %v, want an unauthorized *events.Error", what, err)
	}
	if !strings.Contains(e.Hint, "docs/security.md") || !strings.Contains(e.Hint, "Berth-Signature") {
		t.Fatalf("%s: hint %q does not say what to do", what, e.Hint)
	}
}

func TestSignFormat(t *testing.T) {
	ts, sig := Sign(secretA, testNow, testSubject, testBody)
	if ts != "1800000000" {
		t.Fatalf("timestamp %q", ts)
	}
	mac := hmac.New(sha256.New, secretA)
	mac.Write([]byte("1800000000.berth.cmd.alpha.status." + string(testBody)))
	if want := "v1=" + hex.EncodeToString(mac.Sum(nil)); sig != want {
		t.Fatalf("signature %q, want %q", sig, want)
	}
}

func TestRoundTrip(t *testing.T) {
	h := signed(secretA, testNow, testSubject, testBody)
	got, err := verifier(secretA).Verify(testSubject, h, testBody)
	if err != nil {
		t.Fatal(err)
	}
	if got.Sig != h[HeaderSignature][0] || got.Key == nil || got.Key.ID != "" {
		t.Fatalf("returned %+v, want the header's signature %q and a shared secret", got, h[HeaderSignature][0])
	}
	// An empty body signs too.
	h = signed(secretA, testNow, testSubject, nil)
	if _, err := verifier(secretA).Verify(testSubject, h, []byte{}); err != nil {
		t.Fatal(err)
	}
}

func TestWrongSecret(t *testing.T) {
	h := signed(secretB, testNow, testSubject, testBody)
	_, err := verifier(secretA).Verify(testSubject, h, testBody)
	wantUnauthorized(t, err, "wrong secret")
}

func TestRotation(t *testing.T) {
	v := verifier(secretA, secretB)
	for name, secret := range map[string][]byte{"first": secretA, "second": secretB} {
		if _, err := v.Verify(testSubject, signed(secret, testNow, testSubject, testBody), testBody); err != nil {
			t.Fatalf("signed with the %s secret: %v", name, err)
		}
	}
	third := []byte("charlie-secret-0123456789")
	_, err := v.Verify(testSubject, signed(third, testNow, testSubject, testBody), testBody)
	wantUnauthorized(t, err, "a third secret")
}

func TestWindow(t *testing.T) {
	v := verifier(secretA)
	for _, d := range []time.Duration{-DefaultWindow, DefaultWindow, -time.Minute, time.Minute} {
		if _, err := v.Verify(testSubject, signed(secretA, testNow.Add(d), testSubject, testBody), testBody); err != nil {
			t.Fatalf("signed %v from now: %v", d, err)
		}
	}
	for _, d := range []time.Duration{-DefaultWindow - time.Second, DefaultWindow + time.Second, -24 * time.Hour, 365 * 24 * time.Hour} {
		_, err := v.Verify(testSubject, signed(secretA, testNow.Add(d), testSubject, testBody), testBody)
		wantUnauthorized(t, err, "signed "+d.String()+" from now")
	}
	// A custom window.
	v.Window = 10 * time.Second
	_, err := v.Verify(testSubject, signed(secretA, testNow.Add(-11*time.Second), testSubject, testBody), testBody)
	wantUnauthorized(t, err, "outside a 10s window")
	if _, err := v.Verify(testSubject, signed(secretA, testNow.Add(9*time.Second), testSubject, testBody), testBody); err != nil {
		t.Fatalf("inside a 10s window: %v", err)
	}
}

func TestTampered(t *testing.T) {
	v := verifier(secretA)
	h := signed(secretA, testNow, testSubject, testBody)

	_, err := v.Verify(testSubject, h, []byte(`{"user":"telegram:1","id":"r2"}`))
	wantUnauthorized(t, err, "tampered body")
	_, err = v.Verify(testSubject, h, append([]byte{}, append(testBody, ' ')...))
	wantUnauthorized(t, err, "body with a trailing space")
	_, err = v.Verify("berth.cmd.beta.deploy", h, testBody)
	wantUnauthorized(t, err, "another subject")
	_, err = v.Verify("berth.cmd.alpha.deploy", h, testBody)
	wantUnauthorized(t, err, "another action")

	// The timestamp is signed: moving it invalidates the signature.
	moved := map[string][]string{HeaderTimestamp: {"1800000001"}, HeaderSignature: h[HeaderSignature]}
	_, err = v.Verify(testSubject, moved, testBody)
	wantUnauthorized(t, err, "moved timestamp")

	// The message is not length-prefixed: "<ts>.berth.cmd.alpha" with body
	// "status.<body>" is the same byte string as the original. That is
	// harmless because a subject the worker serves ends in a known action
	// and a body it accepts is a JSON object, so only one split is valid.
	hs := signed(secretA, testNow, "berth.cmd.alpha", []byte("status."+string(testBody)))
	if _, err := v.Verify(testSubject, hs, testBody); err != nil {
		t.Fatalf("the same signed bytes: %v", err)
	}
}

func TestMissingAndMalformedHeaders(t *testing.T) {
	v := verifier(secretA)
	good := signed(secretA, testNow, testSubject, testBody)
	ts, sig := good[HeaderTimestamp][0], good[HeaderSignature][0]
	cases := map[string]map[string][]string{
		"nil header":         nil,
		"no headers":         {},
		"no timestamp":       {HeaderSignature: {sig}},
		"no signature":       {HeaderTimestamp: {ts}},
		"empty timestamp":    {HeaderTimestamp: {""}, HeaderSignature: {sig}},
		"empty signature":    {HeaderTimestamp: {ts}, HeaderSignature: {""}},
		"two timestamps":     {HeaderTimestamp: {ts, ts}, HeaderSignature: {sig}},
		"two signatures":     {HeaderTimestamp: {ts}, HeaderSignature: {sig, sig}},
		"no value":           {HeaderTimestamp: {}, HeaderSignature: {sig}},
		"signed timestamp":   {HeaderTimestamp: {"+" + ts}, HeaderSignature: {sig}},
		"negative timestamp": {HeaderTimestamp: {"-1"}, HeaderSignature: {sig}},
		"float timestamp":    {HeaderTimestamp: {ts + ".0"}, HeaderSignature: {sig}},
		"RFC 3339 timestamp": {HeaderTimestamp: {testNow.Format(time.RFC3339)}, HeaderSignature: {sig}},
		"huge timestamp":     {HeaderTimestamp: {"99999999999999999999999"}, HeaderSignature: {sig}},
		"millis timestamp":   {HeaderTimestamp: {ts + "000"}, HeaderSignature: {sig}},
		"no v1 prefix":       {HeaderTimestamp: {ts}, HeaderSignature: {strings.TrimPrefix(sig, "v1=")}},
		"v2 prefix":          {HeaderTimestamp: {ts}, HeaderSignature: {"v2=" + strings.TrimPrefix(sig, "v1=")}},
		"upper-case hex":     {HeaderTimestamp: {ts}, HeaderSignature: {"v1=" + strings.ToUpper(strings.TrimPrefix(sig, "v1="))}},
		"short hex":          {HeaderTimestamp: {ts}, HeaderSignature: {sig[:len(sig)-2]}},
		"long hex":           {HeaderTimestamp: {ts}, HeaderSignature: {sig + "00"}},
		"not hex":            {HeaderTimestamp: {ts}, HeaderSignature: {sig[:len(sig)-1] + "g"}},
		"base64 signature":   {HeaderTimestamp: {ts}, HeaderSignature: {"v1=" + strings.Repeat("A", 43) + "="}},
		"spaces":             {HeaderTimestamp: {" " + ts}, HeaderSignature: {sig}},
		"two cases":          {"berth-timestamp": {ts}, "BERTH-TIMESTAMP": {ts}, HeaderSignature: {sig}},
	}
	for name, h := range cases {
		_, err := v.Verify(testSubject, h, testBody)
		wantUnauthorized(t, err, name)
	}
	// A header whose name changed case (an HTTP bridge) still verifies.
	lower := map[string][]string{"berth-timestamp": {ts}, "berth-signature": {sig}}
	if _, err := v.Verify(testSubject, lower, testBody); err != nil {
		t.Fatalf("lower-case header names: %v", err)
	}
}

func TestShortSecretNeverMatches(t *testing.T) {
	short := []byte("short")
	v := verifier(short)
	_, err := v.Verify(testSubject, signed(short, testNow, testSubject, testBody), testBody)
	wantUnauthorized(t, err, "a secret shorter than MinSecretLen")
	v = verifier(nil)
	if !v.Enabled() {
		t.Fatal("a verifier with an empty secret must stay enabled (and refuse everything)")
	}
	_, err = v.Verify(testSubject, signed(nil, testNow, testSubject, testBody), testBody)
	wantUnauthorized(t, err, "an empty secret")
}

func TestDisabledVerifier(t *testing.T) {
	var nilV *Verifier
	for name, v := range map[string]*Verifier{"nil": nilV, "empty": {}, "no secrets": {Secrets: [][]byte{}, Window: time.Second}} {
		if v.Enabled() {
			t.Fatalf("%s verifier is enabled", name)
		}
		for _, h := range []map[string][]string{nil, {}, signed(secretA, testNow, testSubject, testBody),
			{HeaderTimestamp: {"garbage"}, HeaderSignature: {"garbage"}}} {
			got, err := v.Verify(testSubject, h, testBody)
			if got != nil || err != nil {
				t.Fatalf("%s verifier: Verify = %+v, %v; want nil, nil", name, got, err)
			}
		}
	}
	if !verifier(secretA).Enabled() {
		t.Fatal("a verifier with a secret is not enabled")
	}
}

func TestErrorDoesNotTellWhichSecret(t *testing.T) {
	v := verifier(secretA, secretB)
	third := []byte("charlie-secret-0123456789")
	_, err1 := v.Verify(testSubject, signed(third, testNow, testSubject, testBody), testBody)
	_, err2 := v.Verify(testSubject, signed(secretA, testNow, "berth.cmd.beta.status", testBody), testBody)
	_, err3 := v.Verify(testSubject, signed(secretB, testNow, testSubject, []byte("{}")), testBody)
	if err1.Error() != err2.Error() || err2.Error() != err3.Error() {
		t.Fatalf("mismatches differ:\n%v\n%v\n%v", err1, err2, err3)
	}
	for _, s := range [][]byte{secretA, secretB} {
		if strings.Contains(err1.Error(), string(s)) {
			t.Fatal("the error shows a secret")
		}
	}
}

func TestParseSecrets(t *testing.T) {
	got, err := ParseSecrets(" plain-text-secret-123 , hex:000102030405060708090a0b0c0d0e0f,base64:AAECAwQFBgcICQoLDA0ODw==,base64:AAECAwQFBgcICQoLDA0ODw,base64:_-_-_-_-_-_-_-_-_-_-_w")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"plain-text-secret-123", "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
		"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f", "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"}
	if len(got) != 5 {
		t.Fatalf("%d secrets", len(got))
	}
	for i, w := range want {
		if string(got[i]) != w {
			t.Fatalf("secret %d = %q, want %q", i+1, got[i], w)
		}
	}
	if len(got[4]) != 16 {
		t.Fatalf("URL-safe base64 secret is %d bytes", len(got[4]))
	}

	for _, s := range []string{"", "  ", "\n"} {
		if got, err := ParseSecrets(s); err != nil || got != nil {
			t.Fatalf("ParseSecrets(%q) = %v, %v; want nil, nil", s, got, err)
		}
	}
	for _, s := range []string{
		"short",
		"plain-text-secret-123,",
		"plain-text-secret-123,,plain-text-secret-456",
		"hex:0011",
		"hex:zz00102030405060708090a0b0c0d0e0f",
		"hex:000102030405060708090a0b0c0d0e0", // odd length
		"base64:AAEC",
		"base64:***notbase64***notbase64***",
		"0123456789abcde", // 15 bytes
	} {
		if _, err := ParseSecrets(s); err == nil {
			t.Fatalf("ParseSecrets(%q) accepted", s)
		} else if strings.Contains(err.Error(), "zz00") || strings.Contains(err.Error(), "notbase64") {
			t.Fatalf("the error shows the secret: %v", err)
		}
	}
	if _, err := ParseSecrets("0123456789abcdef"); err != nil { // 16 bytes
		t.Fatal(err)
	}
}

// FuzzVerify checks that arbitrary headers and bodies never panic, and
// never verify unless the signature is the one the secret gives.
func FuzzVerify(f *testing.F) {
	ts, sig := Sign(secretA, testNow, testSubject, testBody)
	f.Add(testSubject, ts, sig, testBody)
	f.Add(testSubject, ts, sig, []byte("{}"))
	f.Add("berth.cmd.beta.deploy", ts, sig, testBody)
	f.Add("", "", "", []byte(nil))
	f.Add(testSubject, "1800000000", "v1="+strings.Repeat("0", 64), testBody)
	f.Add(testSubject, "-1", "v1=", []byte("\x00\xff"))
	f.Add(testSubject, "999999999999", "V1="+strings.Repeat("F", 64), testBody)
	v := verifier(secretA, secretB)
	f.Fuzz(func(t *testing.T, subject, ts, sig string, body []byte) {
		h := map[string][]string{HeaderTimestamp: {ts}, HeaderSignature: {sig}}
		got, err := v.Verify(subject, h, body)
		if err != nil {
			var e *events.Error
			if !errors.As(err, &e) || e.Code != events.CodeUnauthorized || got != nil {
				t.Fatalf("Verify = %+v, %v: want an unauthorized *events.Error", got, err)
			}
			return
		}
		// Accepted: the signature must be what a secret gives for exactly
		// this timestamp, subject and body.
		if got.Sig != sig {
			t.Fatalf("returned %q, not the header %q", got.Sig, sig)
		}
		ok := false
		for _, s := range v.Secrets {
			mac := hmac.New(sha256.New, s)
			mac.Write([]byte(ts + "." + subject + "." + string(body)))
			ok = ok || sig == "v1="+hex.EncodeToString(mac.Sum(nil))
		}
		if !ok {
			t.Fatalf("verified without the secret: subject %q ts %q sig %q body %q", subject, ts, sig, body)
		}
		// Also with the header names in another case.
		lower := map[string][]string{strings.ToLower(HeaderTimestamp): {ts}, strings.ToLower(HeaderSignature): {sig}}
		if _, err := v.Verify(subject, lower, body); err != nil {
			t.Fatalf("lower-case names: %v", err)
		}
	})
}

// TestDocumentedVector is the example of docs/security.md, which clients
// in other languages can check their signing against.
func TestDocumentedVector(t *testing.T) {
	ts, sig := Sign([]byte("example-secret-do-not-use-0123"), time.Unix(1_800_000_000, 0),
		"berth.cmd.demo.status", []byte(`{"id":"r1","user":"telegram:42"}`))
	if ts != "1800000000" || sig != "v1=077cc672d9ad19e0f5e9f5e35bc8bed8b01e0c1acee35ded59c67eb6957afced" {
		t.Fatalf("Sign = %s, %s: update docs/security.md if the scheme changed on purpose", ts, sig)
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys.json")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"keys":[{"id":"tg","secret":"telegram-bot-secret-0123","users":["telegram:*"]},
		{"id":"alice","secret":"hex:00112233445566778899aabbccddeeff","users":["cli:alice"],"projects":["shop"]}]}`)
	keys, err := LoadKeys(file)
	if err != nil || len(keys) != 2 || keys[0].Projects[0] != "*" {
		t.Fatalf("LoadKeys: %+v, %v", keys, err)
	}
	v := &Verifier{Keys: keys, Secrets: [][]byte{secretA}, Now: func() time.Time { return testNow }}
	sign := func(k Key, id string) map[string][]string {
		h := signed(k.Secret, testNow, testSubject, testBody)
		if id != "" {
			h[HeaderKey] = []string{id}
		}
		return h
	}
	got, err := v.Verify(testSubject, sign(keys[0], "tg"), testBody)
	if err != nil || got.Key.ID != "tg" {
		t.Fatalf("verify with a named key: %+v, %v", got, err)
	}
	if err := got.Key.Allows("telegram:123", "alpha"); err != nil {
		t.Fatalf("tg for telegram:123: %v", err)
	}
	if err := got.Key.Allows("github:octocat", "alpha"); events.ErrorCode(err) != events.CodeUnauthorized {
		t.Fatalf("tg for github:octocat: %v", err)
	}
	if err := keys[1].Allows("cli:alice", "blog"); events.ErrorCode(err) != events.CodeUnauthorized {
		t.Fatalf("alice on blog: %v", err)
	}
	// A key's secret does not pass under another key's name, nor unnamed.
	for name, h := range map[string]map[string][]string{
		"another key's name": sign(keys[0], "alice"),
		"no name":            sign(keys[0], ""),
		"unknown name":       sign(keys[0], "mallory"),
	} {
		if _, err := v.Verify(testSubject, h, testBody); events.ErrorCode(err) != events.CodeUnauthorized {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The shared secrets speak for anyone.
	got, err = v.Verify(testSubject, signed(secretA, testNow, testSubject, testBody), testBody)
	if err != nil || got.Key.Allows("anyone:1", "any") != nil {
		t.Fatalf("shared secret: %+v, %v", got, err)
	}
	for _, bad := range []string{`{"keys":[]}`, `{"keys":[{"id":"x","secret":"short","users":["*"]}]}`,
		`{"keys":[{"id":"x","secret":"long-enough-secret-123","users":[]}]}`,
		`{"keys":[{"id":"a b","secret":"long-enough-secret-123","users":["*"]}]}`,
		`{"keys":[{"id":"x","secret":"long-enough-secret-123","users":["*"],"extra":1}]}`,
		`{"keys":[{"id":"x","secret":"long-enough-secret-123","users":["*"]},{"id":"x","secret":"long-enough-secret-456","users":["*"]}]}`} {
		write(bad)
		if _, err := LoadKeys(file); err == nil {
			t.Errorf("LoadKeys accepted %s", bad)
		}
	}
}

func TestVerifyEvent(t *testing.T) {
	old := testNow.Add(-240 * time.Hour)
	h := signed(secretA, old, "berth.evt.po.u.r1.result", testBody)
	if err := VerifyEvent([][]byte{secretA}, "berth.evt.po.u.r1.result", h, testBody); err != nil {
		t.Fatalf("an old event: %v", err)
	}
	for name, c := range map[string]struct {
		subject string
		body    []byte
		h       map[string][]string
	}{
		"other subject": {"berth.evt.po.u.r2.result", testBody, h},
		"other body":    {"berth.evt.po.u.r1.result", []byte("{}"), h},
		"unsigned":      {"berth.evt.po.u.r1.result", testBody, map[string][]string{}},
	} {
		if err := VerifyEvent([][]byte{secretA}, c.subject, c.h, c.body); events.ErrorCode(err) != events.CodeUnauthorized {
			t.Errorf("%s: %v", name, err)
		}
	}
}
