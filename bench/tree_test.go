package bench

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/berth-ops/berth/filesync"
)

// The generated deploy tree of rows P3 and P4.
const (
	treeFiles   = 20000     // files Berth syncs
	treeBytes   = 300 << 20 // their total size
	treeDirs    = 400       // directories, nested up to 5 deep
	treeChanged = 50        // workspace files modified after the copy
)

// treeLarge are the sizes of the few large files (150 MB together); the
// other 19 992 files share the other 150 MB, log-uniformly between 64 B and
// 64 KB before scaling (about 7.9 KB on average).
var treeLarge = []int64{40 << 20, 30 << 20, 25 << 20, 20 << 20, 15 << 20, 10 << 20, 5 << 20, 5 << 20}

// rsyncExcludes are Berth's default and hard exclusion rules (filesync:
// .git, node_modules/, .env, __pycache__/, *.pyc, and its own temporary
// files) as rsync options.
var rsyncExcludes = []string{
	"--exclude=.git", "--exclude=.berth-tmp-*", "--exclude=.env",
	"--exclude=node_modules/", "--exclude=__pycache__/", "--exclude=*.pyc",
}

// tree is a generated workspace and its production copy, in which
// treeChanged workspace files were then modified.
type tree struct {
	ws, prod string
	changed  []string
	orig     []origFile // production's changed files before any sync
	origDirs []origFile // and their directories' times
}

type origFile struct {
	rel   string
	data  []byte
	mode  fs.FileMode
	mtime time.Time
}

// makeTree writes the workspace (20 000 files, 300 MB, in 400 nested
// directories, plus excluded .git, node_modules, __pycache__ and .env
// entries), copies it to production with `cp -a` (same contents, modes and
// times), then modifies 50 small workspace files: 25 grow by a line, 25 are
// rewritten with other bytes of the same size. Deterministic (fixed seed).
func makeTree(tb testing.TB) *tree {
	tb.Helper()
	start := time.Now()
	base := tb.TempDir()
	t := &tree{ws: filepath.Join(base, "workspace"), prod: filepath.Join(base, "production")}
	rng := rand.New(rand.NewPCG(2026, 11))
	noise := make([]byte, 8<<20)
	_, _ = rand.NewChaCha8([32]byte{1, 2, 3}).Read(noise)
	chunk := func(size int64) []byte {
		off := rng.Int64N(int64(len(noise)) - size + 1)
		return noise[off : off+size]
	}

	// Directories.
	top := []string{"src", "lib", "assets", "docs", "config", "static", "templates", "migrations", "tests", "scripts"}
	dirs := slices.Clone(top)
	for i := len(dirs); i < treeDirs; i++ {
		parent := dirs[rng.IntN(len(dirs))]
		for depth(parent) >= 5 {
			parent = dirs[rng.IntN(len(dirs))]
		}
		dirs = append(dirs, path.Join(parent, fmt.Sprintf("pkg%03d", i)))
	}
	dirs = append(dirs, "assets/media")
	for _, d := range dirs {
		mkdir(tb, filepath.Join(t.ws, d))
	}

	// Large files.
	for i, size := range treeLarge {
		f, err := os.Create(filepath.Join(t.ws, "assets/media", fmt.Sprintf("big%d.bin", i)))
		if err != nil {
			tb.Fatal(err)
		}
		for left := size; left > 0; {
			n := min(left, int64(len(noise))/2)
			if _, err := f.Write(chunk(n)); err != nil {
				tb.Fatal(err)
			}
			left -= n
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
	}

	// Small files, sized log-uniformly then scaled to the remaining bytes.
	nSmall := treeFiles - len(treeLarge)
	var largeTotal int64
	for _, s := range treeLarge {
		largeTotal += s
	}
	sizes := make([]float64, nSmall)
	var sum float64
	for i := range sizes {
		sizes[i] = 64 * math.Pow(2, rng.Float64()*10) // 64 B .. 64 KB
		sum += sizes[i]
	}
	scale := float64(treeBytes-largeTotal) / sum
	exts := []string{"go", "js", "ts", "py", "css", "html", "json", "md", "txt", "svg", "png", "yaml"}
	var written int64
	var small []string
	for i := range nSmall {
		size := int64(sizes[i] * scale)
		if i == nSmall-1 {
			size = treeBytes - largeTotal - written
		}
		size = max(size, 1)
		rel := path.Join(dirs[rng.IntN(len(dirs)-1)], fmt.Sprintf("f%05d.%s", i, exts[rng.IntN(len(exts))]))
		writeFile(tb, filepath.Join(t.ws, rel), chunk(size))
		written += size
		small = append(small, rel)
	}

	// Excluded entries, present in both trees.
	for i := range 200 {
		writeFile(tb, filepath.Join(t.ws, ".git/objects", fmt.Sprintf("%02x", i%256), fmt.Sprintf("%038x", i)), chunk(1+rng.Int64N(4096)))
	}
	for i := range 150 {
		writeFile(tb, filepath.Join(t.ws, "node_modules", fmt.Sprintf("pkg%03d", i), "index.js"), chunk(1+rng.Int64N(8192)))
		writeFile(tb, filepath.Join(t.ws, "node_modules", fmt.Sprintf("pkg%03d", i), "package.json"), chunk(200))
	}
	for i := range 20 {
		writeFile(tb, filepath.Join(t.ws, "src/__pycache__", fmt.Sprintf("m%02d.cpython-312.pyc", i)), chunk(2048))
	}
	writeFile(tb, filepath.Join(t.ws, ".env"), []byte("SECRET=not-deployed\n"))

	copyDir(tb, t.ws, t.prod)

	// The changes, and what production looks like before a sync.
	for _, i := range rng.Perm(len(small))[:treeChanged] {
		t.changed = append(t.changed, small[i])
	}
	slices.Sort(t.changed)
	dirSeen := map[string]bool{}
	for j, rel := range t.changed {
		p := filepath.Join(t.prod, rel)
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			tb.Fatal(err)
		}
		t.orig = append(t.orig, origFile{rel: rel, data: data, mode: fi.Mode().Perm(), mtime: fi.ModTime()})
		if d := path.Dir(rel); !dirSeen[d] {
			dirSeen[d] = true
			di, err := os.Stat(filepath.Join(t.prod, d))
			if err != nil {
				tb.Fatal(err)
			}
			t.origDirs = append(t.origDirs, origFile{rel: d, mtime: di.ModTime()})
		}
		nw := slices.Clone(data)
		if j%2 == 0 {
			nw = append(nw, "\n// changed by the benchmark\n"...)
		} else {
			for k := range nw {
				nw[k] ^= 0xff
			}
		}
		wp := filepath.Join(t.ws, rel)
		if err := os.WriteFile(wp, nw, 0o644); err != nil {
			tb.Fatal(err)
		}
		later := fi.ModTime().Add(2 * time.Second)
		if err := os.Chtimes(wp, later, later); err != nil {
			tb.Fatal(err)
		}
	}
	// Write the 600 MB out now, so that writeback does not run during
	// the measurements.
	syscall.Sync()
	tb.Logf("deploy tree: %d files, %d MB, %d changed, in %v", treeFiles, treeBytes>>20, treeChanged, time.Since(start).Round(time.Millisecond))
	return t
}

// reset puts production's changed files (contents, modes, times) and their
// directories' times back as they were before a sync.
func (t *tree) reset(tb testing.TB) {
	tb.Helper()
	for _, o := range t.orig {
		p := filepath.Join(t.prod, o.rel)
		if err := os.WriteFile(p, o.data, o.mode); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chmod(p, o.mode); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chtimes(p, o.mtime, o.mtime); err != nil {
			tb.Fatal(err)
		}
	}
	for _, d := range t.origDirs {
		if err := os.Chtimes(filepath.Join(t.prod, d.rel), d.mtime, d.mtime); err != nil {
			tb.Fatal(err)
		}
	}
}

// berthPlan is what the worker runs to plan a deploy: the workspace's rules,
// then Diff (no manifest: nothing deployed yet).
func (t *tree) berthPlan(tb testing.TB) *filesync.Plan {
	tb.Helper()
	rules, err := filesync.LoadRules(t.ws)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := filesync.Diff(context.Background(), t.ws, t.prod, nil, rules)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// checkPlan checks a plan finds exactly the changes.
func (t *tree) checkPlan(tb testing.TB, p *filesync.Plan) {
	tb.Helper()
	if len(p.Modified) != treeChanged || len(p.Added) != 0 || len(p.Deleted) != 0 || len(p.Refused) != 0 {
		tb.Fatalf("plan: %d modified, %d added, %d deleted, %d refused; want %d modified only",
			len(p.Modified), len(p.Added), len(p.Deleted), len(p.Refused), treeChanged)
	}
}

// rsyncPlan is `rsync -a --dry-run --itemize-changes` with the same
// exclusions; it returns the number of files rsync would transfer.
func (t *tree) rsyncPlan(tb testing.TB) int {
	tb.Helper()
	args := append([]string{"-a", "--dry-run", "--itemize-changes"}, rsyncExcludes...)
	out := output(tb, "", "rsync", append(args, t.ws+"/", t.prod+"/")...)
	n := 0
	for _, line := range bytes.Split(out, []byte{'\n'}) {
		if bytes.HasPrefix(line, []byte(">f")) {
			n++
		}
	}
	return n
}

// berthApply is the worker's sync step.
func (t *tree) berthApply(tb testing.TB, p *filesync.Plan) {
	tb.Helper()
	if err := filesync.Apply(context.Background(), t.ws, t.prod, p, nil); err != nil {
		tb.Fatal(err)
	}
}

// rsyncApply is `rsync -a` with the same exclusions.
func (t *tree) rsyncApply(tb testing.TB) {
	tb.Helper()
	runCmd(tb, "", "rsync", append(append([]string{"-a"}, rsyncExcludes...), t.ws+"/", t.prod+"/")...)
}

// checkSynced checks production has the workspace's changes.
func (t *tree) checkSynced(tb testing.TB) {
	tb.Helper()
	if p := t.berthPlan(tb); !p.Empty() {
		tb.Fatalf("production still differs after the sync: %d modified", len(p.Modified))
	}
}

func depth(rel string) int { return bytes.Count([]byte(rel), []byte{'/'}) + 1 }

func mkdir(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
}

func writeFile(tb testing.TB, p string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		if os.IsNotExist(err) {
			mkdir(tb, filepath.Dir(p))
			err = os.WriteFile(p, data, 0o644)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}
