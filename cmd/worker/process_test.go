package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// workerBinary builds the worker once per test process, for the tests
// that kill it.
var workerBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "berth-worker-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "worker")
	args := []string{"build", "-o", bin}
	if raceBuild {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		return "", &buildError{out: string(out), err: err}
	}
	return bin, nil
})

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// proc is a worker running as its own process.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// startProcess runs the worker binary with the harness's configuration.
func (h *harness) startProcess(extra ...string) *proc {
	h.t.Helper()
	return h.startProcessEnv(nil, extra...)
}

// startProcessEnv is startProcess with env (KEY=value) added to the
// test's environment.
func (h *harness) startProcessEnv(env []string, extra ...string) *proc {
	h.t.Helper()
	bin, err := workerBinary()
	if err != nil {
		h.t.Fatalf("build worker: %v", err)
	}
	args := []string{
		"--nats-url", h.cfg.NATSURL, "--redis-url", h.cfg.RedisURL, "--state-dir", h.cfg.StateDir,
		"--roots", strings.Join(h.cfg.Roots, ","), "--ack-wait", h.cfg.AckWait.String(),
		"--stabilize", h.cfg.Stabilize.String(), "--verify-timeout", h.cfg.VerifyTimeout.String(),
		"--log-level", "debug", "--admins", strings.Join(h.cfg.Admins, ","), "--insecure-unsigned",
	}
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(bin, append(args, extra...)...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if len(env) > 0 {
		p.cmd.Env = append(os.Environ(), env...)
	}
	if err := p.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	h.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if strings.Contains(p.output(), "WARNING: DATA RACE") {
			h.t.Errorf("the worker process reported a data race")
		}
		if h.t.Failed() {
			h.t.Logf("worker process output:\n%s", p.output())
		}
	})
	p.waitFor(h.t, "worker ready", 60*time.Second)
	return p
}

// waitFor waits until the worker has logged s.
func (p *proc) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.output(), s) {
		select {
		case <-p.done:
			t.Fatalf("worker exited before logging %q:\n%s", s, p.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker did not log %q within %v:\n%s", s, timeout, p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill stops the worker with SIGKILL: no cleanup, no ack, no release.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not die")
	}
}
