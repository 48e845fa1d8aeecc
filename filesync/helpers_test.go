package filesync

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
)

// baseTime is the modification time build gives every file, so that a
// workspace and a production built alike compare unchanged by their stat.
var baseTime = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// tree describes files: path → content; a path ending in "/" is an empty
// directory; content starting with "@" makes a symbolic link to the rest.
type tree map[string]string

func build(t testing.TB, dir string, tr tree) {
	t.Helper()
	for rel, content := range tr {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if strings.HasSuffix(rel, "/") {
			must(t, os.MkdirAll(p, 0o755))
			continue
		}
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if target, ok := strings.CutPrefix(content, "@"); ok {
			os.Remove(p)
			must(t, os.Symlink(target, p))
			continue
		}
		must(t, os.WriteFile(p, []byte(content), 0o644))
		must(t, os.Chtimes(p, baseTime, baseTime))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// dirs returns a new workspace, production and state directory.
func dirs(t testing.TB) (ws, prod, state string) {
	base := t.TempDir()
	ws, prod, state = filepath.Join(base, "ws"), filepath.Join(base, "prod"), filepath.Join(base, "state")
	for _, d := range []string{ws, prod, state} {
		must(t, os.Mkdir(d, 0o755))
	}
	return
}

func paths(cs []Change) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Path)
	}
	return out
}

func refusedPaths(rs []Refusal) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Path)
	}
	return out
}

func eq(t testing.TB, what string, got, want []string) {
	t.Helper()
	if got == nil {
		got = []string{}
	}
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func diff(t testing.TB, ws, prod string, m *Manifest, extra ...string) *Plan {
	t.Helper()
	rules, err := LoadRules(ws, extra...)
	must(t, err)
	p, err := Diff(t.Context(), ws, prod, m, rules)
	must(t, err)
	return p
}

func treeHash(t testing.TB, dir string) string {
	t.Helper()
	h, err := TreeHash(dir)
	must(t, err)
	return h
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return string(b)
}

func wantCode(t testing.TB, err error, code events.Code) {
	t.Helper()
	if got := events.ErrorCode(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

// deploy runs a whole sync: Diff, Backup into state/<name>, Apply,
// manifest update.
func deploy(t testing.TB, ws, prod, state, name string, m *Manifest) *Plan {
	t.Helper()
	p := diff(t, ws, prod, m)
	must(t, Backup(t.Context(), prod, p, filepath.Join(state, name)))
	must(t, Apply(t.Context(), ws, prod, p, nil))
	m.Apply(p)
	return p
}

var errStop = errors.New("stopped by the test")

// cancelAfter returns a context and a progress callback that cancels it
// once n paths are done.
func cancelAfter(t testing.TB, n int) (context.Context, func(done, total int)) {
	ctx, cancel := context.WithCancelCause(t.Context())
	t.Cleanup(func() { cancel(nil) })
	return ctx, func(done, total int) {
		if done >= n {
			cancel(errStop)
		}
	}
}
