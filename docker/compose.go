package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// MaxErrorOutput is the most of a command's output an error message
// carries (its end, where the reason usually is).
const MaxErrorOutput = 2048

// maxCapture is the most of a compose command's stdout that is kept when
// it is read apart from its stderr.
const maxCapture = 16 << 20

// composeUIFlags are the global flags of Compose runs: plain progress (one
// line per event, the BuildKit steps in full, no redraws) and no ANSI
// escapes. Both are global flags of Compose v2 (2.26 included), so they
// go before the subcommand (after -p and -f).
var composeUIFlags = []string{"--ansi", "never", "--progress", "plain"}

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

// composeCommand returns the command that runs Compose for spec:
// `<compose> -p PROJECT -f FILE... --ansi never --progress plain ARGS...`
// in spec.Dir, where <compose> is the Engine's ComposeBinary. It checks
// spec and args first (CodeBadRequest). The environment is the worker's
// without COMPOSE_FILE and COMPOSE_PROJECT_NAME (only the arguments choose
// the project) and without an inherited BERTH_OP, plus COMPOSE_ANSI=never
// and, when spec.Tag is set, BERTH_OP=<tag>.
//
// The command runs in its own process group, which ctx's end kills; on
// Linux the kernel also kills the command when the worker dies.
func (e *Engine) composeCommand(ctx context.Context, spec berth.ComposeSpec, args ...string) (*exec.Cmd, error) {
	if err := ValidateProjectName(spec.Project); err != nil {
		return nil, err
	}
	if spec.Tag != "" {
		if err := validateOperationTag(spec.Tag); err != nil {
			return nil, err
		}
	}
	for _, a := range args {
		if strings.ContainsRune(a, 0) {
			return nil, events.Errorf(events.CodeBadRequest, "compose argument %q contains a NUL byte", a)
		}
	}
	if !filepath.IsAbs(spec.Dir) {
		return nil, events.Errorf(events.CodeBadRequest, "production directory %q is not absolute", spec.Dir).
			WithHint("set the project's production path to an absolute directory with config.set")
	}
	if st, err := os.Stat(spec.Dir); err != nil || !st.IsDir() {
		return nil, events.Errorf(events.CodeBadRequest, "production directory %s does not exist or is not a directory", spec.Dir).
			WithHint("create it, or fix the project's production path with config.set")
	}
	argv := append(slices.Clone(e.compose[1:]), "-p", spec.Project)
	for _, f := range spec.Files {
		if err := ValidateComposeFile(f); err != nil {
			return nil, err
		}
		argv = append(argv, "-f", f)
	}
	argv = append(append(argv, composeUIFlags...), args...)

	cmd := exec.CommandContext(ctx, e.compose[0], argv...)
	cmd.Dir = spec.Dir
	cmd.Env = append(composeEnv(os.Environ()), "COMPOSE_ANSI=never")
	if spec.Tag != "" {
		cmd.Env = append(cmd.Env, operationEnv+"="+spec.Tag)
	}
	cmd.WaitDelay = 5 * time.Second
	setProcessGroup(cmd)
	return cmd, nil
}

// composeEnv drops the variables that would choose the project behind the
// arguments' back, and the operation tag the worker may have inherited.
func composeEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "COMPOSE_FILE=") || strings.HasPrefix(kv, "COMPOSE_PROJECT_NAME=") ||
			strings.HasPrefix(kv, operationEnv+"=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// composeExit is a Compose run that exited with a non-zero code.
type composeExit struct {
	what string
	code int
	// lines are the last ComposeTailLines output lines (of stderr alone
	// when stdout was read apart).
	lines []string
}

func (x *composeExit) Error() string {
	return fmt.Sprintf("%s failed (exit code %d): %s", x.what, x.code, x.output())
}

// output returns the tail of the run's output, at most MaxErrorOutput
// bytes.
func (x *composeExit) output() string { return tail([]byte(strings.Join(x.lines, "\n"))) }

// runCompose runs Compose for spec with args (see composeCommand) and
// waits for it. Output lines are cleaned (see readComposeLines) and passed
// to line when it is not nil: stdout and stderr merged into one pipe when
// stdout is nil, or else stderr alone while stdout is copied to stdout.
//
// It returns a *composeExit for a non-zero exit. Its other errors are the
// failures that are not Compose's own: a spec or argument Compose must not
// be given is CodeBadRequest (and nothing runs), a missing compose binary
// or plugin and an unreachable engine CodeDockerUnavailable, ctx's
// deadline CodeTimeout (Data "output": the last lines), its cancellation
// ctx.Err() wrapped.
func (e *Engine) runCompose(ctx context.Context, spec berth.ComposeSpec, stdout io.Writer, line func(string), args ...string) error {
	cmd, err := e.composeCommand(ctx, spec, args...)
	if err != nil {
		return err
	}
	what := "docker compose " + shorten(strings.Join(args, " "), 200)

	// One writer for both (when stdout is not read apart): os/exec then
	// hands the child a single pipe as its stdout and stderr.
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// The kernel sends the parent-death signal when the thread that
	// started the child ends, not the process: the goroutine keeps its
	// thread until the child is waited for.
	started, waited := make(chan error, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			pw.Close()
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		pw.Close()
		waited <- err
	}()
	if err := <-started; err != nil {
		if ee := composeFailure(ctx, what, err, nil); ee != nil {
			return ee
		}
		if ctx.Err() != nil {
			return fmt.Errorf("docker: %s: %w", what, ctx.Err())
		}
		return fmt.Errorf("docker: start %s: %w", what, err)
	}

	last := &lineRing{max: ComposeTailLines}
	readComposeLines(pr, func(s string) {
		last.add(s)
		if line != nil {
			line(s)
		}
	})
	err = <-waited
	if err == nil {
		return nil
	}

	lines := slices.Clone(last.lines)
	if ee := composeFailure(ctx, what, err, []byte(strings.Join(lines, "\n"))); ee != nil {
		if ee.Code == events.CodeTimeout {
			ee = ee.WithHint("Compose was stopped (its processes killed) when the request's time ran out; "+
				"its output says what it was doing: raise the timeout, or fix what it was waiting for").
				With("output", lines)
		}
		return ee
	}
	if ctx.Err() != nil {
		return fmt.Errorf("docker: %s: %w", what, ctx.Err())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return fmt.Errorf("docker: %s: %w", what, err)
	}
	return &composeExit{what: what, code: exit.ExitCode(), lines: lines}
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

// fileFlags returns the -f flags of files, for a hint.
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

// limitBuffer keeps the first max bytes written to it and counts the
// bytes past them.
type limitBuffer struct {
	buf     []byte
	max     int
	dropped int
}

func (l *limitBuffer) Write(p []byte) (int, error) {
	n := min(len(p), l.max-len(l.buf))
	l.buf = append(l.buf, p[:n]...)
	l.dropped += len(p) - n
	return len(p), nil
}
