package docker

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-ops/berth/events"
)

func TestValidateOperationTag(t *testing.T) {
	for _, ok := range []string{"a", "req-1", "0195f1c2-7a3b:deploy/web.v2_x", strings.Repeat("t", 128)} {
		if err := validateOperationTag(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "a=b", "a\x00b", "a\nb", "é", "a;b", "$x", strings.Repeat("t", 129)} {
		if events.ErrorCode(validateOperationTag(bad)) != events.CodeBadRequest {
			t.Errorf("%q accepted", bad)
		}
	}
}

// fakeStat is a /proc/<pid>/stat line.
func fakeStat(pid int, comm, state string, pgrp int, start uint64) string {
	return fmt.Sprintf("%d (%s) %s 1 %d %d 0 -1 4194304 10 0 0 0 3 1 0 0 20 0 1 0 %d 12345678 300 18446744073709551615\n",
		pid, comm, state, pgrp, pgrp, start)
}

// TestFindTagged scans a fake /proc tree.
func TestFindTagged(t *testing.T) {
	root := t.TempDir()
	proc := func(name, environ, stat string) {
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for file, content := range map[string]string{"environ": environ, "stat": stat} {
			if content == "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	const tag = "req-1:deploy"
	proc("10", "PATH=/bin\x00BERTH_OP=req-1:deploy\x00HOME=/\x00", fakeStat(10, "docker-compose", "S", 10, 500))
	proc("11", "BERTH_OP=req-1:deploy", fakeStat(11, "buildx", "R", 10, 501)) // first and last, no final NUL
	proc("12", "BERTH_OP=req-1:deploy2\x00", fakeStat(12, "x", "S", 12, 1))   // another tag
	proc("13", "XBERTH_OP=req-1:deploy\x00", fakeStat(13, "x", "S", 13, 1))   // another variable
	proc("14", "A=BERTH_OP=req-1:deploy\x00", fakeStat(14, "x", "S", 14, 1))  // inside a value
	proc("15", "BERTH_OP=req-1:deploy\x00", fakeStat(15, "x", "Z", 15, 1))    // zombie
	proc("16", "BERTH_OP=req-1:deploy\x00", "")                               // no stat
	proc("17", "", fakeStat(17, "x", "S", 17, 1))                             // no environ
	proc("18", "BERTH_OP=req-1:deploy\x00", fakeStat(18, "x", "S", 18, 1))    // the caller
	proc("self", "BERTH_OP=req-1:deploy\x00", fakeStat(18, "x", "S", 18, 1))  // not a pid
	proc("19", "BERTH_OP=req-1:deploy\x00", fakeStat(19, "a) S 7 (b", "D", 19, 900))
	proc("20", "BERTH_OP=req-1:deploy\x00", "20 (short) S 1 20\n")

	got, err := findTagged(root, tag, 18)
	if err != nil {
		t.Fatal(err)
	}
	want := []taggedProcess{{pid: 10, pgrp: 10, start: 500}, {pid: 11, pgrp: 10, start: 501}, {pid: 19, pgrp: 19, start: 900}}
	if !slices.Equal(got, want) {
		t.Errorf("found %+v, want %+v", got, want)
	}
	if got, _ := findTagged(root, "req-1", 18); len(got) != 0 {
		t.Errorf("a prefix of the tag finds %+v", got)
	}
	if _, err := findTagged(filepath.Join(root, "none"), tag, 1); err == nil {
		t.Error("no error for a missing proc root")
	}
}

func TestParseProcStat(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	p, ok := parseProcStat(stat)
	if !ok || p.pgrp != syscall.Getpgrp() || p.start == 0 {
		t.Errorf("stat %q: %+v, %v", stat, p, ok)
	}
}

// TestStopOperation kills real processes: a tagged shell and its tagged
// child, leaving alone a process with another tag.
func TestStopOperation(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("StopOperation finds processes on Linux only")
	}
	e := newTestEngine(t)
	ctx := t.Context()
	b := make([]byte, 6)
	rand.Read(b)
	tag := "test-stop-" + hex.EncodeToString(b)

	start := func(env string, argv ...string) *exec.Cmd {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), env)
		return cmd
	}
	other := start(operationEnv+"="+tag+"-other", "sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })

	sh := start(operationEnv+"="+tag, "sh", "-c", "sleep 60 & echo $!; wait")
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Process.Kill(); sh.Wait() })
	first, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatal(err)
	}

	n, err := e.StopOperation(ctx, tag)
	if err != nil || n != 2 {
		t.Fatalf("StopOperation = %d, %v; want 2 killed", n, err)
	}
	// The shell is the test's child: killed, it waits to be reaped.
	if err := sh.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("shell: %v", err)
	}
	waitGone(t, child)
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the process of another tag: %v", err)
	}

	if n, err := e.StopOperation(ctx, tag); n != 0 || err != nil {
		t.Errorf("again: %d, %v", n, err)
	}
	_, err = e.StopOperation(ctx, "bad tag")
	assertCode(t, err, events.CodeBadRequest, "tag")
}
