//go:build unix

package filesync

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"time"

	"github.com/berth-ops/berth/events"
)

// refWsEntry is a workspace file or symbolic link to sync.
type refWsEntry struct {
	rel  string
	kind kind
	meta FileMeta
}

// refProdNode is a production entry; directories hold their children.
type refProdNode struct {
	rel      string
	kind     kind
	excluded bool
	size     int64
	mode     fs.FileMode
	mtime    time.Time
	children []*refProdNode
}

// refDiff is Diff as it was before the parallel walk, the rules' fast path
// and the hash cache (one goroutine a tree, go-git's matcher for every
// path, maps by path): the reference TestDiffMatchesReference compares Diff
// with.
func refDiff(ctx context.Context, workspace, production string, m *Manifest, rules *Rules) (*Plan, error) {
	if overlapping(workspace, production) {
		return nil, events.Errorf(events.CodeBadRequest, "workspace %s and production %s overlap", workspace, production).
			WithHint("the workspace and production directories must not contain each other")
	}
	if m == nil {
		m = &Manifest{}
	}
	ws, err := os.OpenRoot(workspace)
	if err != nil {
		return nil, openError("workspace", workspace, err)
	}
	defer ws.Close()
	prod, err := os.OpenRoot(production)
	if err != nil {
		return nil, openError("production", production, err)
	}
	defer prod.Close()

	// The two trees are read at the same time: walking is latency-bound.
	var w refWsTree
	var pt refProdTree
	wsErr := make(chan error, 1)
	go func() { wsErr <- w.read(ctx, ws, rules) }()
	perr := pt.read(ctx, prod, rules)
	if err := <-wsErr; err != nil {
		return nil, fmt.Errorf("reading the workspace: %w", err)
	}
	if perr != nil {
		return nil, fmt.Errorf("reading production: %w", perr)
	}
	return refPlan(ctx, ws, prod, &w, &pt, m)
}

// refWsTree is what Diff reads from the workspace.
type refWsTree struct {
	entries []refWsEntry
	// present are all non-excluded workspace paths that are not
	// directories, refused ones included: none of them is deleted.
	present map[string]bool
	// dirs are the directories that hold something to sync.
	dirs    map[string]bool
	refused []Refusal
}

func (t *refWsTree) read(ctx context.Context, root *os.Root, rules *Rules) error {
	t.present = map[string]bool{}
	t.dirs = map[string]bool{}
	return walkTree(ctx, root, "", false, func(dir *os.Root, rel string, fi fs.FileInfo) (bool, error) {
		k := kindOf(fi.Mode())
		if rules.excludedSelfMatcher(rel, k == kindDir) {
			return false, nil
		}
		if k == kindDir {
			return true, nil
		}
		t.present[rel] = true
		meta := FileMeta{Size: fi.Size(), Mode: deployMode(fi.Mode()), MTime: fi.ModTime()}
		switch k {
		case kindOther:
			t.refused = append(t.refused, Refusal{rel, "not a regular file, directory or symbolic link (socket, device or named pipe)"})
			return false, nil
		case kindSymlink:
			target, err := dir.Readlink(path.Base(rel))
			if err != nil {
				return false, err
			}
			if reason := linkEscapes(root, rel, target); reason != "" {
				t.refused = append(t.refused, Refusal{rel, reason})
				return false, nil
			}
			meta.Size, meta.Link = 0, target
		}
		t.entries = append(t.entries, refWsEntry{rel: rel, kind: k, meta: meta})
		for d := parentRel(rel); d != "."; d = parentRel(d) {
			if t.dirs[d] {
				break
			}
			t.dirs[d] = true
		}
		return false, nil
	})
}

// refProdTree is what Diff reads from production.
type refProdTree struct {
	top    refProdNode
	byPath map[string]*refProdNode
}

func (t *refProdTree) read(ctx context.Context, root *os.Root, rules *Rules) error {
	t.top = refProdNode{kind: kindDir}
	t.byPath = map[string]*refProdNode{"": &t.top}
	return walkTree(ctx, root, "", false, func(_ *os.Root, rel string, fi fs.FileInfo) (bool, error) {
		k := kindOf(fi.Mode())
		n := &refProdNode{rel: rel, kind: k, size: fi.Size(), mode: modeBits(fi.Mode()), mtime: fi.ModTime()}
		n.excluded = rules.excludedSelfMatcher(rel, k == kindDir)
		d := parentRel(rel)
		if d == "." {
			d = ""
		}
		parent := t.byPath[d]
		parent.children = append(parent.children, n)
		t.byPath[rel] = n
		// Excluded directories are not read: they are kept whole, and
		// can be large (node_modules, .git).
		return k == kindDir && !n.excluded, nil
	})
}

func (t *refProdTree) get(rel string) *refProdNode {
	if rel == "" {
		return nil
	}
	return t.byPath[rel]
}

// refFileCheck is a workspace file whose content must be hashed, and maybe
// compared with production's.
type refFileCheck struct {
	e         *refWsEntry
	p         *refProdNode // nil when added
	prodHash  string       // known or computed
	needProd  bool         // production's content must be hashed to decide
	wsHash    string
	unchanged bool
}

// plan classifies the two trees into a Plan.
func refPlan(ctx context.Context, ws, prod *os.Root, w *refWsTree, pt *refProdTree, m *Manifest) (*Plan, error) {
	p := &Plan{
		Added: []Change{}, Modified: []Change{}, Deleted: []Change{}, Kept: []string{},
		Refused: append([]Refusal{}, w.refused...), Protected: []string{},
		synced: make(map[string]FileMeta, len(w.entries)),
	}
	refusedAt := map[string]bool{}
	refuse := func(rel, reason string) {
		if !refusedAt[rel] {
			refusedAt[rel] = true
			p.Refused = append(p.Refused, Refusal{rel, reason})
		}
	}

	// Which manifest paths are deleted, and which Berth no longer owns.
	deleted := map[string]bool{}
	for rel := range m.Files {
		if w.present[rel] {
			continue
		}
		n := pt.get(rel)
		if n == nil || n.excluded || n.kind == kindDir {
			p.forgotten = append(p.forgotten, rel)
			continue
		}
		deleted[rel] = true
		ch := Change{Path: rel}
		if n.kind == kindFile {
			ch.Size = n.size
		}
		p.Deleted = append(p.Deleted, ch)
	}

	var checks []refFileCheck
	for i := range w.entries {
		e := &w.entries[i]
		// Every production directory on the way must be a directory, or
		// a deployed file this plan deletes.
		blocked := false
		for d := parentRel(e.rel); d != "."; d = parentRel(d) {
			if n := pt.get(d); n != nil && n.kind != kindDir && !deleted[d] {
				refuse(d, "production has a file or symbolic link here but the workspace has a directory; move it away in production or rename the workspace directory")
				blocked = true
			}
		}
		n := pt.get(e.rel)
		if n != nil && n.kind == kindDir {
			refuse(e.rel, "production has a directory here but the workspace has a file; move it away in production or rename the workspace file")
			blocked = true
		}
		if blocked {
			continue
		}
		if secretName(e.rel) && productionsSecret(prod, m, e.rel, n != nil) {
			p.Protected = append(p.Protected, e.rel)
			continue
		}
		if e.kind == kindSymlink {
			if n != nil && n.kind == kindSymlink && refLinkTarget(prod, n) == e.meta.Link {
				p.synced[e.rel] = FileMeta{Mode: n.mode, MTime: n.mtime, Link: e.meta.Link}
				continue
			}
			p.synced[e.rel] = e.meta
			if n == nil {
				p.Added = append(p.Added, Change{Path: e.rel})
			} else {
				p.Modified = append(p.Modified, Change{Path: e.rel})
			}
			continue
		}
		c := refFileCheck{e: e, p: n}
		if n != nil && n.kind == kindFile && n.size == e.meta.Size && n.mode == e.meta.Mode {
			if n.mtime.Equal(e.meta.MTime) {
				// Same size, mode and time: unchanged without reading it.
				meta := FileMeta{Size: n.size, Mode: n.mode, MTime: n.mtime}
				if mm, ok := m.Files[e.rel]; ok && refSameStat(mm, n) {
					meta.Hash = mm.Hash
				}
				p.synced[e.rel] = meta
				continue
			}
			// Same size and mode, another time: the contents decide.
			if mm, ok := m.Files[e.rel]; ok && mm.Hash != "" && refSameStat(mm, n) {
				c.prodHash = mm.Hash
			} else {
				c.needProd = true
			}
		}
		checks = append(checks, c)
	}

	err := parallel(ctx, len(checks), func(ctx context.Context, i int, lb *lazyBuf) error {
		c := &checks[i]
		buf := lb.get()
		h, size, err := hashFile(ctx, ws, c.e.rel, buf)
		if err != nil {
			return fmt.Errorf("hashing workspace file %s: %w", c.e.rel, err)
		}
		if size != c.e.meta.Size {
			return events.Errorf(events.CodePlanChanged, "workspace file %s changed while it was compared", c.e.rel).
				WithHint("run the command again once the workspace is no longer being written to")
		}
		c.wsHash = h
		if c.needProd {
			if c.prodHash, _, err = hashFile(ctx, prod, c.e.rel, buf); err != nil {
				return fmt.Errorf("hashing production file %s: %w", c.e.rel, err)
			}
		}
		c.unchanged = c.prodHash != "" && c.prodHash == c.wsHash
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, c := range checks {
		if c.unchanged {
			// Touched only: production keeps its time.
			p.synced[c.e.rel] = FileMeta{Size: c.p.size, Mode: c.p.mode, MTime: c.p.mtime, Hash: c.prodHash}
			continue
		}
		meta := c.e.meta
		meta.Hash = c.wsHash
		p.synced[c.e.rel] = meta
		ch := Change{Path: c.e.rel, Size: meta.Size, Hash: meta.Hash}
		if c.p == nil {
			p.Added = append(p.Added, ch)
		} else {
			p.Modified = append(p.Modified, ch)
		}
		p.Bytes += meta.Size
	}

	keptAll := refCollectKept(&pt.top, w, deleted)
	p.KeptCount = len(keptAll)
	if len(keptAll) > 0 {
		p.Kept = keptAll[:min(len(keptAll), maxKept):min(len(keptAll), maxKept)]
	}

	var links []string
	for rel, n := range pt.byPath {
		if n.kind == kindSymlink {
			links = append(links, rel)
		}
	}
	p.finish(prod, links, refuse)
	return p, nil
}

// refSameStat reports whether production's file still has the size, mode and
// time the manifest recorded, so the recorded hash is its content's.
func refSameStat(mm FileMeta, n *refProdNode) bool {
	return mm.Size == n.size && modeBits(mm.Mode) == n.mode && mm.MTime.Equal(n.mtime)
}

func refLinkTarget(prod *os.Root, n *refProdNode) string {
	t, err := prod.Readlink(n.rel)
	if err != nil {
		return ""
	}
	return t
}

// refCollectKept lists the production paths a sync leaves alone, a directory
// whose whole content is kept as "dir/".
func refCollectKept(top *refProdNode, w *refWsTree, deleted map[string]bool) []string {
	var kept func(n *refProdNode) bool
	allKept := map[*refProdNode]bool{}
	kept = func(n *refProdNode) bool {
		if n.excluded {
			return true
		}
		if n.kind != kindDir {
			return !w.present[n.rel] && !deleted[n.rel]
		}
		all := !w.dirs[n.rel]
		for _, c := range n.children {
			if !kept(c) {
				all = false
			}
		}
		allKept[n] = all
		return all
	}
	kept(top)

	var out []string
	var emit func(n *refProdNode)
	emit = func(n *refProdNode) {
		for _, c := range n.children {
			switch {
			case c.kind == kindDir && (c.excluded || allKept[c]):
				out = append(out, c.rel+"/")
			case c.kind == kindDir:
				emit(c)
			case c.excluded || (!w.present[c.rel] && !deleted[c.rel]):
				out = append(out, c.rel)
			}
		}
	}
	emit(top)
	return out
}
