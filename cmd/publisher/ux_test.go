package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/berth-ops/berth/events"
)

// deployEvents is what a worker sends for a confirmed deploy.
func deployEvents(cmd *events.Command) []events.Event {
	return []events.Event{
		{Kind: events.KindAccepted},
		{Kind: events.KindProgress, Step: "plan", Message: "re-checking the confirmed plan"},
		{Kind: events.KindProgress, Step: "sync", Message: "copying files", Done: ptrInt(2), Total: ptrInt(2)},
		{Kind: events.KindProgress, Step: "build", Message: "docker compose build"},
		{Kind: events.KindProgress, Step: "build", Message: "#5 [web 2/3] COPY app /app"},
		{Kind: events.KindProgress, Step: "verify", Message: "web is up (healthy)", Done: ptrInt(1), Total: ptrInt(1)},
		{Kind: events.KindResult, OK: ptr(true), DurationMS: ptr(int64(4200)), Data: json.RawMessage(`{"release":"r1","changed":true}`)},
	}
}

// Not on a terminal: plain lines, one per progress event, no escapes.
func TestRunPlainProgressWhenNotATerminal(t *testing.T) {
	s, _, js := setupStreams(t)
	wait := fakeWorker(t, js, deployEvents)
	code, out, errw := runPublisher(t, s, "deploy", "po", "--confirm", "yes", "--id", "plain-1")
	wait()
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	want := "accepted plain-1\n" +
		"[plan] re-checking the confirmed plan\n" +
		"[sync] copying files (2/2)\n" +
		"[build] docker compose build\n" +
		"[build] #5 [web 2/3] COPY app /app\n" +
		"[verify] web is up (healthy) (1/1)\n" +
		"ok in 4.2s\n"
	if errw != want {
		t.Fatalf("stderr:\n%s\nwant:\n%s", errw, want)
	}
	if strings.ContainsAny(out+errw, "\x1b\r") {
		t.Fatalf("escape sequences or carriage returns off a terminal:\n%q\n%q", out, errw)
	}
}

// A confirm event prints the plan; the confirmation_required result that
// follows carries the same plan and token, and does not print it again.
func TestConfirmPlanPrintedOnce(t *testing.T) {
	plan := json.RawMessage(`{"files":{"added":1,"added_paths":["unique-path.txt"]},"steps":["backup","sync"]}`)
	data, _ := json.Marshal(map[string]any{"plan": plan, "token": "tok-1", "expires_at": "2026-01-01T00:05:00Z", "confirm_by": "the same user"})
	result := &events.Event{Kind: events.KindResult, OK: ptr(false), Data: data,
		Error: &events.Error{Code: events.CodeConfirmationRequired, Message: "deploy needs confirmation", Hint: "send confirm"}}
	confirm := &events.Event{Kind: events.KindConfirm, Token: "tok-1", ExpiresAt: "2026-01-01T00:05:00Z", Plan: plan}

	var out, errw bytes.Buffer
	r := newTestRenderer(&out, &errw)
	r.action = "deploy"
	r.event(confirm, nil)
	r.event(result, nil)
	if n := strings.Count(out.String(), "unique-path.txt"); n != 1 {
		t.Fatalf("the plan is printed %d times:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "publisher deploy po --confirm tok-1") ||
		!strings.Contains(errw.String(), "confirmation required: deploy needs confirmation") || strings.Contains(errw.String(), "error") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out.String(), errw.String())
	}

	// Quiet: the result is the plan, printed once.
	out.Reset()
	errw.Reset()
	r = newTestRenderer(&out, &errw)
	r.action, r.quiet = "deploy", true
	r.event(confirm, nil)
	r.event(result, nil)
	if n := strings.Count(out.String()+errw.String(), "unique-path.txt"); n != 1 {
		t.Fatalf("quiet: the plan is printed %d times:\n%s\n%s", n, out.String(), errw.String())
	}

	// A result with another token (a plan that changed) is the plan
	// that counts: its plan and token are printed, once.
	out.Reset()
	r = newTestRenderer(&out, &errw)
	r.action = "deploy"
	r.event(confirm, nil)
	other := *result
	other.Data, _ = json.Marshal(map[string]any{"plan": plan, "token": "tok-2"})
	r.event(&other, nil)
	if n := strings.Count(out.String(), "unique-path.txt"); n != 1 || !strings.Contains(out.String(), "--confirm tok-2") || strings.Contains(out.String(), "tok-1") {
		t.Fatalf("a new plan:\n%s", out.String())
	}

	// A confirm event whose result does not come is shown as the end.
	out.Reset()
	r = newTestRenderer(&out, &errw)
	r.action = "deploy"
	r.event(confirm, nil)
	if !r.pendingConfirmation() || !strings.Contains(out.String(), "--confirm tok-1") || r.confirmation.token != "tok-1" {
		t.Fatalf("pending:\n%s", out.String())
	}
}

// writeContext saves a nats CLI context under dir/nats/context.
func writeContext(t *testing.T, dir, name string, v map[string]any) string {
	t.Helper()
	p := filepath.Join(dir, "nats", "context", name+".json")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseArgsNATSContext(t *testing.T) {
	cfg := t.TempDir()
	home := t.TempDir()
	// As `nats context add prod --server … --user … --password …` saves it.
	writeContext(t, cfg, "prod", map[string]any{
		"description": "production", "url": "tls://nats.prod:4222", "socks_proxy": "", "token": "",
		"user": "telegram-bot", "password": "ctx-pw", "creds": "", "nkey": "", "cert": "~/tls/bot.crt",
		"key": "$TLSDIR/bot.key", "ca": "~/tls/ca.crt", "nsc": "", "jetstream_domain": "", "jetstream_api_prefix": "",
		"jetstream_event_prefix": "", "inbox_prefix": "_INBOX_telegram", "user_jwt": "", "color_scheme": "", "tls_first": false,
	})
	writeContext(t, cfg, "creds", map[string]any{"url": "nats://a:4222,nats://b:4222", "creds": "~/bot.creds"})
	writeContext(t, cfg, "domain", map[string]any{"url": "nats://a:4222", "jetstream_domain": "hub"})
	base := map[string]string{"XDG_CONFIG_HOME": cfg, "HOME": home, "TLSDIR": "/etc/tls"}
	envWith := func(extra map[string]string) func(string) string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return env(m)
	}

	o, err := parseArgs([]string{"status", "po", "--context", "prod"}, envWith(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o.server != "tls://nats.prod:4222" || o.natsUser != "telegram-bot" || o.natsPassword != "ctx-pw" ||
		o.inboxPrefix != "_INBOX_telegram" || o.tlsCA != filepath.Join(home, "tls/ca.crt") ||
		o.tlsCert != filepath.Join(home, "tls/bot.crt") || o.tlsKey != "/etc/tls/bot.key" {
		t.Fatalf("from the context: %+v", o)
	}

	// The environment variable names the context too.
	o, err = parseArgs([]string{"status", "po"}, envWith(map[string]string{"BERTH_NATS_CONTEXT": "creds"}))
	if err != nil || o.server != "nats://a:4222,nats://b:4222" || o.creds != filepath.Join(home, "bot.creds") || o.natsUser != "" {
		t.Fatalf("BERTH_NATS_CONTEXT: %+v, %v", o, err)
	}

	// Flags and BERTH_NATS_* variables win over the context.
	o, err = parseArgs([]string{"status", "po", "--context", "prod", "-s", "nats://flag:4222", "--nats-inbox-prefix", "_INBOX_x"},
		envWith(map[string]string{"BERTH_NATS_TLS_CA": "/env/ca.crt"}))
	if err != nil || o.server != "nats://flag:4222" || o.inboxPrefix != "_INBOX_x" || o.tlsCA != "/env/ca.crt" || o.natsUser != "telegram-bot" {
		t.Fatalf("overrides: %+v, %v", o, err)
	}
	// Authentication is taken whole: a creds file on the command line
	// replaces the context's user and password (no "creds and user").
	o, err = parseArgs([]string{"status", "po", "--context", "prod", "--creds", "/other.creds"}, envWith(nil))
	if err != nil || o.creds != "/other.creds" || o.natsUser != "" || o.natsPassword != "" {
		t.Fatalf("auth override: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"status", "po", "--context", "prod"}, envWith(map[string]string{"BERTH_NATS_USER": "ops", "BERTH_NATS_PASSWORD": "ops-pw"}))
	if err != nil || o.natsUser != "ops" || o.natsPassword != "ops-pw" {
		t.Fatalf("auth from the environment: %+v, %v", o, err)
	}

	// A path to a context file.
	p := writeContext(t, t.TempDir(), "file", map[string]any{"url": "nats://file:4222", "token": "s3cret"})
	o, err = parseArgs([]string{"status", "po", "--context", p}, envWith(nil))
	if err != nil || o.server != "nats://file:4222" || o.token != "s3cret" {
		t.Fatalf("context file: %+v, %v", o, err)
	}

	for name, c := range map[string]struct{ ctx, want string }{
		"unknown":     {"nope", `unknown NATS context "nope"`},
		"lists known": {"nope", "known: creds, domain, prod"},
		"unsupported": {"domain", "jetstream_domain"},
		"traversal":   {"..", "invalid context name"},
	} {
		var ue *usageError
		_, err := parseArgs([]string{"status", "po", "--context", c.ctx}, envWith(nil))
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want a usage error with %q", name, err, c.want)
		}
	}
}

// The publisher connects with nothing but a context: URL, user,
// password and inbox prefix, to a server that requires them.
func TestRunWithNATSContext(t *testing.T) {
	s, _, js := setupStreams(t, []*server.User{
		{Username: "worker", Password: "worker-pw"},
		{Username: "bot", Password: "bot-pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"berth.cmd.alpha.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"berth.evt.alpha.>", "_INBOX_bot.>"}},
		}},
	}...)
	cfg := t.TempDir()
	writeContext(t, cfg, "bot", map[string]any{"url": s.ClientURL(), "user": "bot", "password": "bot-pw", "inbox_prefix": "_INBOX_bot"})
	t.Setenv("XDG_CONFIG_HOME", cfg)
	for _, k := range []string{"BERTH_NATS_URL", "BERTH_NATS_USER", "BERTH_NATS_PASSWORD", "BERTH_NATS_CREDS", "BERTH_NATS_NKEY", "BERTH_NATS_INBOX_PREFIX", "BERTH_NATS_CONTEXT"} {
		t.Setenv(k, "")
	}

	wait := fakeWorker(t, js, statusEvents)
	var out, errw bytes.Buffer
	code := run(t.Context(), []string{"status", "alpha", "--context", "bot", "--user", "test:1", "--id", "ctx-1"}, &out, &errw)
	wait()
	if code != exitOK || !strings.Contains(out.String(), "web") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errw.String())
	}
}

func TestCompletionUsage(t *testing.T) {
	var out, errw bytes.Buffer
	if code := run(t.Context(), []string{"completion", "tcsh"}, &out, &errw); code != exitUsage || out.Len() != 0 ||
		!strings.Contains(errw.String(), "completion bash|zsh|fish") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errw.String())
	}
	for _, sh := range completionShells {
		out.Reset()
		if code := run(t.Context(), []string{"completion", sh}, &out, &errw); code != exitOK || !strings.Contains(out.String(), "publisher") {
			t.Fatalf("%s: exit %d, %q", sh, code, out.String())
		}
	}
}

// The completion's argument keys are the properties of the args schemas.
func TestCompletionArgKeysMatchSchemas(t *testing.T) {
	for _, a := range events.Actions() {
		b, err := os.ReadFile(filepath.Join("..", "..", "docs", "schemas", "args", a+".json"))
		if err != nil {
			t.Fatalf("no args schema for %s: %v", a, err)
		}
		var sch struct {
			Properties map[string]any `json:"properties"`
		}
		if err := json.Unmarshal(b, &sch); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range sch.Properties {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		mine := slices.Sorted(slices.Values(actionArgKeys[a]))
		if !slices.Equal(keys, mine) {
			t.Errorf("%s: completion offers %v, the schema has %v", a, mine, keys)
		}
	}
	if len(actionArgKeys) != len(events.Actions()) {
		t.Errorf("actionArgKeys has %d actions, there are %d", len(actionArgKeys), len(events.Actions()))
	}
}

// completeBash runs the bash completion function on line (the cursor at
// its end) and returns the candidates.
func completeBash(t *testing.T, line string) []string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script := bashCompletion() + `
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
COMP_WORDBREAKS=$' \t\n"\'><=;|&(:'
_publisher
printf '%s\n' "${COMPREPLY[@]}"
`
	cfg := t.TempDir()
	writeContext(t, cfg, "prod", map[string]any{"url": "nats://x:4222"})
	writeContext(t, cfg, "staging", map[string]any{"url": "nats://y:4222"})
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", script, "bash", line)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + cfg}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash completion of %q: %v\n%s", line, err, out)
	}
	return strings.Fields(string(out))
}

func TestBashCompletion(t *testing.T) {
	cases := map[string][]string{
		"publisher ":                                 append(events.Actions(), "completion"),
		"publisher lo":                               {"logs"},
		"publisher logs po --arg ":                   {"service=", "tail=", "since=", "until=", "timestamps=", "grep=", "follow_s="},
		"publisher logs po --arg t":                  {"tail=", "timestamps="},
		"publisher logs po --arg=t":                  {"tail=", "timestamps="},
		"publisher -s nats://h:4222 logs po --arg f": {"follow_s="},
		"publisher --json status --arg ":             {"refresh="},
		"publisher rollback po --arg ":               {"to="},
		"publisher config.get po --arg ":             nil,
		"publisher status po --con":                  {"--confirm", "--context"},
		"publisher status po --confirm ":             {"yes"},
		"publisher status po --context ":             {"prod", "staging"},
		"publisher status po --context st":           {"staging"},
		"publisher completion ":                      {"bash", "zsh", "fish"},
		"publisher status po --timeout ":             nil,
	}
	for line, want := range cases {
		if got := completeBash(t, line); !slices.Equal(got, want) {
			t.Errorf("complete %q = %q, want %q", line, got, want)
		}
	}
	// Every flag is offered.
	got := completeBash(t, "publisher status po --")
	for _, f := range []string{"--arg", "--json", "--follow", "--context", "--nats-creds", "--sign-secret-file", "--no-color"} {
		if !slices.Contains(got, f) {
			t.Errorf("flags %q lack %s", got, f)
		}
	}
}

func TestZshCompletionSyntax(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("zsh not installed: only its syntax would be checked")
	}
	out, err := exec.Command(zsh, "-n", "-c", zshCompletion()).CombinedOutput()
	if err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
}

func TestFishCompletion(t *testing.T) {
	fish, err := exec.LookPath("fish")
	if err != nil {
		t.Skip("fish not installed")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "publisher.fish")
	if err := os.WriteFile(script, []byte(fishCompletion()), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(line string) []string {
		t.Helper()
		cmd := exec.Command(fish, "--no-config", "-c", "source $argv[1]; complete -C $argv[2]", script, line)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish: %v\n%s", err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" {
				got = append(got, strings.SplitN(l, "\t", 2)[0])
			}
		}
		sort.Strings(got)
		return got
	}
	if got := complete("publisher logs po --arg "); !slices.Equal(got, []string{"follow_s=", "grep=", "service=", "since=", "tail=", "timestamps=", "until="}) {
		t.Errorf("--arg keys of logs: %q", got)
	}
	if got := complete("publisher "); !slices.Contains(got, "deploy") || !slices.Contains(got, "completion") {
		t.Errorf("actions: %q", got)
	}
	if got := complete("publisher completion "); !slices.Equal(got, []string{"bash", "fish", "zsh"}) {
		t.Errorf("shells: %q", got)
	}
	if got := complete("publisher status po --conf"); !slices.Equal(got, []string{"--confirm"}) {
		t.Errorf("flags: %q", got)
	}
}
