package docker

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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

func TestComposeCommandArgv(t *testing.T) {
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	dir := t.TempDir()
	t.Setenv("COMPOSE_FILE", "other.yml")
	t.Setenv("COMPOSE_PROJECT_NAME", "other")
	cmd, err := e.ComposeCommand(t.Context(), dir, []string{"compose.yml", "deploy/prod.yml"}, "proj", "config", "--services")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"docker", "compose", "-p", "proj", "-f", "compose.yml", "-f", "deploy/prod.yml", "config", "--services"}
	if !slices.Equal(cmd.Args, want) {
		t.Errorf("argv %q, want %q", cmd.Args, want)
	}
	if cmd.Dir != dir {
		t.Errorf("dir %q, want %q", cmd.Dir, dir)
	}
	for _, kv := range cmd.Env {
		if strings.HasPrefix(kv, "COMPOSE_FILE=") || strings.HasPrefix(kv, "COMPOSE_PROJECT_NAME=") {
			t.Errorf("environment keeps %s", kv)
		}
	}

	e2, _ := New(WithComposeBinary("/usr/bin/docker-compose"))
	defer e2.Close()
	cmd, err = e2.ComposeCommand(t.Context(), dir, nil, "", "ps")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/usr/bin/docker-compose", "ps"}; !slices.Equal(cmd.Args, want) {
		t.Errorf("argv %q, want %q", cmd.Args, want)
	}

	for name, call := range map[string]func() error{
		"bad file": func() error {
			_, err := e.ComposeCommand(t.Context(), dir, []string{"../x.yml"}, "p", "ps")
			return err
		},
		"flag file":    func() error { _, err := e.ComposeCommand(t.Context(), dir, []string{"-h"}, "p", "ps"); return err },
		"bad project":  func() error { _, err := e.ComposeCommand(t.Context(), dir, nil, "-p", "ps"); return err },
		"relative dir": func() error { _, err := e.ComposeCommand(t.Context(), "prod", nil, "p", "ps"); return err },
		"missing dir": func() error {
			_, err := e.ComposeCommand(t.Context(), filepath.Join(dir, "nope"), nil, "p", "ps")
			return err
		},
	} {
		if err := call(); events.ErrorCode(err) != events.CodeBadRequest {
			t.Errorf("%s: %v, want bad_request", name, err)
		}
	}
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

func TestComposeServicesFailures(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	services := func(bin ...string) ([]string, error) {
		e, err := New(WithComposeBinary(bin...))
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		return e.ComposeServices(ctx, dir, []string{"compose.yml"}, "proj")
	}

	// The services are sorted and deduplicated, blank lines dropped.
	got, err := services(fakeDocker(t, `printf 'worker\n\nweb\nweb\n'`), "compose")
	if err != nil || !slices.Equal(got, []string{"web", "worker"}) {
		t.Errorf("services %q, %v", got, err)
	}

	// No compose binary.
	_, err = services(filepath.Join(dir, "no-such-docker"), "compose")
	assertCode(t, err, events.CodeDockerUnavailable, "Compose v2 plugin")

	// The docker CLI without the compose plugin.
	_, err = services(fakeDocker(t, `echo "docker: 'compose' is not a docker command." >&2; exit 1`), "compose")
	assertCode(t, err, events.CodeDockerUnavailable, "Compose v2 plugin")
	_, err = services(fakeDocker(t, `echo "docker: unknown command: docker compose" >&2; exit 1`), "compose")
	assertCode(t, err, events.CodeDockerUnavailable, "Compose v2 plugin")

	// A broken compose file: Compose's message, trimmed to its end.
	long := strings.Repeat("noise line\n", 400)
	_, err = services(fakeDocker(t, `printf '`+long+`' >&2; echo "yaml: line 3: did not find expected node content" >&2; exit 15`), "compose")
	assertCode(t, err, events.CodeBadRequest, "")
	ee := events.AsError(err)
	if !strings.HasSuffix(ee.Message, "yaml: line 3: did not find expected node content") || len(ee.Message) > MaxErrorOutput+200 {
		t.Errorf("message (%d bytes) ends %q", len(ee.Message), ee.Message[max(0, len(ee.Message)-80):])
	}
	if !strings.Contains(ee.Hint, "config") {
		t.Errorf("hint %q", ee.Hint)
	}

	// No service.
	_, err = services(fakeDocker(t, `true`), "compose")
	assertCode(t, err, events.CodeBadRequest, "")

	// A hung compose and an expired context.
	tctx, cancel := context.WithTimeout(ctx, 300e6)
	defer cancel()
	e, _ := New(WithComposeBinary(fakeDocker(t, `sleep 30`), "compose"))
	defer e.Close()
	_, err = e.ComposeServices(tctx, dir, nil, "proj")
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
