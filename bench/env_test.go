package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	docker "github.com/docker/docker/client"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

// admin is the user every benchmark command is sent as; the worker runs
// with --admins admin.
const admin = "bench:admin"

// env is what the rows run against: a nats-server with JetStream
// (in-process, as in the tests), a redis-server process, the worker built
// and run as its own process with --nats-url and --redis-url, and, made
// when a row first needs them, compose projects on the local Docker Engine
// and the generated deploy tree. Everything is removed when tb ends.
type env struct {
	tb       testing.TB
	modRoot  string
	roots    string // the worker's --roots: the temporary directory
	ns       *server.Server
	redisURL string
	cl       *client
	bin      string
	w        *workerProc

	dockerOnce sync.Once
	docker     *docker.Client

	app, hand *deployable
	// tick is the second sample app the worker manages (P11).
	tick  *deployable
	flood *floodApp
	floor *floor
	tree  *tree
	// echo is the echo floor of P7 and P2 (bench/echo), once started.
	echo *echoProc
}

// newEnv starts NATS and Redis, builds the worker and starts it.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	testenv.Integration(tb)
	root, err := testenv.ModuleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	tmp, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{tb: tb, modRoot: root, roots: filepath.Clean(tmp)}
	e.ns = testenv.NATS(tb)
	e.redisURL = testenv.Redis(tb)
	e.cl = newClient(tb, e.ns, "berth")
	e.bin = buildWorker(tb, root)
	e.w = e.startWorker(tb)
	return e
}

// buildWorker builds ./cmd/worker as the production binary would be built,
// unless BENCH_WORKER_BIN names a worker binary to measure instead (a
// release, or a build with profiling: see README.md).
func buildWorker(tb testing.TB, root string) string {
	tb.Helper()
	if bin := os.Getenv("BENCH_WORKER_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(tb.TempDir(), "worker")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/worker")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build ./cmd/worker: %v\n%s", err, out)
	}
	return bin
}

// workerProc is a worker process. Its output (stdout and stderr, one pipe)
// is read line by line as it comes; the last 256 KB are kept.
type workerProc struct {
	cmd     *exec.Cmd
	start   time.Time
	ready   chan struct{}
	readyIn time.Duration // from just before exec to reading its ready line
	done    chan struct{}
	// readyLine is what its ready line contains.
	readyLine []byte

	mu  sync.Mutex
	out []byte
}

const keepOutput = 256 << 10

// startWorker runs the worker binary with the production defaults, except
// for what a benchmark machine needs: external NATS and Redis, a fresh state
// directory, the temporary directory as root, one global admin, the
// metrics server on a free port (BERTH_HTTP_ADDR: several workers run at
// once), and --insecure-unsigned: the commands are not signed, as in the
// runs before the worker required signing, so that the rows stay
// comparable (a signed command costs one more Redis round trip, its replay
// claim, which no row measures). It returns once the worker has logged
// "worker ready".
func (e *env) startWorker(tb testing.TB) *workerProc {
	tb.Helper()
	return startProc(tb, []byte(`"worker ready"`), exec.Command(e.bin,
		"--nats-url", e.ns.ClientURL(), "--redis-url", e.redisURL,
		"--state-dir", tb.TempDir(), "--roots", e.roots, "--admins", admin, "--insecure-unsigned"),
		"BERTH_HTTP_ADDR=127.0.0.1:0")
}

// startProc starts cmd with the environment and env, and returns once it
// has printed a line that contains readyLine.
func startProc(tb testing.TB, readyLine []byte, cmd *exec.Cmd, env ...string) *workerProc {
	tb.Helper()
	p := &workerProc{ready: make(chan struct{}), done: make(chan struct{}), readyLine: readyLine, cmd: cmd}
	p.cmd.Env = append(os.Environ(), env...)
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	w.Close()
	go p.read(r)
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() { p.stop(tb) })
	select {
	case <-p.ready:
	case <-p.done:
		tb.Fatalf("%s exited before it was ready:\n%s", filepath.Base(cmd.Path), p.output())
	case <-time.After(60 * time.Second):
		tb.Fatalf("%s not ready within 60s:\n%s", filepath.Base(cmd.Path), p.output())
	}
	return p
}

func (p *workerProc) read(r *os.File) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	readySeen := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if !readySeen && bytes.Contains(line, p.readyLine) {
				readySeen = true
				p.readyIn = time.Since(p.start)
				close(p.ready)
			}
			p.mu.Lock()
			p.out = append(p.out, line...)
			if len(p.out) > 2*keepOutput {
				p.out = append(p.out[:0], p.out[len(p.out)-keepOutput:]...)
			}
			p.mu.Unlock()
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return
		}
	}
}

func (p *workerProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

func (p *workerProc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits; SIGKILL after 15 s.
func (p *workerProc) stop(tb testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		tb.Logf("worker %d did not stop on SIGTERM within 15s; killed", p.pid())
	}
}

// rssBytes reads VmRSS of a process from /proc/<pid>/status.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("unexpected VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// dockerClient is an in-process Docker API client, as the worker has.
func (e *env) dockerClient() *docker.Client {
	e.dockerOnce.Do(func() {
		cli, err := docker.NewClientWithOpts(docker.FromEnv, docker.WithAPIVersionNegotiation())
		if err != nil {
			e.tb.Fatalf("docker client: %v", err)
		}
		e.tb.Cleanup(func() { _ = cli.Close() })
		e.docker = cli
	})
	return e.docker
}

// deployable is a running sample app (testenv.SampleApp: its production
// directory and compose project) with a workspace copy next to it.
type deployable struct {
	sample *testenv.Sample
	ws     string
	// project is the Berth project name, when the worker manages it.
	project string
}

// sampleApp brings up the sample app with testenv.SampleApp and copies its
// production directory into a workspace. When project is not empty, the
// worker is configured to manage it under that name.
func (e *env) sampleApp(project string) *deployable {
	tb := e.tb
	tb.Helper()
	s := testenv.SampleApp(tb)
	d := &deployable{sample: s, ws: filepath.Join(tb.TempDir(), "workspace"), project: project}
	copyDir(tb, s.Dir, d.ws)
	tb.Cleanup(func() { removeReleaseImages(s.Project) })
	if project != "" {
		e.configure(project, d.ws, s.Dir, s.Project)
	}
	return d
}

// configure registers a project with the worker (config.set).
func (e *env) configure(project, ws, prod, composeProject string) {
	e.tb.Helper()
	e.configureRoles(project, ws, prod, composeProject, nil)
}

// configureRoles is configure with the project's roles (user → viewer,
// operator or admin); nil leaves only the global admin.
func (e *env) configureRoles(project, ws, prod, composeProject string, roles map[string]string) {
	e.tb.Helper()
	args := map[string]any{"workspace": ws, "production": prod, "compose_project": composeProject}
	if roles != nil {
		args["roles"] = roles
	}
	res, err := e.cl.request(project, events.ActionConfigSet, events.Command{User: admin, Args: mustJSON(e.tb, args)}, time.Minute)
	if err != nil {
		e.tb.Fatalf("config.set %s: %v", project, err)
	}
	mustOK(e.tb, res)
}

// removeReleaseImages removes the image tags Berth's deploys kept for a
// compose project (berth-release/<project>:<service>-<release>).
func removeReleaseImages(composeProject string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
		"berth-release/"+composeProject).Output()
	if err != nil {
		return
	}
	tags := strings.Fields(string(out))
	if len(tags) > 0 {
		_ = exec.CommandContext(ctx, "docker", append([]string{"rmi", "--force"}, tags...)...).Run()
	}
}

// floodApp is a compose project of one container that printed 10 000 log
// lines (bench/testdata/flood), managed by the worker as project "flood".
type floodApp struct {
	sample    *testenv.Sample
	project   string
	container string
}

const floodLines = 10000

func (e *env) floodApp() *floodApp {
	tb := e.tb
	tb.Helper()
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", filepath.Join(dir, "flood"), "./bench/testdata/flood")
	build.Dir = e.modRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build the flood program: %v\n%s", err, out)
	}
	files := map[string]string{
		"Dockerfile": "FROM scratch\nCOPY flood /flood\nENTRYPOINT [\"/flood\"]\n",
		"compose.yml": fmt.Sprintf(`services:
  flood:
    build: .
    image: ${COMPOSE_PROJECT_NAME}-flood:latest
    command: ["%d"]
`, floodLines),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	f := &floodApp{sample: &testenv.Sample{Dir: dir, Project: "bflood" + randomHex(tb, 4), Files: []string{"compose.yml"}}, project: "flood"}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker", "compose", "-p", f.sample.Project, "-f", "compose.yml",
			"down", "-v", "--rmi", "local", "--remove-orphans", "--timeout", "5")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Errorf("compose down of %s: %v\n%s", f.sample.Project, err, out)
		}
	})
	f.sample.Compose(tb, "up", "-d", "--build", "--wait")
	f.container = f.sample.ContainerID(tb, "flood")

	// Wait until all lines are out.
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := countDockerLogLines(f.container)
		if err != nil {
			tb.Fatal(err)
		}
		if n >= floodLines {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("flood container printed %d lines within a minute, want %d", n, floodLines)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ws := filepath.Join(tb.TempDir(), "workspace")
	copyDir(tb, dir, ws)
	e.configure(f.project, ws, dir, f.sample.Project)
	return f
}

func countDockerLogLines(container string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "logs", "--tail", strconv.Itoa(floodLines+1), container)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("docker logs: %v: %s", err, buf.Bytes())
	}
	return bytes.Count(buf.Bytes(), []byte{'\n'}), nil
}

// copyDir copies a directory tree, keeping modes and modification times.
func copyDir(tb testing.TB, from, to string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		tb.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
}

func randomHex(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// runCmd runs a command with its output discarded (read, so the command
// is not slowed by a full pipe) and fails tb when it fails.
func runCmd(tb testing.TB, dir string, name string, args ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
}

// output runs a command and returns its standard output.
func output(tb testing.TB, dir string, name string, args ...string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// newNATSConn connects to the benchmark's nats-server.
func newNATSConn(tb testing.TB, ns *server.Server, name string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.Name(name))
	if err != nil {
		tb.Fatalf("connect to nats: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}
