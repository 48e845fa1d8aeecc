package main

import (
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
)

func TestParseArgValue(t *testing.T) {
	cases := map[string]string{
		"100":         `100`,
		"-1.5":        `-1.5`,
		"true":        `true`,
		"false":       `false`,
		"null":        `null`,
		"error":       `"error"`,
		"":            `""`,
		`"quoted"`:    `"quoted"`,
		"[1,2]":       `[1,2]`,
		`{"a":1}`:     `{"a":1}`,
		"web db":      `"web db"`,
		"10m":         `"10m"`,
		"{not json}":  `"{not json}"`,
		"a=b":         `"a=b"`,
		`say "hi"`:    `"say \"hi\""`,
		"2024-01-02":  `"2024-01-02"`,
		" 42 ":        `42`,
		"TRUE":        `"TRUE"`,
		"1e3":         `1e3`,
		"0x10":        `"0x10"`,
		"[unclosed":   `"[unclosed"`,
		"\"unclosed":  `"\"unclosed"`,
		"true false":  `"true false"`,
		"100 200":     `"100 200"`,
		"{}":          `{}`,
		"[]":          `[]`,
		"-":           `"-"`,
		"+1":          `"+1"`,
		"01":          `"01"`,
		".5":          `".5"`,
		"nulls":       `"nulls"`,
		"error: boom": `"error: boom"`,
	}
	for in, want := range cases {
		if got := string(parseArgValue(in)); got != want {
			t.Errorf("parseArgValue(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestBuildArgs(t *testing.T) {
	cases := []struct {
		name     string
		argsJSON string
		pairs    []string
		want     string
		wantErr  string
	}{
		{name: "none", want: ""},
		{name: "pairs", pairs: []string{"tail=100", "grep=error", "refresh=true"},
			want: `{"grep":"error","refresh":true,"tail":100}`},
		{name: "value with =", pairs: []string{"env=A=B"}, want: `{"env":"A=B"}`},
		{name: "empty value", pairs: []string{"since="}, want: `{"since":""}`},
		{name: "json only", argsJSON: ` {"tail": 5, "service": "web"} `, want: `{"service":"web","tail":5}`},
		{name: "pair overrides json", argsJSON: `{"tail":5,"service":"web"}`, pairs: []string{"tail=7"},
			want: `{"service":"web","tail":7}`},
		{name: "empty object", argsJSON: `{}`, want: `{}`},
		{name: "nested", pairs: []string{`services=["web","db"]`, `opts={"a": [1, 2]}`},
			want: `{"opts":{"a":[1,2]},"services":["web","db"]}`},
		{name: "no equals", pairs: []string{"tail"}, wantErr: "must be key=value"},
		{name: "empty key", pairs: []string{"=5"}, wantErr: "must be key=value"},
		{name: "args not object", argsJSON: `[1]`, wantErr: "must be a JSON object"},
		{name: "args null", argsJSON: `null`, wantErr: "must be a JSON object"},
		{name: "args invalid", argsJSON: `{"a":`, wantErr: "must be a JSON object"},
		{name: "args trailing", argsJSON: `{"a":1} {"b":2}`, wantErr: "after the JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := buildArgs(c.argsJSON, c.pairs)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
		})
	}
}

func TestReorderArgs(t *testing.T) {
	cases := []struct {
		in   []string
		want []string
	}{
		{[]string{"status", "po", "--json"}, []string{"--json", "--", "status", "po"}},
		{[]string{"--json", "status", "po"}, []string{"--json", "--", "status", "po"}},
		{[]string{"logs", "po", "--arg", "tail=100", "--arg=grep=error", "-s", "nats://x:4222"},
			[]string{"--arg", "tail=100", "--arg=grep=error", "-s", "nats://x:4222", "--", "logs", "po"}},
		{[]string{"deploy", "--confirm", "yes", "po", "--quiet"},
			[]string{"--confirm", "yes", "--quiet", "--", "deploy", "po"}},
		// A bool flag does not take the next argument.
		{[]string{"--quiet", "status", "po"}, []string{"--quiet", "--", "status", "po"}},
		// After "--" everything is positional.
		{[]string{"status", "--", "--json", "po"}, []string{"--", "status", "--json", "po"}},
		// A lone "-" is positional.
		{[]string{"status", "-"}, []string{"--", "status", "-"}},
		// An unknown flag stays a flag, for Parse to reject.
		{[]string{"status", "po", "--bogus"}, []string{"--bogus", "--", "status", "po"}},
		// A value flag at the very end keeps no value, for Parse to reject.
		{[]string{"status", "po", "--timeout"}, []string{"--timeout", "--", "status", "po"}},
	}
	for _, c := range cases {
		o := &options{}
		var pairs stringList
		var argsJSON string
		var sec secretFlags
		fs := newFlagSet(o, &sec, &pairs, &argsJSON, func(string) string { return "" })
		if got := reorderArgs(fs, c.in); !slices.Equal(got, c.want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// env is a getenv of m. BERTH_USER, unless m has it (even empty), is
// test:env: a command needs a user.
func env(m map[string]string) func(string) string {
	return func(k string) string {
		if v, ok := m[k]; ok || k != "BERTH_USER" {
			return v
		}
		return "test:env"
	}
}

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"logs", "po", "--json", "--arg", "tail=100", "--arg", "grep=error",
		"-s", "nats://h:1", "--arg", "follow_s=20"}, env(map[string]string{"USER": "ann"}))
	if err != nil {
		t.Fatal(err)
	}
	if o.action != "logs" || o.project != "po" || !o.jsonOut || o.server != "nats://h:1" {
		t.Fatalf("parsed %+v", o)
	}
	if string(o.args) != `{"follow_s":20,"grep":"error","tail":100}` {
		t.Fatalf("args = %s", o.args)
	}
	if o.user != "test:env" || o.prefix != "berth" {
		t.Fatalf("user %q prefix %q", o.user, o.prefix)
	}
	if o.timeout != 50*time.Second {
		t.Fatalf("timeout = %v, want follow_s + 30s = 50s", o.timeout)
	}
	if len(o.id) != 32 || !events.ValidRequestID(o.id) {
		t.Fatalf("generated id %q", o.id)
	}

	o, err = parseArgs([]string{"status", "po"}, env(map[string]string{
		"BERTH_NATS_URL": "nats://env:4222", "BERTH_PREFIX": "b2", "BERTH_USER": "telegram:1"}))
	if err != nil {
		t.Fatal(err)
	}
	if o.server != "nats://env:4222" || o.prefix != "b2" || o.user != "telegram:1" || o.timeout != time.Minute || o.args != nil {
		t.Fatalf("env defaults: %+v", o)
	}
	if o.server != "nats://env:4222" {
		t.Fatal(o.server)
	}

	o, err = parseArgs([]string{"deploy", "po", "--confirm", "yes", "--id", "req-1"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o.timeout != 15*time.Minute || o.confirm != "yes" || o.id != "req-1" || o.user != "test:env" {
		t.Fatalf("deploy: %+v", o)
	}

	o, err = parseArgs([]string{"deploy", "po", "--timeout", "5s"}, env(nil))
	if err != nil || o.timeout != 5*time.Second {
		t.Fatalf("explicit timeout: %v %+v", err, o)
	}

	o, err = parseArgs([]string{"--follow", "abc123"}, env(nil))
	if err != nil || o.id != "abc123" || o.project != "" {
		t.Fatalf("follow: %v %+v", err, o)
	}

	if _, err := parseArgs([]string{"-h"}, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

func TestParseArgsErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "missing <action>"},
		{[]string{"status"}, "missing <project>"},
		{[]string{"stat", "po"}, `unknown action "stat" (did you mean start?); the actions are: config.set, config.get`},
		{[]string{"stauts", "po"}, `unknown action "stauts" (did you mean status?)`},
		{[]string{"reboot", "po"}, `unknown action "reboot"; the actions are`},
		{[]string{"demo"}, `unknown action "demo"`},
		{[]string{"po", "status"}, `"po" is not an action, but "status" is: the action comes first, then the project: publisher status po`},
		{[]string{"--follow", "abc", "po", "logs"}, `publisher logs po`},
		{[]string{"deploy", "po", "--yes", "--confirm", "tok"}, "use --yes or --confirm, not both"},
		{[]string{"--follow", "abc", "-y"}, "does not go with --follow"},
		{[]string{"status", "Po"}, `invalid project "Po"`},
		{[]string{"status", "po", "extra"}, "too many arguments"},
		{[]string{"status", "po", "--bogus"}, "flag provided but not defined"},
		{[]string{"status", "po", "--id", "bad id"}, "not a valid request id"},
		{[]string{"status", "po", "--user", ""}, "who is asking? give your user as <platform>:<id>: --user cli:alice, or BERTH_USER=cli:alice"},
		{[]string{"status", "po", "--arg", "x"}, "must be key=value"},
		{[]string{"status", "po", "--tls-cert", "c.pem"}, "go together"},
		{[]string{"status", "po", "--timeout", "0s"}, "must be positive"},
		{[]string{"status", "po", "--prefix", "a.*"}, "not a valid subject prefix"},
		{[]string{"--follow", "x y"}, "not a request id"},
		{[]string{"--follow", "abc", "status"}, "with --follow"},
	}
	for _, c := range cases {
		_, err := parseArgs(c.args, env(nil))
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseArgs(%q) = %v, want a usage error containing %q", c.args, err, c.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	cases := map[time.Duration]string{
		60 * time.Second:        "60s",
		90 * time.Second:        "90s",
		15 * time.Minute:        "15m",
		50 * time.Second:        "50s",
		300 * time.Millisecond:  "300ms",
		90 * time.Minute:        "1h30m",
		2 * time.Hour:           "2h",
		150*time.Second + 400e6: "2m30s",
	}
	for d, want := range cases {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// A command says who asks: --user, BERTH_USER, or the publisher's key
// berth_user in the NATS context; never a guess.
func TestParseArgsUser(t *testing.T) {
	cfg := t.TempDir()
	writeContext(t, cfg, "bob", map[string]any{"url": "nats://x:4222", "user": "nats-login", "password": "pw", "berth_user": "cli:bob"})
	writeContext(t, cfg, "plain", map[string]any{"url": "nats://x:4222", "user": "nats-login"})
	noUser := map[string]string{"BERTH_USER": "", "USER": "ann", "XDG_CONFIG_HOME": cfg}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range noUser {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want string // the user; "" for a usage error
		warn bool
	}{
		{"none: refused, $USER is no Berth user", []string{"status", "po"}, noUser, "", false},
		{"none with a context without berth_user", []string{"status", "po", "--context", "plain"}, noUser, "", false},
		{"flag", []string{"status", "po", "--user", "cli:ann"}, noUser, "cli:ann", false},
		{"env", []string{"status", "po"}, with(map[string]string{"BERTH_USER": "telegram:42"}), "telegram:42", false},
		{"context", []string{"status", "po", "--context", "bob"}, noUser, "cli:bob", false},
		{"env wins over the context", []string{"status", "po", "--context", "bob"}, with(map[string]string{"BERTH_USER": "cli:eve"}), "cli:eve", false},
		{"flag wins over the context", []string{"status", "po", "--context", "bob", "--user", "cli:ann"}, noUser, "cli:ann", false},
		{"explicitly empty", []string{"status", "po", "--context", "bob", "--user", ""}, noUser, "", false},
		{"follow needs one too", []string{"--follow", "abc"}, noUser, "", false},
		{"no platform: a warning", []string{"status", "po", "--user", "bob"}, noUser, "bob", true},
	} {
		o, err := parseArgs(c.args, env(c.env))
		if c.want == "" {
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--user cli:alice") || !strings.Contains(err.Error(), "BERTH_USER") {
				t.Errorf("%s: %v, want a usage error saying how to give the user", c.name, err)
			}
			continue
		}
		if err != nil || o.user != c.want {
			t.Errorf("%s: user %v, %v; want %q", c.name, o, err, c.want)
			continue
		}
		warned := len(o.warnings) == 1 && strings.Contains(o.warnings[0], "users are <platform>:<id>, e.g. cli:bob")
		if warned != c.warn {
			t.Errorf("%s: warnings %q", c.name, o.warnings)
		}
	}
	// The context's "user" is the NATS login, never the Berth user.
	o, err := parseArgs([]string{"status", "po", "--context", "bob"}, env(noUser))
	if err != nil || o.natsUser != "nats-login" || o.user != "cli:bob" {
		t.Fatalf("%+v, %v", o, err)
	}
}

func TestEditDistanceAndClosest(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"status", "status", 0}, {"stauts", "status", 1}, {"stat", "start", 1}, {"deplyo", "deploy", 1}, {"", "abc", 3}, {"démo", "demo", 1}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
	acts := events.Actions()
	for in, want := range map[string]string{"stats": "status", "relases": "releases", "histroy": "history", "reboot": "", "confg.get": "config.get", "status": ""} {
		if got := closest(in, acts, 2); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}
