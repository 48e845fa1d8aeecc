//go:build linux

package filesync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(entries)
}

// recordWalk walks top with walkParallel and returns every entry's path
// and mode, and whether each directory's entries came in name order.
func recordWalk(ctx context.Context, top string, visit func(d *walkDir, list []fs.DirEntry) error) (map[string]fs.FileMode, error) {
	root, err := os.OpenRoot(top)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var mu sync.Mutex
	seen := map[string]fs.FileMode{}
	err = walkParallel(ctx, &walkTop{what: "the tree", root: root, visit: func(d *walkDir, list []fs.DirEntry) ([]subdir, error) {
		if !slices.IsSortedFunc(list, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) }) {
			return nil, fmt.Errorf("%s: entries not in name order", d.rel)
		}
		if visit != nil {
			if err := visit(d, list); err != nil {
				return nil, err
			}
		}
		var subs []subdir
		mu.Lock()
		defer mu.Unlock()
		for _, e := range list {
			fi, err := e.Info()
			if err != nil {
				return nil, err
			}
			seen[joinRel(d.rel, e.Name())] = fi.Mode()
			if e.IsDir() {
				subs = append(subs, subdir{entry: e})
			}
		}
		return subs, nil
	}})
	return seen, err
}

func TestWalkParallelMatchesWalkTree(t *testing.T) {
	top := t.TempDir()
	tr := tree{}
	deep := "d"
	for i := range 40 {
		deep += fmt.Sprintf("/l%d", i)
		tr[deep+"/f"] = "x"
	}
	for i := range 300 {
		tr[fmt.Sprintf("w%03d/s%d/f%d", i, i%7, i)] = "y"
		if i%10 == 0 {
			tr[fmt.Sprintf("w%03d/link", i)] = "@../d"
			tr[fmt.Sprintf("w%03d/empty/", i)] = ""
			tr[fmt.Sprintf("w%03d/%sleft", i, tmpPrefix)] = "temporary"
		}
	}
	build(t, top, tr)
	before := openFDs(t)
	defer func(n int) { walkersPerCore = n }(walkersPerCore)
	for _, perCore := range []int{1, 4, 16} {
		walkersPerCore = perCore
		got, err := recordWalk(t.Context(), top, nil)
		must(t, err)
		want := map[string]fs.FileMode{}
		root, err := os.OpenRoot(top)
		must(t, err)
		must(t, walkTree(nil, root, "", false, func(_ *os.Root, rel string, fi fs.FileInfo) (bool, error) {
			want[rel] = fi.Mode()
			return true, nil
		}))
		root.Close()
		if len(got) != len(want) || len(got) < 1000 {
			t.Fatalf("%d entries walked, walkTree found %d", len(got), len(want))
		}
		for rel, mode := range want {
			if got[rel] != mode {
				t.Errorf("%s: mode %v, walkTree %v", rel, got[rel], mode)
			}
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d open files before the walks, %d after", before, after)
	}
}

func TestWalkParallelErrors(t *testing.T) {
	top := t.TempDir()
	tr := tree{}
	for i := range 50 {
		tr[fmt.Sprintf("a%02d/b/c/f", i)] = "x"
	}
	tr["z/sub/f"] = "x"
	tr["other/f"] = "x"
	build(t, top, tr)
	before := openFDs(t)

	t.Run("visitor error stops the walk and closes every directory", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := recordWalk(t.Context(), top, func(d *walkDir, _ []fs.DirEntry) error {
			if d.rel == "a17/b" {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "reading the tree: ") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := recordWalk(ctx, top, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v", err)
		}
	})
	// Listed as a directory, something else by the time it is opened.
	for name, c := range map[string]struct {
		replace func(sub string) error
		want    string
	}{
		"a link inside its parent": {func(sub string) error { return os.Symlink("other", sub) }, `directory "z/sub" was replaced while being read`},
		"a link out of its parent": {func(sub string) error { return os.Symlink("../a00", sub) }, "path escapes from parent"},
		"another directory":        {func(sub string) error { return os.Mkdir(sub, 0o755) }, `directory "z/sub" was replaced while being read`},
	} {
		t.Run(name, func(t *testing.T) {
			sub := filepath.Join(top, "z/sub")
			_, err := recordWalk(t.Context(), top, func(d *walkDir, _ []fs.DirEntry) error {
				if d.rel != "z" {
					return nil
				}
				if err := os.Rename(sub, filepath.Join(top, "z.sub")); err != nil {
					return err
				}
				if err := os.MkdirAll(filepath.Join(top, "z/other"), 0o755); err != nil {
					return err
				}
				return c.replace(sub)
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
			must(t, os.RemoveAll(sub))
			must(t, os.Rename(filepath.Join(top, "z.sub"), sub))
		})
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d open files before, %d after", before, after)
	}
}
