package filesync

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// A dirVisitor is called once for each directory of a parallel walk, with
// the directory (as a Root of its own) and its entries in name order,
// Berth's temporary files left out. Every entry's Info is already known (a
// File opened in a Root reads each entry's Lstat along with the directory,
// through the open directory). It returns the subdirectories to walk, each
// with the visitor's data for it. Calls for different directories run
// concurrently.
type dirVisitor func(dir *walkDir, entries []fs.DirEntry) ([]subdir, error)

// walkDir is a directory being visited.
type walkDir struct {
	root *os.Root
	rel  string // "" for the top
	data any    // from the subdir that led here; the walk's for the top
}

// subdir is a subdirectory a visitor wants walked.
type subdir struct {
	entry fs.DirEntry
	data  any
}

// walkTop is a tree for walkParallel: what it is (for errors), its top
// directory, opened by the caller (and not closed by the walk), the visitor
// and its data for the top.
type walkTop struct {
	what  string
	root  *os.Root
	visit dirVisitor
	data  any
}

// walkParallel walks every tree of tops at the same time, with a bounded
// number of goroutines reading directories: the calls are latency-bound
// (getdents and one fstatat an entry), so a few per core keep the cores
// busy. As in walkTree, every directory is opened as a Root of its own
// through its parent's and checked to be the very directory its parent
// listed (not a symbolic link, nor another directory put in its place), so
// nothing in a tree can redirect the walk. It returns the first error
// ("reading <what>: ..."); the walk then stops, and every directory it
// opened is closed.
func walkParallel(ctx context.Context, tops ...*walkTop) error {
	w := &walker{ctx: ctx}
	w.cond = sync.NewCond(&w.mu)
	for _, t := range tops {
		w.stack = append(w.stack, walkTask{tree: t, data: t.data})
	}
	w.pending = len(w.stack)
	workers := max(1, runtime.GOMAXPROCS(0)*walkersPerCore)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(w.work)
	}
	wg.Wait()
	return w.err
}

type walker struct {
	ctx     context.Context
	mu      sync.Mutex
	cond    *sync.Cond
	stack   []walkTask // last in, first out: the walk stays deep, few directories are open
	pending int        // tasks pushed and not finished
	err     error
}

// walkTask is a directory to read: the top of a tree, or name in parent.
type walkTask struct {
	tree   *walkTop
	parent *dirRef     // nil for the top
	entry  fs.DirEntry // the directory in parent's listing
	rel    string
	data   any
}

// dirRef is an open directory with the number of its uses: its own visit,
// and each subdirectory not yet opened through it.
type dirRef struct {
	root  *os.Root
	owned bool // closed by the walk
	refs  atomic.Int32
}

func (d *dirRef) release() {
	if d.refs.Add(-1) == 0 && d.owned {
		d.root.Close()
	}
}

func (w *walker) work() {
	var scratch []named
	for {
		w.mu.Lock()
		for len(w.stack) == 0 && w.pending > 0 {
			w.cond.Wait()
		}
		if w.pending == 0 {
			w.mu.Unlock()
			return
		}
		t := w.stack[len(w.stack)-1]
		w.stack[len(w.stack)-1] = walkTask{}
		w.stack = w.stack[:len(w.stack)-1]
		failed := w.err != nil
		w.mu.Unlock()

		w.do(t, failed, &scratch)
	}
}

// do runs t (or only lets its parent go when the walk failed), then pushes
// the subdirectories found and counts t done, whatever happens in between.
func (w *walker) do(t walkTask, failed bool, scratch *[]named) {
	var subs []walkTask
	defer func() {
		w.mu.Lock()
		w.stack = append(w.stack, subs...)
		w.pending += len(subs) - 1
		if w.pending == 0 {
			w.cond.Broadcast()
		} else {
			// This goroutine takes the next task itself: wake one
			// other for each task beyond that.
			for range len(subs) - 1 {
				w.cond.Signal()
			}
		}
		w.mu.Unlock()
	}()
	if failed {
		if t.parent != nil {
			t.parent.release()
		}
		return
	}
	if err := w.run(t, &subs, scratch); err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = fmt.Errorf("reading %s: %w", t.tree.what, err)
		}
		w.mu.Unlock()
	}
}

// run reads the directory of t, visits it and appends the subdirectories
// to walk to subs.
func (w *walker) run(t walkTask, subs *[]walkTask, scratch *[]named) error {
	dir := t.tree.root
	if t.parent != nil {
		name := t.entry.Name()
		sub, err := t.parent.root.OpenRoot(name)
		t.parent.release()
		if err != nil {
			return fmt.Errorf("opening directory %q: %w", t.rel, err)
		}
		dir = sub
	}
	me := &dirRef{root: dir, owned: t.parent != nil}
	me.refs.Store(1)
	defer me.release()
	if err := ctxErr(w.ctx); err != nil {
		return err
	}
	entries, err := readDir(dir, t.rel, t.entry, scratch)
	if err != nil {
		return err
	}
	descend, err := t.tree.visit(&walkDir{root: dir, rel: t.rel, data: t.data}, entries)
	if err != nil {
		return err
	}
	if len(descend) == 0 {
		return nil
	}
	me.refs.Add(int32(len(descend)))
	// Pushed in reverse, so that the first is read first.
	for i := len(descend) - 1; i >= 0; i-- {
		s := descend[i]
		*subs = append(*subs, walkTask{
			tree: t.tree, parent: me, entry: s.entry, rel: joinRel(t.rel, s.entry.Name()), data: s.data,
		})
	}
	return nil
}

// readDir lists dir (rel in its tree) with every entry's Lstat, in name
// order, without Berth's temporary files. When dir was opened through its
// parent, listed as entry, it must still be that directory. scratch is
// reused from call to call.
func readDir(dir *os.Root, rel string, entry fs.DirEntry, scratch *[]named) ([]fs.DirEntry, error) {
	// readFlags: with O_NONBLOCK (which a directory ignores) os.File does
	// not switch the descriptor to non-blocking mode and back, four fcntl
	// calls a directory.
	f, err := dir.OpenFile(".", readFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("reading directory %q: %w", displayRel(rel), err)
	}
	defer f.Close()
	if entry != nil {
		listed, err := entry.Info()
		if err != nil {
			return nil, err
		}
		st, err := f.Stat()
		if err != nil || !os.SameFile(st, listed) {
			return nil, fmt.Errorf("directory %q was replaced while being read; try again", rel)
		}
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("reading directory %q: %w", displayRel(rel), err)
	}
	// Sorted by names read once: Name is an interface call.
	ns := (*scratch)[:0]
	for _, e := range entries {
		if name := e.Name(); !strings.HasPrefix(name, tmpPrefix) {
			ns = append(ns, named{name, e})
		}
	}
	slices.SortFunc(ns, func(a, b named) int { return strings.Compare(a.name, b.name) })
	entries = entries[:len(ns)]
	for i := range ns {
		entries[i] = ns[i].e
	}
	clear(ns) // no references kept from one directory to the next
	*scratch = ns
	return entries, nil
}

// named is a directory entry and its name.
type named struct {
	name string
	e    fs.DirEntry
}

// walkersPerCore is the number of goroutines walkParallel runs per core.
var walkersPerCore = 4
