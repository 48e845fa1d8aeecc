package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berth-ops/berth/events"
)

// MaxErrorOutput is the most of a command's stderr an error message carries
// (its end, where the reason usually is).
const MaxErrorOutput = 2048

// maxCapture is the most of one stream of a compose command that is kept.
const maxCapture = 1 << 20

// ValidateComposeFile checks that a compose file name can be handed to
// Compose: relative to the production directory, clean (filepath.Clean
// leaves it unchanged), without "..", and not starting with "-" (which
// Compose would read as a flag). An invalid name is a CodeBadRequest error.
func ValidateComposeFile(name string) error {
	bad := func(why string) error {
		return events.Errorf(events.CodeBadRequest, "invalid compose file name %q: %s", name, why).
			WithHint(`compose files are clean paths relative to the production directory, such as "compose.yml" or "deploy/compose.prod.yml"`)
	}
	switch {
	case name == "" || name == ".":
		return bad("empty")
	case strings.ContainsRune(name, 0):
		return bad("contains a NUL byte")
	case strings.HasPrefix(name, "-"):
		return bad(`starts with "-"`)
	case filepath.IsAbs(name) || strings.HasPrefix(name, "/"):
		return bad("absolute")
	case filepath.Clean(name) != name:
		return bad("not clean")
	}
	for _, el := range strings.Split(filepath.ToSlash(name), "/") {
		if el == ".." {
			return bad(`contains ".."`)
		}
	}
	return nil
}

// ComposeCommand returns the command `docker compose -p PROJECT -f FILE...
// ARGS...` (with the configured compose binary) to run in dir, the
// production directory. files are relative to dir and are validated; with
// none, Compose finds the default file in dir. An empty composeProject
// omits -p. COMPOSE_FILE and COMPOSE_PROJECT_NAME are removed from the
// worker's environment so that only the arguments choose the project.
//
// Canceling ctx kills the whole process group (the docker CLI runs the
// compose plugin as a child process).
func (e *Engine) ComposeCommand(ctx context.Context, dir string, files []string, composeProject string, args ...string) (*exec.Cmd, error) {
	if !filepath.IsAbs(dir) {
		return nil, events.Errorf(events.CodeBadRequest, "production directory %q is not absolute", dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, events.Errorf(events.CodeBadRequest, "production directory %s does not exist or is not a directory", dir).
			WithHint("create it, or fix the project's production path with config.set")
	}
	argv := append([]string(nil), e.compose[1:]...)
	if composeProject != "" {
		if err := ValidateProjectName(composeProject); err != nil {
			return nil, err
		}
		argv = append(argv, "-p", composeProject)
	}
	for _, f := range files {
		if err := ValidateComposeFile(f); err != nil {
			return nil, err
		}
		argv = append(argv, "-f", f)
	}
	argv = append(argv, args...)

	cmd := exec.CommandContext(ctx, e.compose[0], argv...)
	cmd.Dir = dir
	cmd.Env = composeEnv(os.Environ())
	cmd.WaitDelay = 5 * time.Second
	setProcessGroup(cmd)
	return cmd, nil
}

// composeEnv drops the variables that would choose the project behind the
// arguments' back.
func composeEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "COMPOSE_FILE=") || strings.HasPrefix(kv, "COMPOSE_PROJECT_NAME=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// composeRun is a finished compose command.
type composeRun struct {
	stdout, stderr []byte
	exitCode       int
}

// runCompose runs a compose command and classifies the failures that are
// not the command's own: a missing compose binary or plugin and an
// unreachable engine are CodeDockerUnavailable, an expired ctx CodeTimeout.
// Any other non-zero exit is returned as *exec.ExitError with the run.
func (e *Engine) runCompose(ctx context.Context, dir string, files []string, composeProject string, args ...string) (*composeRun, error) {
	cmd, err := e.ComposeCommand(ctx, dir, files, composeProject, args...)
	if err != nil {
		return nil, err
	}
	var stdout, stderr capBuffer
	stdout.max, stderr.max = maxCapture, maxCapture
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	run := &composeRun{stdout: stdout.Bytes(), stderr: stderr.Bytes(), exitCode: cmd.ProcessState.ExitCode()}
	if err == nil {
		return run, nil
	}
	what := strings.Join(append(e.ComposeBinary(), args...), " ")
	if ee := composeFailure(ctx, what, err, run.stderr); ee != nil {
		if ee.Code == events.CodeTimeout {
			ee = ee.With("stderr", tail(run.stderr))
		}
		return nil, ee
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("docker: %s: %w", what, ctx.Err())
	}
	return run, err
}

// composeFailure classifies the failure err of the compose command what
// that is not the command's own, from its output: a missing compose binary
// or plugin and an unreachable engine are CodeDockerUnavailable, an expired
// ctx CodeTimeout. It returns nil for any other failure, including a
// canceled ctx, which the caller reports.
func composeFailure(ctx context.Context, what string, err error, output []byte) *events.Error {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return events.Errorf(events.CodeDockerUnavailable, "cannot run %s: %v", what, err).
			WithHint("install the Docker CLI and the Docker Compose v2 plugin (`docker compose version` must work for the worker's user)")
	}
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return events.Errorf(events.CodeTimeout, "%s did not finish in time", what)
		}
		return nil
	}
	se := string(output)
	switch {
	case strings.Contains(se, "is not a docker command") || strings.Contains(se, "unknown command: docker compose"):
		return events.Errorf(events.CodeDockerUnavailable, "%s: the Docker Compose plugin is missing: %s", what, tail(output)).
			WithHint("install the Docker Compose v2 plugin (docker-compose-plugin, or the docker-compose binary in ~/.docker/cli-plugins/); `docker compose version` must work for the worker's user")
	case strings.Contains(se, "Cannot connect to the Docker daemon") ||
		strings.Contains(se, "permission denied while trying to connect to the Docker daemon"):
		return events.Errorf(events.CodeDockerUnavailable, "%s: cannot reach the Docker Engine: %s", what, tail(output)).
			WithHint("check that the Docker Engine is running and that DOCKER_HOST (or the default socket unix:///var/run/docker.sock) names it")
	}
	return nil
}

// ComposeServices returns the services the compose files declare, sorted,
// as `docker compose -p P -f F... config --services` run in dir reports
// them. A compose file that is missing or broken is a CodeBadRequest error
// carrying Compose's message.
func (e *Engine) ComposeServices(ctx context.Context, dir string, files []string, composeProject string) ([]string, error) {
	run, err := e.runCompose(ctx, dir, files, composeProject, "config", "--services")
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil, events.Errorf(events.CodeBadRequest, "the compose files do not load: %s", tail(run.stderr)).
				WithHint(fmt.Sprintf("fix the compose files; `docker compose %s config` in %s shows the same error",
					fileFlags(files), dir)).
				With("exit_code", run.exitCode)
		}
		return nil, err
	}
	var services []string
	for _, l := range strings.Split(string(run.stdout), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			services = append(services, l)
		}
	}
	sort.Strings(services)
	services = compactStrings(services)
	if len(services) == 0 {
		return nil, events.Errorf(events.CodeBadRequest, "the compose files declare no service").
			WithHint("add a service to the compose files")
	}
	return services, nil
}

func fileFlags(files []string) string {
	var b strings.Builder
	for i, f := range files {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-f ")
		b.WriteString(f)
	}
	return b.String()
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// tail returns the trimmed end of a command's output, at most
// MaxErrorOutput bytes.
func tail(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) <= MaxErrorOutput {
		return string(b)
	}
	b = b[len(b)-MaxErrorOutput:]
	if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)/2 {
		b = b[i+1:] // start on a line
	}
	return "…" + string(b)
}

// capBuffer keeps the last max bytes written to it.
type capBuffer struct {
	buf []byte
	max int
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	if len(c.buf) > 2*c.max {
		c.buf = append(c.buf[:0], c.buf[len(c.buf)-c.max:]...)
	}
	return len(p), nil
}

// Bytes returns the kept bytes.
func (c *capBuffer) Bytes() []byte {
	if len(c.buf) > c.max {
		return c.buf[len(c.buf)-c.max:]
	}
	return c.buf
}
