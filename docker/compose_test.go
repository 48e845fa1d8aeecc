package docker

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

func TestValidateComposeFile(t *testing.T) {
	for _, ok := range []string{"compose.yml", "docker-compose.yaml", "deploy/compose.prod.yml", "a..b.yml", ".hidden.yml"} {
		if err := ValidateComposeFile(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "/etc/compose.yml", "../compose.yml", "a/../../b.yml", "./compose.yml",
		"a//b.yml", "a/", "-f", "--project-directory=/", "..", "a/..", "x\x00.yml"} {
		err := ValidateComposeFile(bad)
		if events.ErrorCode(err) != events.CodeBadRequest {
			t.Errorf("%q: %v, want bad_request", bad, err)
		}
	}
}

func TestValidateProjectName(t *testing.T) {
	for _, ok := range []string{"a", "myapp", "my-app_2", "0x"} {
		if err := ValidateProjectName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "_a", "MyApp", "a b", "a.b", "a/b", "a;rm -rf /"} {
		if events.ErrorCode(ValidateProjectName(bad)) != events.CodeBadRequest {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestComposeCommand checks the argument vector, directory and
// environment of a Compose run, and what is refused before it runs.
func TestComposeCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("COMPOSE_FILE", "other.yml")
	t.Setenv("COMPOSE_PROJECT_NAME", "other")
	t.Setenv("BERTH_OP", "inherited")
	script := `printf 'arg %s\n' "$@"; echo "pwd $(pwd)"; env | grep -E '^(COMPOSE_|BERTH_OP)' | sort`
	run := func(t *testing.T, e *Engine, spec berth.ComposeSpec, args ...string) []string {
		t.Helper()
		var lines []string
		if err := e.Compose(t.Context(), spec, "", func(s string) { lines = append(lines, s) }, args...); err != nil {
			t.Fatal(err)
		}
		return lines
	}
	spec := berth.ComposeSpec{Dir: dir, Files: []string{"compose.yml", "deploy/prod.yml"}, Project: "proj", Tag: "req-1:deploy/x.y_z"}

	// Through the docker CLI.
	cli := newTestEngine(t, fakeDocker(t, script), "compose")
	got := run(t, cli, spec, "config", "--services")
	want := []string{"arg compose", "arg -p", "arg proj", "arg -f", "arg compose.yml", "arg -f", "arg deploy/prod.yml",
		"arg --ansi", "arg never", "arg --progress", "arg plain", "arg config", "arg --services",
		"pwd " + dir, "BERTH_OP=req-1:deploy/x.y_z", "COMPOSE_ANSI=never"}
	if !slices.Equal(got, want) {
		t.Errorf("run %q,\nwant %q", got, want)
	}

	// The plugin binary itself, without a tag: no BERTH_OP at all.
	plugin := newTestEngine(t, fakeDocker(t, script))
	if b := plugin.ComposeBinary(); len(b) != 1 || filepath.Base(b[0]) != "docker" {
		t.Errorf("compose binary %q", b)
	}
	got = run(t, plugin, berth.ComposeSpec{Dir: dir, Project: "p"}, "ps")
	want = []string{"arg -p", "arg p", "arg --ansi", "arg never", "arg --progress", "arg plain", "arg ps", "pwd " + dir, "COMPOSE_ANSI=never"}
	if !slices.Equal(got, want) {
		t.Errorf("run %q,\nwant %q", got, want)
	}

	for name, s := range map[string]berth.ComposeSpec{
		"bad file":     {Dir: dir, Project: "p", Files: []string{"../x.yml"}},
		"flag file":    {Dir: dir, Project: "p", Files: []string{"-h"}},
		"no project":   {Dir: dir},
		"bad project":  {Dir: dir, Project: "-p"},
		"relative dir": {Dir: "prod", Project: "p"},
		"missing dir":  {Dir: filepath.Join(dir, "nope"), Project: "p"},
		"file as dir":  {Dir: filepath.Join(dir, "compose.yml"), Project: "p"},
		"bad tag":      {Dir: dir, Project: "p", Tag: "a b"},
		"long tag":     {Dir: dir, Project: "p", Tag: strings.Repeat("t", 129)},
		"NUL tag":      {Dir: dir, Project: "p", Tag: "a\x00b"},
	} {
		if err := cli.Compose(t.Context(), s, "", func(l string) { t.Errorf("%s ran: %s", name, l) }, "ps"); events.ErrorCode(err) != events.CodeBadRequest {
			t.Errorf("%s: %v, want bad_request", name, err)
		}
	}
	err := cli.Compose(t.Context(), spec, "", func(l string) { t.Errorf("ran: %s", l) }, "build", "x\x00y")
	assertCode(t, err, events.CodeBadRequest, "")
	_, err = cli.ComposeModel(t.Context(), berth.ComposeSpec{Dir: dir})
	assertCode(t, err, events.CodeBadRequest, "")
}

// newTestEngine returns an Engine running Compose as argv (as New finds
// it without argv), closed when the test ends.
func newTestEngine(t *testing.T, argv ...string) *Engine {
	t.Helper()
	var opts []Option
	if len(argv) > 0 {
		opts = append(opts, WithComposeBinary(argv...))
	}
	e, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// fakeDocker writes a shell script standing for the docker CLI.
func fakeDocker(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "docker")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestComposeModelFake reads models from a fake docker CLI.
func TestComposeModelFake(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	spec := berth.ComposeSpec{Dir: dir, Files: []string{"compose.yml"}, Project: "proj"}
	model := func(bin ...string) (*berth.ComposeModel, error) {
		return newTestEngine(t, bin...).ComposeModel(ctx, spec)
	}

	// Stdout is the JSON, stderr (warnings) is not.
	m, err := model(fakeDocker(t, `echo "level=warning msg=\"the attribute version is obsolete\"" >&2
echo '{"name":"proj","services":{"web":{"build":{"context":"."}},"db":{"image":"redis"}}}'`), "compose")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.ServiceNames(), []string{"db", "web"}) || m.Services["web"].Image != "proj-web" || m.Services["db"].Image != "redis" {
		t.Errorf("model %+v", m)
	}

	// No compose binary.
	_, err = model(filepath.Join(dir, "no-such-docker"), "compose")
	assertCode(t, err, events.CodeDockerUnavailable, "Compose v2 plugin")

	// The docker CLI without the compose plugin.
	_, err = model(fakeDocker(t, `echo "docker: 'compose' is not a docker command." >&2; exit 1`), "compose")
	assertCode(t, err, events.CodeDockerUnavailable, "Compose v2 plugin")
	_, err = model(fakeDocker(t, `echo "docker: unknown command: docker compose" >&2; exit 1`), "compose")
	assertCode(t, err, events.CodeDockerUnavailable, "Compose v2 plugin")

	// A broken compose file: Compose's message, trimmed to its end.
	long := strings.Repeat("noise line\n", 400)
	_, err = model(fakeDocker(t, `echo '{}'; printf '`+long+`' >&2; echo "yaml: line 3: did not find expected node content" >&2; exit 15`), "compose")
	assertCode(t, err, events.CodeBadRequest, "")
	ee := events.AsError(err)
	if !strings.HasSuffix(ee.Message, "yaml: line 3: did not find expected node content") || len(ee.Message) > MaxErrorOutput+200 ||
		strings.Contains(ee.Message, "{}") || ee.Data["exit_code"] != 15 {
		t.Errorf("message (%d bytes) ends %q, data %v", len(ee.Message), ee.Message[max(0, len(ee.Message)-80):], ee.Data)
	}
	if !strings.Contains(ee.Hint, "-f compose.yml config") {
		t.Errorf("hint %q", ee.Hint)
	}

	// No service; no output at all.
	_, err = model(fakeDocker(t, `echo '{"name":"proj","services":{}}'`), "compose")
	assertCode(t, err, events.CodeBadRequest, "add a service")
	_, err = model(fakeDocker(t, `true`), "compose")
	assertCode(t, err, events.CodeInternal, "Compose v2")

	// A hung compose and an expired context.
	tctx, cancel := context.WithTimeout(ctx, 300e6)
	defer cancel()
	_, err = newTestEngine(t, fakeDocker(t, `sleep 30`), "compose").ComposeModel(tctx, spec)
	assertCode(t, err, events.CodeTimeout, "")
}

func assertCode(t *testing.T, err error, code events.Code, hint string) {
	t.Helper()
	if events.ErrorCode(err) != code {
		t.Fatalf("error %v, want code %s", err, code)
	}
	if hint != "" && !strings.Contains(events.AsError(err).Hint, hint) {
		t.Errorf("hint %q does not mention %q", events.AsError(err).Hint, hint)
	}
}
