//go:build unix

package filesync

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	benchTrees.Lock()
	if benchTrees.base != "" {
		os.RemoveAll(benchTrees.base)
	}
	benchTrees.Unlock()
	os.Exit(code)
}

// BenchmarkDiff diffs two trees that production has, with 50 files changed
// in the workspace: the common case of a deploy, mostly stat calls.
//
//   - 5000: 5 000 files in 100 directories, all in the manifest;
//   - 20000: the shape of the performance table's row P3 (bench/README.md)
//     with small contents: 20 000 files in 400 directories nested up to 5
//     deep, excluded .git, node_modules, __pycache__ and .env entries, no
//     manifest; 25 changed files grew by a line, 25 were rewritten with
//     the same size (so production's content must be read too).
//
// Each tree is generated once per benchmark run (see benchTree). Diff
// uses the process's hash cache, so from the second run on the changed
// files are not read again (as when a plan is confirmed); 20000-nocache
// reads them every time.
func BenchmarkDiff(b *testing.B) {
	b.Run("5000", func(b *testing.B) {
		t := benchTree(b, "5000", make5000)
		benchDiff(b, t, nil)
	})
	b.Run("20000", func(b *testing.B) {
		t := benchTree(b, "20000", make20000)
		benchDiff(b, t, nil)
	})
	// Without a hash cache the 75 changed files are read every time (as
	// by the first plan of a change).
	b.Run("20000-nocache", func(b *testing.B) {
		t := benchTree(b, "20000", make20000)
		benchDiff(b, t, func() []DiffOption { return []DiffOption{WithHashCache(nil)} })
	})
}

// diffBench is a generated workspace and production for BenchmarkDiff.
type diffBench struct {
	WS, Prod string
	M        *Manifest // nil: nothing deployed yet
	Modified int       // the number of modified files Diff must find
}

// benchTrees keeps the generated trees for the whole test binary run: a
// sub-benchmark's function is called several times (once per b.N tried,
// and per -count), the tree is made the first time. TestMain removes them.
//
// With FILESYNC_BENCH_DIR set, the trees are made there, kept, and reused
// by later runs (to compare two builds on the same trees).
var benchTrees struct {
	sync.Mutex
	base  string
	trees map[string]*diffBench
}

func benchTree(b *testing.B, name string, gen func(tb testing.TB, dir string) *diffBench) *diffBench {
	b.Helper()
	benchTrees.Lock()
	defer benchTrees.Unlock()
	if t := benchTrees.trees[name]; t != nil {
		return t
	}
	if benchTrees.trees == nil {
		benchTrees.trees = map[string]*diffBench{}
	}
	keep := os.Getenv("FILESYNC_BENCH_DIR")
	base := keep
	if base == "" {
		if benchTrees.base == "" {
			dir, err := os.MkdirTemp("", "filesync-bench-")
			must(b, err)
			benchTrees.base = dir
		}
		base = benchTrees.base
	}
	dir := filepath.Join(base, name)
	done := filepath.Join(dir, "done.json")
	var t *diffBench
	if data, err := os.ReadFile(done); err == nil {
		t = &diffBench{}
		must(b, json.Unmarshal(data, t))
	} else {
		must(b, os.RemoveAll(dir))
		must(b, os.MkdirAll(dir, 0o755))
		start := time.Now()
		t = gen(b, dir)
		// Written out now, so that writeback does not run during the
		// measurements.
		syscall.Sync()
		b.Logf("tree %s generated in %v", name, time.Since(start).Round(time.Millisecond))
		if keep != "" {
			data, err := json.Marshal(t)
			must(b, err)
			must(b, os.WriteFile(done, data, 0o644))
		}
	}
	benchTrees.trees[name] = t
	return t
}

func benchDiff(b *testing.B, t *diffBench, opts func() []DiffOption) {
	rules, err := LoadRules(t.WS)
	must(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var o []DiffOption
		if opts != nil {
			o = opts()
		}
		p, err := Diff(b.Context(), t.WS, t.Prod, t.M, rules, o...)
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Modified) != t.Modified || len(p.Added) != 0 || len(p.Deleted) != 0 || len(p.Refused) != 0 {
			b.Fatalf("%d modified, %d added, %d deleted, %d refused; want %d modified",
				len(p.Modified), len(p.Added), len(p.Deleted), len(p.Refused), t.Modified)
		}
	}
}

// make5000 is 5 000 files in 100 directories, all deployed (in the
// manifest), 50 of them changed in the workspace.
func make5000(tb testing.TB, dir string) *diffBench {
	t := &diffBench{WS: filepath.Join(dir, "ws"), Prod: filepath.Join(dir, "prod"), Modified: 50}
	content := []byte(strings.Repeat("some source code\n", 64))
	t.M = &Manifest{Files: map[string]FileMeta{}}
	for d := range 100 {
		for f := range 50 {
			rel := fmt.Sprintf("pkg%03d/file%02d.go", d, f)
			for _, root := range []string{t.WS, t.Prod} {
				writeBenchFile(tb, filepath.Join(root, rel), content, baseTime)
			}
			t.M.Files[rel] = FileMeta{Size: int64(len(content)), Mode: 0o644, MTime: baseTime}
		}
	}
	changed := []byte(strings.Repeat("some changed code\n", 64))
	for i := range 50 {
		p := filepath.Join(t.WS, fmt.Sprintf("pkg%03d/file%02d.go", i*2, i%50))
		writeBenchFile(tb, p, changed, baseTime.Add(time.Minute))
	}
	return t
}

// make20000 is the shape of bench's deploy tree (row P3) with smaller
// contents (64 B to 8 KB): 20 000 files in 400 directories nested up to 5
// deep, excluded entries, production a copy (same contents, modes and
// times), then 50 workspace files changed: 25 grow by a line, 25 get other
// bytes of the same size; both with a later time. No manifest.
func make20000(tb testing.TB, dir string) *diffBench {
	t := &diffBench{WS: filepath.Join(dir, "ws"), Prod: filepath.Join(dir, "prod"), Modified: 50}
	rng := rand.New(rand.NewPCG(2026, 3))
	noise := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{3}).Read(noise)
	chunk := func(size int64) []byte {
		off := rng.Int64N(int64(len(noise)) - size + 1)
		return noise[off : off+size]
	}
	top := []string{"src", "lib", "assets", "docs", "config", "static", "templates", "migrations", "tests", "scripts"}
	dirs := slices.Clone(top)
	for i := len(dirs); i < 400; i++ {
		parent := dirs[rng.IntN(len(dirs))]
		for strings.Count(parent, "/") >= 4 {
			parent = dirs[rng.IntN(len(dirs))]
		}
		dirs = append(dirs, path.Join(parent, fmt.Sprintf("pkg%03d", i)))
	}
	exts := []string{"go", "js", "ts", "py", "css", "html", "json", "md", "txt", "svg", "png", "yaml"}
	var small []string
	put := func(rel string, data []byte) {
		for _, root := range []string{t.WS, t.Prod} {
			writeBenchFile(tb, filepath.Join(root, rel), data, baseTime)
		}
	}
	for i := range 20000 {
		size := int64(64 * math.Pow(2, rng.Float64()*7)) // 64 B .. 8 KB
		rel := path.Join(dirs[rng.IntN(len(dirs))], fmt.Sprintf("f%05d.%s", i, exts[rng.IntN(len(exts))]))
		put(rel, chunk(size))
		small = append(small, rel)
	}
	for i := range 200 {
		put(fmt.Sprintf(".git/objects/%02x/%038x", i%256, i), chunk(1+rng.Int64N(4096)))
	}
	for i := range 150 {
		put(fmt.Sprintf("node_modules/pkg%03d/index.js", i), chunk(1+rng.Int64N(8192)))
		put(fmt.Sprintf("node_modules/pkg%03d/package.json", i), chunk(200))
	}
	for i := range 20 {
		put(fmt.Sprintf("src/__pycache__/m%02d.cpython-312.pyc", i), chunk(2048))
	}
	put(".env", []byte("SECRET=not-deployed\n"))
	for j, i := range rng.Perm(len(small))[:t.Modified] {
		p := filepath.Join(t.WS, small[i])
		data, err := os.ReadFile(p)
		must(tb, err)
		if j%2 == 0 {
			data = append(data, "\n// changed by the benchmark\n"...)
		} else {
			for k := range data {
				data[k] ^= 0xff
			}
		}
		writeBenchFile(tb, p, data, baseTime.Add(2*time.Second))
	}
	return t
}

func writeBenchFile(tb testing.TB, p string, data []byte, mtime time.Time) {
	if err := os.WriteFile(p, data, 0o644); err != nil {
		must(tb, os.MkdirAll(filepath.Dir(p), 0o755))
		must(tb, os.WriteFile(p, data, 0o644))
	}
	must(tb, os.Chtimes(p, mtime, mtime))
}
