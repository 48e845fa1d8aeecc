package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSubjectsRoundTrip(t *testing.T) {
	s := NewSubjects("")
	for _, a := range Actions() {
		p, act, err := s.ParseCommand(s.Command("po", a))
		if err != nil || p != "po" || act != a {
			t.Fatalf("%s: %q %q %v", a, p, act, err)
		}
	}
	for _, bad := range []string{"berth.cmd.po", "other.cmd.po.status", "berth.cmd..status", "berth.evt.po.x.result"} {
		if _, _, err := s.ParseCommand(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if got := s.Event("po", "telegram:1", "r1", KindResult); got != "berth.evt.po.telegram:1.r1.result" {
		t.Fatalf("event subject %q", got)
	}
	if got := s.RequestEvents("po", "a b", "r1"); !strings.HasPrefix(got, "berth.evt.po.~") || !strings.HasSuffix(got, ".r1.>") {
		t.Fatalf("events of a user with a space: %q", got)
	}
	for _, q := range []struct{ subject, project, endpoint string }{
		{"berth.q.po.status", "po", "status"}, {"berth.q.po.logs", "po", "logs"}, {"berth.q.projects", "", "projects"},
	} {
		p, e, err := s.ParseQuery(q.subject)
		if err != nil || p != q.project || e != q.endpoint {
			t.Errorf("ParseQuery(%s) = %q %q %v", q.subject, p, e, err)
		}
	}
	for _, bad := range []string{"berth.q.po.explode", "berth.q.po", "berth.q..status", "berth.cmd.po.status", "berth.q.po.projects"} {
		if _, _, err := s.ParseQuery(bad); err == nil {
			t.Errorf("ParseQuery(%q) passed", bad)
		}
	}
}

func TestUserToken(t *testing.T) {
	seen := map[string]string{}
	for _, u := range []string{"telegram:123456", "github:octocat", "cli:admin", "a b", "a.b", "a*b", "a>b", "ünïcode",
		strings.Repeat("x", 65), "~refused", "~abc"} {
		tok := UserToken(u)
		if strings.ContainsAny(tok, ". *>\t\n") || tok == "" || tok == RefusedTokenScope {
			t.Errorf("UserToken(%q) = %q is not a safe subject token", u, tok)
		}
		if other, dup := seen[tok]; dup {
			t.Errorf("users %q and %q share the token %q", u, other, tok)
		}
		seen[tok] = u
	}
	if UserToken("telegram:1") != "telegram:1" {
		t.Error("a plain user is its own token")
	}
}

func TestLanesPartitionTheActions(t *testing.T) {
	fast, slow := FastActions(), SlowActions()
	if len(fast)+len(slow) != len(Actions()) {
		t.Fatalf("fast %v + slow %v do not cover %v", fast, slow, Actions())
	}
	for _, a := range slow {
		if IsFast(a) {
			t.Fatalf("%s in both lanes", a)
		}
	}
}

func TestNames(t *testing.T) {
	for p, ok := range map[string]bool{"po": true, "a-b_c9": true, "": false, "Po": false, "-x": false, "po;rm": false,
		strings.Repeat("a", 63): true, strings.Repeat("a", 64): false, "a.b": false, "a b": false} {
		if ValidProject(p) != ok {
			t.Errorf("ValidProject(%q) = %v", p, !ok)
		}
	}
	for id, ok := range map[string]bool{"abc-DEF_1": true, "": false, "a.b": false, "a*": false, strings.Repeat("x", 65): false} {
		if ValidRequestID(id) != ok {
			t.Errorf("ValidRequestID(%q) = %v", id, !ok)
		}
	}
}

func TestDecodeCommand(t *testing.T) {
	c, err := DecodeCommand([]byte(`{"id":"r1","user":"telegram:1","args":{"tail":5},"confirm":"yes","reply_to":"_INBOX.a"}`))
	if err != nil || c.ID != "r1" || string(c.Args) != `{"tail":5}` || c.Confirm != "yes" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{``, `null`, `[]`, `{"user":1}`, `{"user":"u","x":1}`, `{"user":"u"}x`, "{\"user\":\"\xc3\x28\"}",
		`{"user":"u","reply_to":"a..b"}`, `{"user":"u","reply_to":"a >"}`, `{"user":"u","confirm":"` + strings.Repeat("y", 200) + `"}`} {
		_, err := DecodeCommand([]byte(bad))
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeBadRequest || e.Hint == "" {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestErrorCode(t *testing.T) {
	e := Errorf(CodeConflict, "locked by %s", "bob").WithHint("wait")
	wrapped := fmt.Errorf("deploy: %w", e)
	if ErrorCode(wrapped) != CodeConflict || ErrorCode(errors.New("x")) != CodeInternal || ErrorCode(nil) != "" {
		t.Fatal("ErrorCode mapping")
	}
	if AsError(wrapped) != e || AsError(errors.New("boom")).Code != CodeInternal {
		t.Fatal("AsError mapping")
	}
	if len(Codes()) != 16 {
		t.Fatalf("%d codes; the documented set has 16", len(Codes()))
	}
}

func TestArgTypeErrorsSayWhatToSend(t *testing.T) {
	var a struct {
		Tail     int      `json:"tail"`
		Follow   *float64 `json:"follow_s"`
		Services []string `json:"services"`
		Refresh  bool     `json:"refresh"`
	}
	for args, want := range map[string]string{
		`{"tail":"abc"}`:     `tail must be an integer, got "abc"`,
		`{"tail":1.5}`:       `tail must be an integer, got 1.5`,
		`{"follow_s":"10"}`:  `follow_s must be a number, got "10"`,
		`{"services":"web"}`: `services must be a list, got "web"`,
		`{"refresh":"yes"}`:  `refresh must be true or false, got "yes"`,
		`{"services":[1]}`:   `must be a string`,
	} {
		err := DecodeArgs(json.RawMessage(args), &a)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "Go struct") {
			t.Errorf("%s: %v; want %q", args, err, want)
		}
	}
}
