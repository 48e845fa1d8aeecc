package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-ops/berth/internal/testenv"
)

// TestCaptureGolden captures the golden events of testdata/golden from a
// real worker and a real compose project; it runs only when asked:
//
//	BERTH_GOLDEN_CAPTURE=1 go test -run TestCaptureGolden -v ./cmd/publisher/
//	go test -run TestGolden ./cmd/publisher/ -update
//
// It builds ./cmd/worker and starts it in development mode (its own
// nats-server on a free port, learnt from its "worker ready" log line,
// and an in-memory store), brings up the sample app
// (testenv.SampleApp: Docker Engine and Compose needed), configures it
// as project demo with a workspace of its own, and drives it with the
// publisher's --json: deploy (plan, then confirmed), a second deploy, a
// deploy that fails its health check (FAIL_HEALTH=1) and is rolled back,
// restart, rollback, releases, history, status, config.get and a stop
// plan. Each request's events, as --json prints them, go to
// testdata/golden/<name>.json, one event a line; the second command
// writes the text beside them (<name>.txt). Timestamps, ids, paths and
// compose project names are as captured.
func TestCaptureGolden(t *testing.T) {
	if os.Getenv("BERTH_GOLDEN_CAPTURE") == "" {
		t.Skip("set BERTH_GOLDEN_CAPTURE=1 to capture the golden events from a real worker")
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	url := startDevWorker(t, root)
	sample := testenv.SampleApp(t)

	// The workspace: production's files, then the changes of each deploy.
	ws := filepath.Join(t.TempDir(), "workspace")
	for _, f := range []string{"compose.yml", "Dockerfile", "version.txt", "app"} {
		copyFileTo(t, filepath.Join(sample.Dir, f), filepath.Join(ws, f))
	}
	write := func(dir, rel, content string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Production's own files: a secret (the workspace has one too:
	// protected) and data (kept).
	write(sample.Dir, ".env", "SECRET_TOKEN=prod-secret\n")
	write(sample.Dir, "data/db.txt", "precious\n")
	write(ws, ".env", "SECRET_TOKEN=dev\n")

	pub := func(name string, args ...string) []json.RawMessage {
		t.Helper()
		var out, errw bytes.Buffer
		all := append([]string{"-s", url, "--user", "cli:alice", "--json", "--timeout", "5m"}, args...)
		code := run(t.Context(), all, &out, &errw)
		var evs []json.RawMessage
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if l != "" {
				evs = append(evs, json.RawMessage(l))
			}
		}
		t.Logf("%s: exit %d, %d events; stderr %s", strings.Join(args, " "), code, len(evs), errw.String())
		if len(evs) == 0 {
			t.Fatalf("%s: no events (exit %d): %s", strings.Join(args, " "), code, errw.String())
		}
		if name != "" {
			saveGoldenEvents(t, name, evs)
		}
		return evs
	}
	token := func(evs []json.RawMessage) string {
		t.Helper()
		for _, e := range evs {
			var ev struct {
				Kind  string `json:"kind"`
				Token string `json:"token"`
			}
			json.Unmarshal(e, &ev)
			if ev.Kind == "confirm" {
				return ev.Token
			}
		}
		t.Fatalf("no confirm event in %s", evs)
		return ""
	}
	cfg, _ := json.Marshal(map[string]any{"workspace": ws, "production": sample.Dir, "compose_project": sample.Project,
		"compose_files": sample.Files})
	pub("", "config.set", "demo", "--args", string(cfg))

	// Deploy 1: a new version, new files, a compose change that adds a
	// capability (a widening), production's secret protected.
	write(ws, "version.txt", "2.0.0\n")
	for i := 1; i <= 7; i++ {
		write(ws, fmt.Sprintf("static/page%d.html", i), fmt.Sprintf("<h1>page %d</h1>\n", i))
	}
	compose := readFileT(t, filepath.Join(ws, "compose.yml"))
	compose = strings.Replace(compose, "    command: [\"worker\"]\n",
		"    command: [\"worker\"]\n    cap_add:\n      - NET_ADMIN\n", 1)
	compose = strings.Replace(compose, "      FAIL_HEALTH: \"${FAIL_HEALTH:-0}\"\n",
		"      FAIL_HEALTH: \"${FAIL_HEALTH:-0}\"\n      GREETING: \"hello\"\n", 1)
	write(ws, "compose.yml", compose)
	plan := pub("deploy-plan", "deploy", "demo")
	pub("deploy-result", "deploy", "demo", "--confirm", token(plan))

	// Deploy 2: a smaller change.
	write(ws, "version.txt", "2.1.0\n")
	if err := os.Remove(filepath.Join(ws, "static/page7.html")); err != nil {
		t.Fatal(err)
	}
	plan = pub("", "deploy", "demo")
	pub("", "deploy", "demo", "--confirm", token(plan))

	// Deploy 3 fails: web turns unhealthy, the deploy is rolled back.
	write(ws, "version.txt", "3.0.0\n")
	write(ws, "compose.yml", strings.Replace(compose, `FAIL_HEALTH: "${FAIL_HEALTH:-0}"`, `FAIL_HEALTH: "1"`, 1))
	plan = pub("", "deploy", "demo")
	pub("deploy-failed", "deploy", "demo", "--confirm", token(plan))

	plan = pub("restart-plan", "restart", "demo")
	pub("restart-result", "restart", "demo", "--confirm", token(plan))

	pub("releases", "releases", "demo")
	plan = pub("rollback-plan", "rollback", "demo")
	pub("rollback-result", "rollback", "demo", "--confirm", token(plan))

	pub("history", "history", "demo")
	pub("status", "status", "demo", "--arg", "refresh=true")
	pub("config", "config.get", "demo")
	pub("stop-plan", "stop", "demo")

	// Last, a deploy whose build fails: Compose's output comes in the
	// result's data and at the end of its error message.
	write(ws, "Dockerfile", readFileT(t, filepath.Join(ws, "Dockerfile"))+"COPY missing-file.txt /missing-file.txt\n")
	write(ws, "compose.yml", compose)
	plan = pub("", "deploy", "demo")
	pub("deploy-build-failed", "deploy", "demo", "--confirm", token(plan))

	// Not golden, but checked against the real worker: a mistyped
	// project gets a suggestion from berth.q.projects.
	var out, errw bytes.Buffer
	code := run(t.Context(), []string{"-s", url, "--user", "cli:alice", "status", "dmeo"}, &out, &errw)
	if code != exitFailed || !strings.Contains(errw.String(), "hint: did you mean demo? (publisher status demo)") {
		t.Errorf("status dmeo: exit %d\n%s", code, errw.String())
	}
}

// startDevWorker builds the worker and starts it in development mode,
// and returns its NATS URL.
func startDevWorker(t *testing.T, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "worker")
	build := exec.Command("go", "build", "-o", bin, "./cmd/worker")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the worker: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--dev", "--dev-nats-listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--http-addr", "off",
		"--roots", os.TempDir(), "--stabilize", "1s", "--verify-timeout", "40s", "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	urlCh := make(chan string, 1)
	natsRe := regexp.MustCompile(`"nats":"(nats://[^"]+)"`)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if !sent && strings.Contains(line, "worker ready") {
				if m := natsRe.FindStringSubmatch(line); m != nil {
					urlCh <- m[1]
					sent = true
				}
			}
			if os.Getenv("BERTH_GOLDEN_WORKER_LOG") != "" {
				fmt.Fprintln(os.Stderr, line)
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	select {
	case url := <-urlCh:
		return url
	case <-ctx.Done():
		t.Fatal("the worker did not log \"worker ready\" with its NATS URL")
	}
	return ""
}

// saveGoldenEvents writes events to testdata/golden/<name>.json: a JSON
// array, one event a line.
func saveGoldenEvents(t *testing.T, name string, evs []json.RawMessage) {
	t.Helper()
	var b strings.Builder
	b.WriteString("[\n")
	for i, e := range evs {
		var c bytes.Buffer
		if err := json.Compact(&c, e); err != nil {
			t.Fatal(err)
		}
		b.Write(c.Bytes())
		if i < len(evs)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]\n")
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goldenDir, name+".json"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFileTo(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

func readFileT(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
