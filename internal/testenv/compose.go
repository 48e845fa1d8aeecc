package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The sample app: its source and the files of its production directory,
// relative to the module root.
const (
	sampleSource = "./testdata/sampleapp/server"
	sampleDir    = "testdata/sampleapp"
)

// SampleComposeFile is the compose file of the sample app.
const SampleComposeFile = "compose.yml"

// sampleBinary builds the static sample app binary once per test process.
var sampleBinary = sync.OnceValues(buildSampleBinary)

// Sample is a running (or, with SampleNoUp, prepared) compose project of
// the sample app, removed with its volumes and images when the test ends.
type Sample struct {
	// Dir is the production directory: compose.yml, Dockerfile,
	// version.txt and the app binary.
	Dir string
	// Project is the compose project name, unique to the test.
	Project string
	// Files are the compose files, relative to Dir.
	Files []string
	// Env is added to the environment of the compose commands (for the
	// compose file's interpolation: FAIL_HEALTH).
	Env []string
}

// SampleOption configures SampleApp.
type SampleOption func(*sampleConfig)

type sampleConfig struct {
	version string
	env     []string
	noUp    bool
}

// SampleVersion writes v to version.txt, the version the app reports.
func SampleVersion(v string) SampleOption {
	return func(c *sampleConfig) { c.version = v }
}

// SampleEnv sets an environment variable of the compose commands.
// SampleEnv("FAIL_HEALTH", "1") makes the web service unhealthy (use it with
// SampleNoUp, as `up --wait` fails then).
func SampleEnv(key, value string) SampleOption {
	return func(c *sampleConfig) { c.env = append(c.env, key+"="+value) }
}

// SampleNoUp prepares the production directory and the project name
// without starting the project; the cleanup still runs `down`.
func SampleNoUp() SampleOption {
	return func(c *sampleConfig) { c.noUp = true }
}

// SampleApp copies the sample app (testdata/sampleapp, with its binary
// built static once per test process) into a fresh production directory and
// brings it up under a unique compose project name with
// `docker compose up -d --build --wait`: service web (HTTP on a published
// ephemeral loopback port, with a healthcheck) and service worker (ticks,
// no healthcheck). The project is taken down, with its volumes and images,
// when the test ends. Without a reachable Docker Engine and Compose v2 the
// test is skipped, or fails in CI.
func SampleApp(t testing.TB, opts ...SampleOption) *Sample {
	t.Helper()
	Integration(t)
	cfg := sampleConfig{}
	for _, o := range opts {
		o(&cfg)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		Unavailable(t, "docker engine: %v: %s", err, bytes.TrimSpace(out))
	}
	if out, err := exec.CommandContext(ctx, "docker", "compose", "version", "--short").CombinedOutput(); err != nil {
		Unavailable(t, "docker compose v2 plugin: %v: %s", err, bytes.TrimSpace(out))
	}

	bin, err := sampleBinary()
	if err != nil {
		t.Fatalf("build the sample app: %v", err)
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}

	s := &Sample{
		Dir:     t.TempDir(),
		Project: "bt" + randomHex(t, 5),
		Files:   []string{SampleComposeFile},
		Env:     cfg.env,
	}
	for _, f := range []string{SampleComposeFile, "Dockerfile", "version.txt"} {
		copyFile(t, filepath.Join(root, sampleDir, f), filepath.Join(s.Dir, f), 0o644)
	}
	copyFile(t, bin, filepath.Join(s.Dir, "app"), 0o755)
	if cfg.version != "" {
		if err := os.WriteFile(filepath.Join(s.Dir, "version.txt"), []byte(cfg.version+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Cleanup(func() {
		// The test's context has ended by now.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if out, err := s.run(ctx, "down", "-v", "--rmi", "local", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("compose down of sample project %s: %v\n%s", s.Project, err, out)
		}
	})
	if cfg.noUp {
		return s
	}

	start := time.Now()
	upCtx, upCancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer upCancel()
	if out, err := s.run(upCtx, "up", "-d", "--build", "--wait", "--wait-timeout", "60"); err != nil {
		logCtx, logCancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer logCancel()
		logs, _ := s.run(logCtx, "logs", "--no-color", "--tail", "50")
		t.Fatalf("compose up of sample project %s: %v\n%s\nlogs:\n%s", s.Project, err, out, logs)
	}
	t.Logf("sample project %s up in %v", s.Project, time.Since(start).Round(time.Millisecond))
	return s
}

// Compose runs `docker compose -p PROJECT -f FILE... ARGS...` in the
// production directory and returns its combined output; it fails t when
// the command fails.
func (s *Sample) Compose(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	out, err := s.run(ctx, args...)
	if err != nil {
		t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// ContainerID returns the id of the first container of a service.
func (s *Sample) ContainerID(t testing.TB, service string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	args := append(s.baseArgs(), "ps", "-q", service)
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Dir, cmd.Env = s.Dir, s.environ()
	out, err := cmd.Output()
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil || id == "" {
		t.Fatalf("no container of service %s in sample project %s: %v", service, s.Project, err)
	}
	return id
}

func (s *Sample) baseArgs() []string {
	args := []string{"compose", "-p", s.Project}
	for _, f := range s.Files {
		args = append(args, "-f", f)
	}
	return args
}

func (s *Sample) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COMPOSE_PROJECT_NAME=") && !strings.HasPrefix(kv, "COMPOSE_FILE=") {
			env = append(env, kv)
		}
	}
	return append(env, s.Env...)
}

func (s *Sample) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", append(s.baseArgs(), args...)...)
	cmd.Dir, cmd.Env = s.Dir, s.environ()
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// buildSampleBinary builds the sample app, static, into a directory shared
// by the test processes (renamed into place, so concurrent builds are safe).
func buildSampleBinary() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), "berth-sampleapp")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := filepath.Join(dir, fmt.Sprintf("app-%d.tmp", os.Getpid()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", tmp, sampleSource)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build %s: %v\n%s", sampleSource, err, out)
	}
	bin := filepath.Join(dir, "app")
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// ModuleRoot finds the directory of go.mod, up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

func copyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
