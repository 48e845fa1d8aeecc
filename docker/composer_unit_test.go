package docker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

func TestCleanLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                                  "plain",
		"\x1b[1;32mgreen\x1b[0m text":            "green text",
		"\x1b[2K\x1b[1A\x1b[2K[+] Building 0.1s": "[+] Building 0.1s",
		"10%\r50%\r100% done":                    "100% done",
		"crlf line\r":                            "crlf line",
		"\x1b]0;title\x07after osc":              "after osc",
		"bell\x07 and\x08 bs":                    "bell and bs",
		"tab\tkept   ":                           "tab\tkept",
		"   \r  ":                                "",
		"\x1b[0m":                                "",
		"bad \xff utf8":                          "bad \uFFFD utf8",
		"  indented":                             "  indented",
	} {
		if got := cleanLine(in); got != want {
			t.Errorf("cleanLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// oneByteReader returns one byte per Read.
type oneByteReader struct{ s string }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, errors.New("closed")
	}
	p[0] = r.s[0]
	r.s = r.s[1:]
	return 1, nil
}

func TestReadComposeLines(t *testing.T) {
	long := strings.Repeat("x", maxComposeLine+100)
	in := "one\n\n\x1b[31mtwo\x1b[0m\r\nthree\rTHREE\n" + long + "\nlast without newline"
	var got []string
	readComposeLines(&oneByteReader{in}, func(s string) { got = append(got, s) })
	want := []string{"one", "two", "THREE", strings.Repeat("x", maxComposeLine) + " … [100 bytes cut]", "last without newline"}
	if !slices.Equal(got, want) {
		t.Errorf("lines %q,\nwant %q", got, want)
	}
}

func TestLineRing(t *testing.T) {
	r := &lineRing{max: 3}
	for i := range 5 {
		r.add(strconv.Itoa(i))
	}
	if !slices.Equal(r.lines, []string{"2", "3", "4"}) {
		t.Errorf("ring %q", r.lines)
	}
}

// TestComposeFake runs Compose on a fake docker CLI.
func TestComposeFake(t *testing.T) {
	dir := t.TempDir()
	spec := berth.ComposeSpec{Dir: dir, Files: []string{"compose.yml"}, Project: "proj"}
	engine := func(script string) *Engine { return newTestEngine(t, fakeDocker(t, script), "compose") }
	ctx := t.Context()

	t.Run("streams", func(t *testing.T) {
		e := engine(`echo "argv: $*"; echo "ansi=$COMPOSE_ANSI"; printf '\033[32mcolored\033[0m\n'; echo "to stderr" >&2; printf 'a\rb\n'; printf 'no newline'`)
		var lines []string
		if err := e.Compose(ctx, spec, events.CodeBuildFailed, func(s string) { lines = append(lines, s) }, "build", "--pull", "a b"); err != nil {
			t.Fatal(err)
		}
		want := []string{"argv: compose -p proj -f compose.yml --ansi never --progress plain build --pull a b",
			"ansi=never", "colored", "to stderr", "b", "no newline"}
		if !slices.Equal(lines, want) {
			t.Errorf("lines %q,\nwant %q", lines, want)
		}
		// line may be nil.
		if err := e.Compose(ctx, spec, events.CodeBuildFailed, nil, "build"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("fails", func(t *testing.T) {
		e := engine(`i=0; while [ $i -lt 80 ]; do echo "line $i"; i=$((i+1)); done; echo "failed to solve: boom" >&2; exit 17`)
		var n int
		err := e.Compose(ctx, spec, events.CodeBuildFailed, func(string) { n++ }, "build")
		assertCode(t, err, events.CodeBuildFailed, "build error")
		ee := events.AsError(err)
		lines, _ := ee.Data["output"].([]string)
		if n != 81 || len(lines) != ComposeTailLines || lines[0] != "line 31" || lines[len(lines)-1] != "failed to solve: boom" {
			t.Errorf("%d lines streamed; output %q", n, lines)
		}
		if ee.Data["exit_code"] != 17 || !strings.HasPrefix(ee.Message, "docker compose build failed (exit code 17): ") ||
			!strings.HasSuffix(ee.Message, "failed to solve: boom") {
			t.Errorf("error %+v", ee)
		}
		err = e.Compose(ctx, spec, events.CodeHealthFailed, nil, "up", "--wait")
		assertCode(t, err, events.CodeHealthFailed, "healthy")
		err = e.Compose(ctx, spec, "", nil, "up")
		assertCode(t, err, events.CodeInternal, "")
	})

	t.Run("unavailable", func(t *testing.T) {
		e, _ := New(WithComposeBinary(filepath.Join(dir, "no-such-docker"), "compose"))
		defer e.Close()
		err := e.Compose(ctx, spec, events.CodeBuildFailed, nil, "build")
		assertCode(t, err, events.CodeDockerUnavailable, "Compose v2 plugin")
		err = engine(`echo "docker: 'compose' is not a docker command." >&2; exit 1`).Compose(ctx, spec, events.CodeBuildFailed, nil, "build")
		assertCode(t, err, events.CodeDockerUnavailable, "Compose v2 plugin")
		err = engine(`echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1`).
			Compose(ctx, spec, events.CodeBuildFailed, nil, "build")
		assertCode(t, err, events.CodeDockerUnavailable, "Docker Engine")
	})

	t.Run("timeout kills the group", func(t *testing.T) {
		if runtime.GOOS == "windows" {
			t.Skip("process groups")
		}
		pidFile := filepath.Join(t.TempDir(), "pid")
		e := engine(`sleep 60 & echo $! > ` + pidFile + `; echo started; wait`)
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		start := time.Now()
		var lines []string
		err := e.Compose(tctx, spec, events.CodeBuildFailed, func(s string) { lines = append(lines, s) }, "build")
		assertCode(t, err, events.CodeTimeout, "timeout")
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("returned after %v", d)
		}
		if out, _ := events.AsError(err).Data["output"].([]string); !slices.Equal(out, []string{"started"}) {
			t.Errorf("output %q", out)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		waitGone(t, pid)

		cctx, cancel2 := context.WithCancel(ctx)
		time.AfterFunc(300*time.Millisecond, cancel2)
		err = e.Compose(cctx, spec, events.CodeBuildFailed, nil, "build")
		if !errors.Is(err, context.Canceled) || events.AsError(err).Code != events.CodeInternal {
			t.Errorf("canceled: %v", err)
		}
	})
}

// waitGone waits for process pid to be gone (or a zombie nobody reaps).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs: %s", pid, stat)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
