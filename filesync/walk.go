package filesync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/berth-ops/berth/events"
)

// visitFunc is called for each entry of a walk with the directory the entry
// is in (as a Root), the entry's path relative to the top and its Lstat
// information. It returns whether to descend into a directory.
type visitFunc func(dir *os.Root, rel string, fi fs.FileInfo) (descend bool, err error)

// walkTree visits every entry below dir (whose path is rel, "" for the top)
// in name order, without following symbolic links. Each directory is opened
// as a Root of its own, so every lookup is one path component relative to
// an open directory: nothing in the tree can redirect the walk elsewhere.
// Berth's temporary files are skipped unless withTemps. A nil ctx is never
// cancelled.
func walkTree(ctx context.Context, dir *os.Root, rel string, withTemps bool, visit visitFunc) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	f, err := dir.Open(".")
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("reading directory %q: %w", displayRel(rel), err)
	}
	slices.Sort(names)
	for _, name := range names {
		if !withTemps && strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		fi, err := dir.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed while we walk: as if it had not been there
		}
		if err != nil {
			return err
		}
		child := joinRel(rel, name)
		descend, err := visit(dir, child, fi)
		if err != nil {
			return err
		}
		if !descend || !fi.IsDir() {
			continue
		}
		sub, err := dir.OpenRoot(name)
		if err != nil {
			return fmt.Errorf("opening directory %q: %w", child, err)
		}
		if st, err := sub.Stat("."); err != nil || !os.SameFile(st, fi) {
			sub.Close()
			return fmt.Errorf("directory %q was replaced while being read; try again", child)
		}
		err = walkTree(ctx, sub, child, withTemps, visit)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func displayRel(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// parentRel is the directory of rel, "." at the top.
func parentRel(rel string) string { return path.Dir(rel) }

// validRel reports whether rel is a clean relative path below the top, as
// Diff produces them: plans can be decoded from elsewhere.
func validRel(rel string) bool {
	return rel != "." && fs.ValidPath(rel) && !strings.HasPrefix(path.Base(rel), tmpPrefix)
}

func ctxErr(ctx context.Context) error {
	if ctx == nil {
		return nil
	}
	return ctx.Err()
}

// hashFile returns the hex SHA-256 of the regular file rel in root, and its
// size; a file that is no longer regular is an error. A nil ctx is never
// cancelled.
func hashFile(ctx context.Context, root *os.Root, rel string, buf []byte) (string, int64, error) {
	f, err := root.OpenFile(rel, readFlags, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s is no longer a regular file", rel)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, ctxReader{ctx, f}, buf)
	if err != nil {
		return "", 0, fmt.Errorf("reading %s: %w", rel, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ctxReader stops a long copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := ctxErr(c.ctx); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

const copyBufSize = 256 << 10

// lazyBuf is a copy buffer, made on first use: most of the files Diff
// compares by content have their hash in a cache.
type lazyBuf struct{ b []byte }

func (l *lazyBuf) get() []byte {
	if l.b == nil {
		l.b = make([]byte, copyBufSize)
	}
	return l.b
}

// parallel runs fn(i) for i in [0, n) on at most GOMAXPROCS goroutines, each
// with its copy buffer, and returns the first error; after an error the
// remaining calls are skipped.
func parallel(ctx context.Context, n int, fn func(ctx context.Context, i int, buf *lazyBuf) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := min(runtime.GOMAXPROCS(0), n)
	next := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Go(func() {
			var buf lazyBuf
			for i := range next {
				if ctx.Err() != nil {
					continue
				}
				if err := fn(ctx, i, &buf); err != nil {
					once.Do(func() { first = err; cancel(err) })
				}
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	return context.Cause(ctx)
}

// openError describes a workspace or production directory that cannot be
// opened.
func openError(what, dir string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return events.Errorf(events.CodeBadRequest, "the %s directory %s does not exist", what, dir).
			WithHint("create it, or fix the project's configuration with config.set")
	}
	return fmt.Errorf("opening the %s directory %s: %w", what, dir, err)
}

// overlapping reports whether one of two directories contains the other
// (as written, after cleaning): syncing them into each other would recurse.
func overlapping(a, b string) bool {
	a, errA := filepath.Abs(a)
	b, errB := filepath.Abs(b)
	if errA != nil || errB != nil {
		return false
	}
	inside := func(x, y string) bool {
		rel, err := filepath.Rel(y, x)
		return err == nil && filepath.IsLocal(rel) || rel == "."
	}
	return inside(a, b) || inside(b, a)
}
