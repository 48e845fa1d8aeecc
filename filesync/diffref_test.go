//go:build unix

package filesync

import (
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// randomScenario writes a workspace and a production made from one base
// tree, each changed its own way (contents of the same or another size,
// times, modes, removals, additions, files become directories and back,
// symbolic links in and out of the tree, FIFOs, excluded names), and
// returns a manifest of some of their paths and extra rule lines.
func randomScenario(t *testing.T, rng *rand.Rand, ws, prod string) (*Manifest, []string) {
	t.Helper()
	names := []string{"a", "b", "c", "d.txt", "e.go", "keep.log", "app.log", "tmp", "data", ".env", "node_modules",
		"__pycache__", "x.pyc", ".git", ".berth-tmp-q", "z"}
	contents := []string{"one", "onf", "two", "three", "", "a longer content here"}
	times := []time.Time{baseTime, baseTime.Add(time.Second), baseTime.Add(time.Hour)}
	modes := []fs.FileMode{0o644, 0o644, 0o755, 0o600, 0o4755}
	targets := []string{"a", "../a", "../../../../etc", "/etc/passwd", "b/..", ".", "nowhere", "d.txt", "c/../a"}

	type node struct {
		kind    kind
		content string
		mode    fs.FileMode
		mtime   time.Time
		target  string
	}
	randFile := func() node {
		return node{kind: kindFile, content: contents[rng.IntN(len(contents))], mode: modes[rng.IntN(len(modes))], mtime: times[rng.IntN(len(times))]}
	}
	base := map[string]node{}
	var gen func(dir string, depth int)
	gen = func(dir string, depth int) {
		for range 1 + rng.IntN(5) {
			rel := path.Join(dir, names[rng.IntN(len(names))])
			if _, ok := base[rel]; ok {
				continue
			}
			switch r := rng.IntN(10); {
			case r < 3 && depth < 3:
				base[rel] = node{kind: kindDir}
				gen(rel, depth+1)
			case r < 4:
				base[rel] = node{kind: kindSymlink, target: targets[rng.IntN(len(targets))]}
			default:
				base[rel] = randFile()
			}
		}
	}
	gen("", 0)

	variant := func() map[string]node {
		v := map[string]node{}
		for rel, n := range base {
			v[rel] = n
		}
		for _, rel := range sortedKeys(v) {
			n := v[rel]
			if n.kind == kindDir {
				continue
			}
			switch rng.IntN(14) {
			case 0: // same size, other bytes
				n.content = strings.Map(func(r rune) rune { return r + 1 }, n.content)
			case 1:
				n.content += "+"
			case 2:
				n.mtime = n.mtime.Add(time.Minute)
			case 3:
				n.mode = modes[rng.IntN(len(modes))]
			case 4:
				delete(v, rel)
				continue
			case 5:
				if n.kind == kindSymlink {
					n.target = targets[rng.IntN(len(targets))]
				}
			}
			v[rel] = n
		}
		for range rng.IntN(4) {
			dirs := []string{""}
			for _, rel := range sortedKeys(v) {
				if v[rel].kind == kindDir {
					dirs = append(dirs, rel)
				}
			}
			rel := path.Join(dirs[rng.IntN(len(dirs))], names[rng.IntN(len(names))])
			old, exists := v[rel]
			switch {
			case !exists:
				v[rel] = randFile()
			case old.kind != kindDir && rng.IntN(2) == 0:
				v[rel] = node{kind: kindDir}
				v[path.Join(rel, "inner")] = randFile()
			}
		}
		if rng.IntN(15) == 0 {
			v[names[rng.IntN(len(names))]+".fifo"] = node{kind: kindOther}
		}
		return v
	}

	write := func(top string, v map[string]node) {
		for _, rel := range sortedKeys(v) { // parents first
			n := v[rel]
			p := filepath.Join(top, rel)
			if fi, err := os.Lstat(filepath.Dir(p)); err != nil || !fi.IsDir() {
				continue // its parent became a file in this variant
			}
			switch n.kind {
			case kindDir:
				must(t, os.Mkdir(p, 0o755))
			case kindSymlink:
				must(t, os.Symlink(n.target, p))
			case kindOther:
				must(t, syscall.Mkfifo(p, 0o644))
			default:
				must(t, os.WriteFile(p, []byte(n.content), 0o600))
				must(t, os.Chmod(p, n.mode))
				must(t, os.Chtimes(p, n.mtime, n.mtime))
			}
		}
	}
	write(ws, variant())
	write(prod, variant())

	m := &Manifest{Files: map[string]FileMeta{}}
	for _, rel := range sortedKeys(base) {
		if rng.IntN(2) == 0 {
			continue
		}
		meta := FileMeta{Size: 3, Mode: 0o644, MTime: baseTime}
		if fi, err := os.Lstat(filepath.Join(prod, rel)); err == nil && rng.IntN(3) > 0 {
			meta = FileMeta{Size: fi.Size(), Mode: fi.Mode(), MTime: fi.ModTime()}
			if fi.Mode().IsRegular() {
				sum, _, err := hashFile(nil, mustRoot(t, prod), rel, make([]byte, 1024))
				must(t, err)
				meta.Hash = sum
				if rng.IntN(4) == 0 {
					meta.Hash = strings.Repeat("0", 64) // a wrong record is trusted alike
				}
			}
		}
		m.Files[rel] = meta
	}
	m.Files["gone/never/there"] = FileMeta{}
	var extra []string
	pool := []string{"*.log", "!keep.log", "tmp/", "/data", "!.env", "a/*.txt", "!node_modules", "c", "!*.pyc", "*/inner", "**/z"}
	for range rng.IntN(3) {
		extra = append(extra, pool[rng.IntN(len(pool))])
	}
	if rng.IntN(5) == 0 {
		must(t, os.WriteFile(filepath.Join(ws, IgnoreFile), []byte(strings.Join(extra, "\n")), 0o644))
		extra = nil
	}
	return m, extra
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func mustRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	must(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

func samePlan(t *testing.T, what string, got, want *Plan) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: the plan differs from the reference\ngot  %+v\nwant %+v\nsynced got  %v\nsynced want %v\nforgotten %q / %q",
			what, got.Summary(-1), want.Summary(-1), got.synced, want.synced, got.forgotten, want.forgotten)
	}
}

// TestDiffMatchesReference compares Diff with refDiff, the engine as it
// was before the parallel walk, the rules' fast path and the hash cache,
// on generated trees: the same plans, to the last field, with and without a
// cache, cold and warm, and after changes of files the cache knows.
func TestDiffMatchesReference(t *testing.T) {
	// Files count as written long ago, so the cache takes them (the
	// changes below are made in later clock ticks).
	defer func(c func() time.Time) { hashClock = c }(hashClock)
	hashClock = func() time.Time { return time.Now().Add(time.Hour) }

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FILESYNC_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("FILESYNC_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	n := 120
	if testing.Short() {
		n = 30
	}
	if s := os.Getenv("FILESYNC_SCENARIOS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	base := t.TempDir()
	changed := 0
	for i := range n {
		ws, prod := filepath.Join(base, fmt.Sprint("ws", i)), filepath.Join(base, fmt.Sprint("prod", i))
		must(t, os.Mkdir(ws, 0o755))
		must(t, os.Mkdir(prod, 0o755))
		m, extra := randomScenario(t, rng, ws, prod)
		rules, err := LoadRules(ws, extra...)
		must(t, err)
		what := fmt.Sprintf("scenario %d (extra %q)", i, extra)
		want, err := refDiff(t.Context(), ws, prod, m, rules)
		must(t, err)
		cache := NewHashCache(0)
		for j, opts := range [][]DiffOption{{WithHashCache(nil)}, nil, {WithHashCache(cache)}, {WithHashCache(cache)}} {
			got, err := Diff(t.Context(), ws, prod, m, rules, opts...)
			must(t, err)
			if !reflect.DeepEqual(got, want) {
				out, _ := exec.Command("find", ws, prod, "-printf", "%p %y\n").Output()
				t.Logf("%s", out)
			}
			samePlan(t, fmt.Sprint(what, " run ", j), got, want)
		}

		// Change files the cache may know: same size and time, other
		// bytes (only their change time and inode tell).
		time.Sleep(5 * time.Millisecond)
		for _, top := range []string{ws, prod} {
			must(t, filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() || rng.IntN(3) > 0 {
					return err
				}
				fi, err := d.Info()
				if err != nil {
					return err
				}
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				for k := range data {
					data[k] ^= 0x20
				}
				must(t, os.WriteFile(p, data, fi.Mode()))
				must(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))
				changed++
				return nil
			}))
		}
		want, err = refDiff(t.Context(), ws, prod, m, rules)
		must(t, err)
		got, err := Diff(t.Context(), ws, prod, m, rules, WithHashCache(cache))
		must(t, err)
		samePlan(t, what+" after changes", got, want)
	}
	t.Logf("%d scenarios, %d files changed behind the cache", n, changed)
}
