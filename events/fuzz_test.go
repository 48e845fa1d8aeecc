package events

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzDecodeCommand feeds arbitrary bytes to DecodeCommand: it never
// panics; what it accepts is a valid command that survives re-encoding
// unchanged; what it refuses is a bad_request *Error that says how to fix
// it. Seeds: the bodies of the hostile-input corpus (testdata/hostile) and a
// few valid commands.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"user":"telegram:123456"}`,
		`{"id":"req-1","user":"github:octocat","args":{"tail":100,"service":"web"},"confirm":"yes","reply_to":"_INBOX.abc"}`,
		`{"user":"cli:bob","args":null}`,
		`{"user":"cli:bob","args":{ "grep" : "<a&b>\u2028" } }`,
		` {"user":"x:é"}` + "\n",
		`{"user":"x:1","confirm":"0123456789abcdef0123456789abcdef0123456789abcdef"}`,
	} {
		f.Add([]byte(s))
	}
	for _, body := range hostileSeeds(f) {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := DecodeCommand(body)
		if err != nil {
			if c != nil {
				t.Fatalf("both a command and an error: %+v, %v", c, err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not an *Error: %v", err, err)
			}
			if e.Code != CodeBadRequest || e.Message == "" || strings.TrimSpace(e.Hint) == "" {
				t.Fatalf("refusal without bad_request, message and hint: %+v", e)
			}
			return
		}
		if c == nil {
			t.Fatal("neither a command nor an error")
		}
		if !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not UTF-8: %q", body)
		}
		checkCommand(t, c)

		again, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", c, err)
		}
		c2, err := DecodeCommand(again)
		if err != nil {
			t.Fatalf("the re-encoded command %s is refused: %v", again, err)
		}
		if c2.ID != c.ID || c2.User != c.User || c2.Confirm != c.Confirm || c2.ReplyTo != c.ReplyTo {
			t.Fatalf("round trip changed the command:\n%+v\n%+v", c, c2)
		}
		a1, err1 := json.Marshal(c.Args)
		a2, err2 := json.Marshal(c2.Args)
		if err1 != nil || err2 != nil || string(a1) != string(a2) {
			t.Fatalf("round trip changed args: %s (%v) -> %s (%v)", a1, err1, a2, err2)
		}
	})
}

// checkCommand checks what every accepted command must satisfy, with
// checks written independently of Validate.
func checkCommand(t *testing.T, c *Command) {
	t.Helper()
	if c.ID != "" && !ValidRequestID(c.ID) {
		t.Fatalf("accepted id %q", c.ID)
	}
	if c.ID != "" && (len(c.ID) > 64 || strings.ContainsAny(c.ID, ".*> \t\r\n")) {
		t.Fatalf("accepted id %q, which is not a single subject token", c.ID)
	}
	if c.User == "" || utf8.RuneCountInString(c.User) > MaxUserLen || !utf8.ValidString(c.User) {
		t.Fatalf("accepted user %q", c.User)
	}
	for _, r := range c.User {
		if !unicode.IsPrint(r) {
			t.Fatalf("accepted user %q with the unprintable %U", c.User, r)
		}
	}
	for _, r := range c.Confirm {
		if !unicode.IsPrint(r) || len(c.Confirm) > 128 {
			t.Fatalf("accepted confirm %q", c.Confirm)
		}
	}
	if c.ReplyTo != "" {
		if len(c.ReplyTo) > 256 {
			t.Fatalf("accepted a reply_to of %d bytes", len(c.ReplyTo))
		}
		for _, tok := range strings.Split(c.ReplyTo, ".") {
			if tok == "" || tok == "*" || tok == ">" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || !unicode.IsPrint(r) }) {
				t.Fatalf("accepted reply_to %q", c.ReplyTo)
			}
		}
	}
	if len(c.Args) > 0 && !json.Valid(c.Args) {
		t.Fatalf("accepted args that are not JSON: %q", c.Args)
	}
}

// hostileSeeds returns the bodies of testdata/hostile/*.json, their
// placeholders filled with stand-ins (the worker test fills them with real
// paths and tokens; only the bytes' shape matters here).
func hostileSeeds(f *testing.F) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "hostile", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	if len(files) == 0 {
		f.Fatal("no hostile corpus in ../testdata/hostile")
	}
	var out [][]byte
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var c struct {
			RawBody *string `json:"raw_body"`
			BodyB64 string  `json:"body_b64"`
			Repeat  map[string]struct {
				S string `json:"s"`
				N int    `json:"n"`
			} `json:"repeat"`
		}
		if err := json.Unmarshal(data, &c); err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		if c.BodyB64 != "" {
			b, err := base64.StdEncoding.DecodeString(c.BodyB64)
			if err != nil {
				f.Fatalf("%s: %v", file, err)
			}
			out = append(out, b)
			continue
		}
		if c.RawBody == nil {
			f.Fatalf("%s: no raw_body or body_b64", file)
		}
		s := *c.RawBody
		for k, r := range c.Repeat {
			s = strings.ReplaceAll(s, k, strings.Repeat(r.S, r.N))
		}
		s = strings.NewReplacer("{{ID}}", "hostile-1", "{{ROOT}}", "/srv/root", "{{SAMPLE}}", "/srv/root/sample",
			"{{TOKEN}}", "0123456789abcdef0123456789abcdef0123456789abcdef").Replace(s)
		out = append(out, []byte(s))
	}
	return out
}

// FuzzUserToken checks that any user's token is one safe subject token,
// that a plain user is its own token, and that no user gets the scope of
// refused commands.
func FuzzUserToken(f *testing.F) {
	for _, s := range []string{"telegram:123456", "a b", "a.b", "~refused", "*", ">", "", "ü", strings.Repeat("x", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, user string) {
		tok := UserToken(user)
		if tok == "" || tok == RefusedTokenScope || strings.ContainsAny(tok, ". *>\t\r\n\x00") || len(tok) > 64 {
			t.Fatalf("UserToken(%q) = %q", user, tok)
		}
		if userTokenRe.MatchString(user) != (tok == user) {
			t.Fatalf("UserToken(%q) = %q: a plain user must be its own token, and only one", user, tok)
		}
	})
}

// FuzzParseQuery checks that a parsed query subject is rebuilt as it was.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"berth.q.po.status", "berth.q.projects", "berth.q.po.logs.x", "berth.q..status", "berth.cmd.po.status"} {
		f.Add(s)
	}
	s := NewSubjects("")
	f.Fuzz(func(t *testing.T, subject string) {
		project, endpoint, err := s.ParseQuery(subject)
		if err != nil {
			return
		}
		want := s.ProjectsQuery()
		if endpoint != EndpointProjects {
			want = s.Query(project, endpoint)
		}
		if want != subject {
			t.Fatalf("ParseQuery(%q) = %q %q, which is %q", subject, project, endpoint, want)
		}
	})
}
