package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sampleSource is the source of the app binary of every fixture, relative
// to the module root.
const sampleSource = "./testdata/sampleapp/server"

// SampleComposeFile is the compose file of the sample app.
const SampleComposeFile = "compose.yml"

// upTimeout bounds `docker compose up -d --build`, readyTimeout the wait
// for its containers after it (WaitReady).
const (
	upTimeout    = 3 * time.Minute
	readyTimeout = 60 * time.Second
)

// sampleBinary builds the static sample app binary once per test process.
var sampleBinary = sync.OnceValues(buildSampleBinary)

// Sample is a running (or, with SampleNoUp, prepared) compose project of
// a fixture, removed with its containers, volumes, networks and images when
// the test ends.
type Sample struct {
	// Dir is the production directory: the fixture's compose files,
	// Dockerfile, version.txt, other files (app.env) and production-only
	// files (see Fixture.ProductionOnly), and the app binary.
	Dir string
	// Project is the compose project name, unique to the test.
	Project string
	// Files are the compose files, relative to Dir.
	Files []string
	// Env is added to the environment of the compose commands (for the
	// compose file's interpolation: FAIL_HEALTH, FAIL_MIGRATE, FAIL_SEED).
	Env []string
	// Fixture is the fixture the project was made from (the zero value is
	// SampleFixture).
	Fixture Fixture
}

// SampleOption configures SampleApp.
type SampleOption func(*sampleConfig)

type sampleConfig struct {
	fixture Fixture
	version string
	env     []string
	noUp    bool
}

// WithFixture makes SampleApp bring up fixture f instead of the sample app.
func WithFixture(f Fixture) SampleOption {
	return func(c *sampleConfig) { c.fixture = f }
}

// SampleVersion writes v to version.txt, the version the app reports.
func SampleVersion(v string) SampleOption {
	return func(c *sampleConfig) { c.version = v }
}

// SampleEnv sets an environment variable of the compose commands.
// SampleEnv("FAIL_HEALTH", "1") makes the web service unhealthy, and with
// the real app SampleEnv("FAIL_MIGRATE", "1") makes migrate fail (web is
// not started then) and SampleEnv("FAIL_SEED", "1") makes seed fail; use
// them with SampleNoUp, as bringing the project up fails then.
func SampleEnv(key, value string) SampleOption {
	return func(c *sampleConfig) { c.env = append(c.env, key+"="+value) }
}

// SampleNoUp prepares the production directory and the project name
// without starting the project (start it with Up); the cleanup still runs.
func SampleNoUp() SampleOption {
	return func(c *sampleConfig) { c.noUp = true }
}

// SampleApp copies a fixture (the sample app, testdata/sampleapp, unless
// WithFixture says otherwise; its binary built static once per test
// process) into a fresh production directory and brings it up under a
// unique compose project name with `docker compose up -d --build`, then
// waits for its containers (WaitReady). The sample app has service web
// (HTTP on a published ephemeral loopback port, with a healthcheck) and
// service worker (ticks, no healthcheck); see Fixture for the real app.
//
// When the test ends the project is taken down (`down -v --rmi local
// --remove-orphans`), and whatever else the test or the worker made of it
// is removed too: every container and image labelled with the project,
// every image named <project>-* or berth-release/<project> (the worker's
// backup tags), every volume and network labelled with the project. The
// test fails if anything of it is left. Without a reachable Docker Engine
// and Compose v2 the test is skipped, or fails in CI.
func SampleApp(t testing.TB, opts ...SampleOption) *Sample {
	t.Helper()
	Integration(t)
	cfg := sampleConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	fx := cfg.fixture.spec()

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
		Files:   slices.Clone(fx.files),
		Env:     cfg.env,
		Fixture: cfg.fixture,
	}
	for _, f := range append(slices.Clone(fx.files), fx.copy...) {
		copyFile(t, filepath.Join(root, fx.dir, f), filepath.Join(s.Dir, f), 0o644)
	}
	bins := fx.binaries
	if len(bins) == 0 {
		bins = []string{"app"}
	}
	for _, b := range bins {
		copyFile(t, bin, filepath.Join(s.Dir, filepath.FromSlash(b)), 0o755)
	}
	for _, p := range fx.prodOnly {
		path := filepath.Join(s.Dir, filepath.FromSlash(p.path))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(p.content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.version != "" {
		if err := os.WriteFile(filepath.Join(s.Dir, "version.txt"), []byte(cfg.version+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Cleanup(func() { s.cleanup(t) })
	for dir, suffix := range fx.prebuilt {
		bctx, cancel := context.WithTimeout(t.Context(), upTimeout)
		out, err := exec.CommandContext(bctx, "docker", "build", "-q", "-t", s.Project+"-"+suffix+":latest", filepath.Join(s.Dir, dir)).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("build %s of %s: %v\n%s", dir, s.Fixture, err, out)
		}
	}
	if cfg.noUp {
		return s
	}
	start := time.Now()
	s.up(t)
	up := time.Since(start)
	s.WaitReady(t)
	t.Logf("%s project %s up in %v, ready %v later", s.Fixture, s.Project,
		up.Round(time.Millisecond), (time.Since(start) - up).Round(time.Millisecond))
	return s
}

// Up runs `docker compose up -d --build` and waits until the project is
// ready (WaitReady). It fails t, with the containers' states and logs, when
// either fails. It does not use `up --wait`, which fails on a project with
// a one-shot service even when it exits 0.
func (s *Sample) Up(t testing.TB) {
	t.Helper()
	s.up(t)
	s.WaitReady(t)
}

// up runs `docker compose up -d --build`.
func (s *Sample) up(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), upTimeout)
	defer cancel()
	if out, err := s.run(ctx, "up", "-d", "--build"); err != nil {
		t.Fatalf("compose up of %s project %s: %v\n%s\n%s", s.Fixture, s.Project, err, out, s.diagnostics(t))
	}
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

// Addr returns the host:port on which the fixture's HTTP service (web)
// publishes its port 8080, from `docker compose port`. The port changes
// when the container is recreated, so ask again after a deploy.
func (s *Sample) Addr(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	svc, port := s.Fixture.HTTPService(), strconv.Itoa(s.Fixture.HTTPPort())
	out, err := s.output(ctx, "port", svc, port)
	if err == nil {
		out, err = loopbackAddr(out)
	}
	if err != nil {
		t.Fatalf("port %s of service %s in project %s: %v", port, svc, s.Project, err)
	}
	return out
}

// loopbackAddr parses the output of `docker compose port` (its first
// line, host:port) and replaces an unspecified host with the loopback
// address.
func loopbackAddr(out string) (string, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	host, port, err := net.SplitHostPort(strings.TrimSpace(line))
	if err != nil || port == "" || port == "0" {
		return "", fmt.Errorf("no published port in %q", out)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// HTTP sends GET path (starting with "/") to the fixture's HTTP service
// (web, at Addr) and returns the status code and the body. It fails t when
// there is no answer within 10 seconds.
func (s *Sample) HTTP(t testing.TB, path string) (status int, body string) {
	t.Helper()
	url := "http://" + s.Addr(t) + path
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: read the body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// httpClient does not keep connections: the port of web changes when a
// deploy recreates its container.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// Served returns the version web serves (GET /, trimmed). It fails t when
// the answer is not 200.
func (s *Sample) Served(t testing.TB) string {
	t.Helper()
	status, body := s.HTTP(t, "/")
	if status != http.StatusOK {
		t.Fatalf("GET / of project %s: status %d: %s", s.Project, status, body)
	}
	return strings.TrimSpace(body)
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

func (s *Sample) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "docker", append(s.baseArgs(), args...)...)
	cmd.Dir, cmd.Env = s.Dir, s.environ()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs a compose command and returns its combined output.
func (s *Sample) run(ctx context.Context, args ...string) (string, error) {
	out, err := s.command(ctx, args...).CombinedOutput()
	return string(out), err
}

// output runs a compose command and returns its standard output; the error
// carries its standard error.
func (s *Sample) output(ctx context.Context, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := s.command(ctx, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("docker compose %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
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
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
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
