package filesync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-ops/berth/events"
)

type kind uint8

const (
	kindFile kind = iota
	kindSymlink
	kindDir
	kindOther // sockets, devices, FIFOs
)

func kindOf(m fs.FileMode) kind {
	switch {
	case m.IsRegular():
		return kindFile
	case m&fs.ModeSymlink != 0:
		return kindSymlink
	case m.IsDir():
		return kindDir
	default:
		return kindOther
	}
}

// Diff compares the workspace with production under rules (nil: the
// defaults) and m (nil: nothing deployed yet) and returns what a sync would
// do. A file is unchanged when its size, mode and modification time match
// production's; otherwise contents are compared, so a file that was only
// touched is not a change. Nothing is written anywhere (content hashes are
// remembered in memory: see WithHashCache).
//
// Both trees are read at the same time, by a few goroutines per core
// (walkParallel); the plan does not depend on the order.
func Diff(ctx context.Context, workspace, production string, m *Manifest, rules *Rules, opts ...DiffOption) (*Plan, error) {
	cfg := diffConfig{hashes: sharedHashes}
	for _, o := range opts {
		o(&cfg)
	}
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

	w := &wsTree{top: ws, rules: rules}
	pt := &prodTree{rules: rules, top: prodNode{kind: kindDir}}
	err = walkParallel(ctx,
		&walkTop{what: "the workspace", root: ws, visit: w.visit},
		&walkTop{what: "production", root: prod, visit: pt.visit, data: &pt.top})
	if err != nil {
		return nil, err
	}
	return plan(ctx, newTreeHasher(ws, workspace, cfg.hashes), newTreeHasher(prod, production, cfg.hashes), w, pt, m)
}

// DiffOption changes how Diff works, never what it finds.
type DiffOption func(*diffConfig)

type diffConfig struct {
	hashes *HashCache
}

// WithHashCache makes Diff look up and record the content hashes it needs
// in c instead of the cache this process shares (DefaultHashCacheSize
// entries): for instance a project's own, kept next to its manifest with
// LoadHashCache and HashCache.Save. With a nil c nothing is cached: every
// file compared by content is read.
func WithHashCache(c *HashCache) DiffOption {
	return func(cfg *diffConfig) { cfg.hashes = c }
}

// wsEntry is a workspace path that is neither excluded nor a directory: a
// file or symbolic link to sync, or a refused one.
// Its metadata is read from fi by the walk, while fi is in the processor's
// cache: plan, which runs on one core, reads them all.
type wsEntry struct {
	rel     string
	link    string // a symbolic link's target
	size    int64  // 0 for a symbolic link
	mtime   time.Time
	mode    fs.FileMode // deployMode
	kind    kind
	refused bool
	fi      fs.FileInfo // its Lstat
	p       *prodNode   // production's entry at rel, set by plan
}

// meta is the metadata e gets in production.
func (e *wsEntry) meta() FileMeta {
	return FileMeta{Size: e.size, Mode: e.mode, MTime: e.mtime, Link: e.link}
}

func (e *wsEntry) name() string { return e.rel[strings.LastIndexByte(e.rel, '/')+1:] }

// wsDir is a workspace directory with entries.
type wsDir struct {
	rel     string
	entries []wsEntry // in name order
	syncs   bool      // some entry is not refused
}

// wsTree is what Diff reads from the workspace.
type wsTree struct {
	top   *os.Root
	rules *Rules

	mu      sync.Mutex
	dirs    []*wsDir
	refused []Refusal
}

// visit is the workspace's dirVisitor.
func (t *wsTree) visit(d *walkDir, list []fs.DirEntry) ([]subdir, error) {
	var subs []subdir
	var refused []Refusal
	dir := &wsDir{rel: d.rel}
	for _, de := range list {
		fi, err := de.Info()
		if err != nil {
			return nil, err
		}
		k := kindOf(fi.Mode())
		if t.rules.excludedIn(d.rel, de.Name(), k == kindDir) {
			continue
		}
		if k == kindDir {
			subs = append(subs, subdir{entry: de})
			continue
		}
		if dir.entries == nil {
			dir.entries = make([]wsEntry, 0, len(list))
		}
		rel := joinRel(d.rel, de.Name())
		e := wsEntry{rel: rel, kind: k, fi: fi, size: fi.Size(), mode: deployMode(fi.Mode()), mtime: fi.ModTime()}
		switch k {
		case kindOther:
			e.refused = true
			refused = append(refused, Refusal{rel, "not a regular file, directory or symbolic link (socket, device or named pipe)"})
		case kindSymlink:
			target, err := d.root.Readlink(de.Name())
			if err != nil {
				return nil, err
			}
			if reason := linkEscapes(t.top, rel, target); reason != "" {
				e.refused = true
				refused = append(refused, Refusal{rel, reason})
			}
			e.link, e.size = target, 0
		}
		dir.syncs = dir.syncs || !e.refused
		dir.entries = append(dir.entries, e)
	}
	if len(dir.entries) > 0 || len(refused) > 0 {
		t.mu.Lock()
		t.dirs = append(t.dirs, dir)
		t.refused = append(t.refused, refused...)
		t.mu.Unlock()
	}
	return subs, nil
}

// parentDir is the directory of rel, "" at the top.
func parentDir(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}

// linkEscapes returns why the workspace symbolic link rel -> target may not
// be deployed, or "" when it stays inside the workspace.
func linkEscapes(root *os.Root, rel, target string) string {
	if target == "" {
		return "symbolic link with an empty target"
	}
	if path.IsAbs(target) {
		return "symbolic link to an absolute path (" + target + "): it would point outside the production directory"
	}
	if joined := path.Join(parentRel(rel), target); joined == ".." || strings.HasPrefix(joined, "../") {
		return "symbolic link leads outside the workspace (" + target + ")"
	}
	// Lexically inside, but it can still escape through other links (a ->
	// b/.. with b -> .): let the Root resolve it. A dangling link is fine.
	if _, err := root.Stat(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "symbolic link does not resolve inside the workspace (" + target + "): " + rootErrText(err)
	}
	return ""
}

func rootErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// prodNode is a production entry; directories hold their children.
type prodNode struct {
	dir      string // the path of its directory, "" at the top
	name     string
	kind     kind
	excluded bool
	// Set by plan: the workspace has a non-directory at rel (inWS), a
	// directory at rel with something to sync in it or below (wsSyncs),
	// the plan deletes it (deleted), a sync leaves all of it alone
	// (allKept, for directories).
	inWS, wsSyncs, deleted, allKept bool
	mode                            fs.FileMode // modeBits
	size                            int64
	mtime                           time.Time
	fi                              fs.FileInfo // its Lstat; nil for the top
	children                        []prodNode  // in name order
}

func (n *prodNode) rel() string { return joinRel(n.dir, n.name) }

// child returns n's child named name, or nil.
func (n *prodNode) child(name string) *prodNode {
	i, found := slices.BinarySearchFunc(n.children, name, func(c prodNode, name string) int {
		return strings.Compare(c.name, name)
	})
	if !found {
		return nil
	}
	return &n.children[i]
}

// prodTree is what Diff reads from production.
type prodTree struct {
	rules *Rules
	top   prodNode
	// dirs are the nodes plan looked up by directory path (nil: none).
	dirs map[string]*prodNode

	mu    sync.Mutex
	links []string // every symbolic link walked (excluded ones included)
}

// visit is production's dirVisitor; the directory's data is its node.
func (t *prodTree) visit(d *walkDir, list []fs.DirEntry) ([]subdir, error) {
	parent := d.data.(*prodNode)
	parent.children = make([]prodNode, len(list))
	var subs []subdir
	var links []string
	for i, de := range list {
		fi, err := de.Info()
		if err != nil {
			return nil, err
		}
		k := kindOf(fi.Mode())
		n := &parent.children[i]
		*n = prodNode{
			dir: d.rel, name: de.Name(), kind: k, excluded: t.rules.excludedIn(d.rel, de.Name(), k == kindDir),
			mode: modeBits(fi.Mode()), size: fi.Size(), mtime: fi.ModTime(), fi: fi,
		}
		// Excluded directories are not read: they are kept whole, and
		// can be large (node_modules, .git).
		if k == kindDir && !n.excluded {
			subs = append(subs, subdir{entry: de, data: n})
		}
		if k == kindSymlink {
			links = append(links, n.rel())
		}
	}
	if len(links) > 0 {
		t.mu.Lock()
		t.links = append(t.links, links...)
		t.mu.Unlock()
	}
	return subs, nil
}

// dir returns production's node at rel ("" for the top), or nil, like get;
// it remembers its answers, as plan asks for the same directories many
// times. Not safe for concurrent use.
func (t *prodTree) dir(rel string) *prodNode {
	if rel == "" {
		return &t.top
	}
	if n, ok := t.dirs[rel]; ok {
		return n
	}
	var n *prodNode
	if parent := t.dir(parentDir(rel)); parent != nil {
		n = parent.child(rel[strings.LastIndexByte(rel, '/')+1:])
	}
	if t.dirs == nil {
		t.dirs = map[string]*prodNode{}
	}
	t.dirs[rel] = n
	return n
}

// get returns the node at rel, or nil.
func (t *prodTree) get(rel string) *prodNode {
	if rel == "" {
		return nil
	}
	parent := t.dir(parentDir(rel))
	if parent == nil {
		return nil
	}
	return parent.child(rel[strings.LastIndexByte(rel, '/')+1:])
}

// fileCheck is a workspace file whose content must be hashed, and maybe
// compared with production's.
type fileCheck struct {
	e         *wsEntry
	meta      FileMeta  // the workspace's
	p         *prodNode // nil when added
	prodHash  string    // known or computed
	needProd  bool      // production's content must be hashed to decide
	wsHash    string
	unchanged bool
}

// plan classifies the two trees into a Plan.
func plan(ctx context.Context, wsH, prodH treeHasher, w *wsTree, pt *prodTree, m *Manifest) (*Plan, error) {
	prod := prodH.root
	// In path order, so that the work (and the first error) does not
	// depend on the walk's.
	slices.SortFunc(w.dirs, func(a, b *wsDir) int { return strings.Compare(a.rel, b.rel) })
	nEntries := 0
	for _, d := range w.dirs {
		nEntries += len(d.entries)
	}
	p := &Plan{
		Added: []Change{}, Modified: []Change{}, Deleted: []Change{}, Kept: []string{},
		Refused: append([]Refusal{}, w.refused...), Protected: []string{},
		synced: make(map[string]FileMeta, nEntries),
	}
	refusedAt := map[string]bool{}
	refuse := func(rel, reason string) {
		if !refusedAt[rel] {
			refusedAt[rel] = true
			p.Refused = append(p.Refused, Refusal{rel, reason})
		}
	}

	// Join the trees: each workspace entry with production's entry at the
	// same path (both lists are in name order).
	for _, d := range w.dirs {
		if d.syncs {
			for rel := d.rel; ; rel = parentDir(rel) {
				if n := pt.dir(rel); n != nil {
					if n.wsSyncs {
						break
					}
					n.wsSyncs = true
				}
				if rel == "" {
					break
				}
			}
		}
		pd := pt.dir(d.rel)
		if pd == nil {
			continue
		}
		cs := pd.children
		for i := range d.entries {
			e := &d.entries[i]
			name := e.name()
			for len(cs) > 0 && cs[0].name < name {
				cs = cs[1:]
			}
			if len(cs) > 0 && cs[0].name == name {
				e.p = &cs[0]
				e.p.inWS = true
				cs = cs[1:]
			}
		}
	}

	// Which manifest paths are deleted, and which Berth no longer owns.
	var wsDirs map[string]*wsDir
	present := func(rel string) bool {
		if wsDirs == nil {
			wsDirs = make(map[string]*wsDir, len(w.dirs))
			for _, d := range w.dirs {
				wsDirs[d.rel] = d
			}
		}
		d := wsDirs[parentDir(rel)]
		if d == nil {
			return false
		}
		_, found := slices.BinarySearchFunc(d.entries, rel, func(e wsEntry, rel string) int { return strings.Compare(e.rel, rel) })
		return found
	}
	for rel := range m.Files {
		n := pt.get(rel)
		if n != nil && n.inWS || n == nil && present(rel) {
			continue
		}
		if n == nil || n.excluded || n.kind == kindDir {
			p.forgotten = append(p.forgotten, rel)
			continue
		}
		n.deleted = true
		ch := Change{Path: rel}
		if n.kind == kindFile {
			ch.Size = n.size
		}
		p.Deleted = append(p.Deleted, ch)
	}

	var checks []fileCheck
	for _, d := range w.dirs {
		if !d.syncs {
			continue
		}
		// Every production directory on the way must be a directory, or
		// a deployed file this plan deletes.
		blocked := false
		for rel := d.rel; rel != ""; rel = parentDir(rel) {
			if n := pt.get(rel); n != nil && n.kind != kindDir && !n.deleted {
				refuse(rel, "production has a file or symbolic link here but the workspace has a directory; move it away in production or rename the workspace directory")
				blocked = true
			}
		}
		for i := range d.entries {
			e := &d.entries[i]
			if e.refused {
				continue
			}
			n := e.p
			if n != nil && n.kind == kindDir {
				refuse(e.rel, "production has a directory here but the workspace has a file; move it away in production or rename the workspace file")
				continue
			}
			if blocked {
				continue
			}
			if secretName(e.rel) && productionsSecret(prod, m, e.rel, n != nil) {
				p.Protected = append(p.Protected, e.rel)
				continue
			}
			meta := e.meta()
			if e.kind == kindSymlink {
				if n != nil && n.kind == kindSymlink && linkTarget(prod, n) == e.link {
					p.synced[e.rel] = FileMeta{Mode: n.mode, MTime: n.mtime, Link: e.link}
					continue
				}
				p.synced[e.rel] = meta
				if n == nil {
					p.Added = append(p.Added, Change{Path: e.rel})
				} else {
					p.Modified = append(p.Modified, Change{Path: e.rel})
				}
				continue
			}
			c := fileCheck{e: e, p: n, meta: meta}
			if n != nil && n.kind == kindFile && n.size == meta.Size && n.mode == meta.Mode {
				if n.mtime.Equal(meta.MTime) {
					// Same size, mode and time: unchanged without reading it.
					if mm, ok := m.Files[e.rel]; ok && sameStat(mm, n) {
						meta.Hash = mm.Hash
					}
					p.synced[e.rel] = meta
					continue
				}
				// Same size and mode, another time: the contents decide.
				if mm, ok := m.Files[e.rel]; ok && mm.Hash != "" && sameStat(mm, n) {
					c.prodHash = mm.Hash
				} else {
					c.needProd = true
				}
			}
			checks = append(checks, c)
		}
	}

	err := parallel(ctx, len(checks), func(ctx context.Context, i int, buf *lazyBuf) error {
		c := &checks[i]
		h, size, err := wsH.hash(ctx, c.e.rel, c.e.fi, buf)
		if err != nil {
			return fmt.Errorf("hashing workspace file %s: %w", c.e.rel, err)
		}
		if size != c.meta.Size {
			return events.Errorf(events.CodePlanChanged, "workspace file %s changed while it was compared", c.e.rel).
				WithHint("run the command again once the workspace is no longer being written to")
		}
		c.wsHash = h
		if c.needProd {
			if c.prodHash, _, err = prodH.hash(ctx, c.e.rel, c.p.fi, buf); err != nil {
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
		meta := c.meta
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

	p.Kept, p.KeptCount = collectKept(&pt.top, maxKept)

	p.finish(prod, pt.links, refuse)
	return p, nil
}

// finish checks the symbolic links of p in production as it will be
// (checkLinks), refusing the bad ones with refuse, puts every list in path
// order and computes the digest.
func (p *Plan) finish(prod *os.Root, prodLinks []string, refuse func(rel, reason string)) {
	byPath := func(a, b Change) int { return strings.Compare(a.Path, b.Path) }
	slices.SortFunc(p.Added, byPath)
	slices.SortFunc(p.Modified, byPath)
	slices.SortFunc(p.Deleted, byPath)
	for _, r := range p.checkLinks(prod, prodLinks) {
		refuse(r.Path, r.Reason)
	}
	slices.SortFunc(p.Refused, func(a, b Refusal) int {
		return cmp.Or(strings.Compare(a.Path, b.Path), strings.Compare(a.Reason, b.Reason))
	})
	slices.Sort(p.Protected)
	slices.Sort(p.forgotten)
	p.computeDigest()
}

// productionsSecret reports whether the secret file rel (secretName) is
// production's own: production has it (inProd, as walked, or found by a
// lookup, which on a case-insensitive file system also finds .env for
// .ENV) and Berth did not deploy it (it is not in m). A lookup that fails
// otherwise than by absence counts as found.
func productionsSecret(prod *os.Root, m *Manifest, rel string, inProd bool) bool {
	if _, deployed := m.Files[rel]; deployed {
		return false
	}
	if inProd {
		return true
	}
	_, err := prod.Lstat(rel)
	return !absent(err)
}

// sameStat reports whether production's file still has the size, mode and
// time the manifest recorded, so the recorded hash is its content's.
func sameStat(mm FileMeta, n *prodNode) bool {
	return mm.Size == n.size && modeBits(mm.Mode) == n.mode && mm.MTime.Equal(n.mtime)
}

func linkTarget(prod *os.Root, n *prodNode) string {
	t, err := prod.Readlink(n.rel())
	if err != nil {
		return ""
	}
	return t
}

// collectKept returns the first max production paths a sync leaves alone,
// in tree order, a directory whose whole content is kept as "dir/", and
// the number of them all.
func collectKept(top *prodNode, max int) (kept []string, count int) {
	var mark func(n *prodNode) bool
	mark = func(n *prodNode) bool {
		if n.excluded {
			return true
		}
		if n.kind != kindDir {
			return !n.inWS && !n.deleted
		}
		all := !n.wsSyncs
		for i := range n.children {
			if !mark(&n.children[i]) {
				all = false
			}
		}
		n.allKept = all
		return all
	}
	mark(top)

	kept = []string{}
	add := func(n *prodNode, suffix string) {
		if count < max {
			kept = append(kept, n.rel()+suffix)
		}
		count++
	}
	var emit func(n *prodNode)
	emit = func(n *prodNode) {
		for i := range n.children {
			c := &n.children[i]
			switch {
			case c.kind == kindDir && (c.excluded || c.allKept):
				add(c, "/")
			case c.kind == kindDir:
				emit(c)
			case c.excluded || (!c.inWS && !c.deleted):
				add(c, "")
			}
		}
	}
	emit(top)
	return slices.Clip(kept), count
}
