package filesync

import (
	"cmp"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// maxLinkHops bounds the symbolic links one resolution follows, as the
// kernel does (Linux's MAXSYMLINKS is 40); past it a link loops.
const maxLinkHops = 40

// maxChainShown bounds the links a refusal's reason names.
const maxChainShown = 5

// linkState is what a path is in one of the trees a syncedTree models.
type linkState struct {
	exists bool
	kind   kind
	link   string // a symbolic link's target
	err    string // production could not be read there
}

// syncedTree is production as it will be once a plan is applied: the
// plan's written paths (and the directories they need) and its deletions,
// over production as it is now. Production is read through its Root, one
// path component at a time below a directory already known to be a real
// one, so no lookup passes through a symbolic link; nothing outside the
// Root is ever read.
type syncedTree struct {
	prod *os.Root
	// over are the paths the plan changes: written files and links,
	// deleted paths (absent), and the directories the writes go in.
	over map[string]linkState
	// now caches production's current entries.
	now map[string]linkState
}

func newSyncedTree(prod *os.Root, p *Plan) *syncedTree {
	t := &syncedTree{prod: prod, over: map[string]linkState{}, now: map[string]linkState{}}
	for _, c := range p.Deleted {
		t.over[c.Path] = linkState{}
	}
	for _, cs := range [][]Change{p.Added, p.Modified} {
		for _, c := range cs {
			st := linkState{exists: true, kind: kindFile}
			if m := p.synced[c.Path]; m.Mode&fs.ModeSymlink != 0 {
				st.kind, st.link = kindSymlink, m.Link
			}
			t.over[c.Path] = st
			for d := parentDir(c.Path); d != ""; d = parentDir(d) {
				if s := t.over[d]; s.exists && s.kind == kindDir {
					break
				}
				t.over[d] = linkState{exists: true, kind: kindDir}
			}
		}
	}
	return t
}

// current is production's entry at rel as it is now; below anything but a
// real directory there is nothing.
func (t *syncedTree) current(rel string) linkState {
	if rel == "" {
		return linkState{exists: true, kind: kindDir}
	}
	if st, ok := t.now[rel]; ok {
		return st
	}
	var st linkState
	if parent := t.current(parentDir(rel)); parent.exists && parent.kind == kindDir {
		fi, err := t.prod.Lstat(rel)
		switch {
		case err == nil:
			st = linkState{exists: true, kind: kindOf(fi.Mode())}
			if st.kind == kindSymlink {
				if st.link, err = t.prod.Readlink(rel); err != nil {
					st = linkState{err: rootErrText(err)}
				}
			}
		case !absent(err):
			st.err = rootErrText(err)
		}
	}
	t.now[rel] = st
	return st
}

// at is the entry at rel after the sync (after: true) or now.
func (t *syncedTree) at(rel string, after bool) linkState {
	if st, ok := t.over[rel]; ok && after {
		return st
	}
	return t.current(rel)
}

// changes reports whether the plan changes what rel is, for a resolution.
func (t *syncedTree) changes(rel string) bool {
	st, ok := t.over[rel]
	return ok && st != t.current(rel)
}

type linkOutcome uint8

const (
	linkInside linkOutcome = iota
	linkOutside
	linkLoops
	linkUnreadable
)

// resolution is where a path leads.
type resolution struct {
	outcome linkOutcome
	// chain are the symbolic links followed, in order.
	chain []string
	// changed is the first path on the way the plan changes, if any.
	changed string
	abs     string // the absolute target that leads outside, if one does
	err     string // for linkUnreadable
}

// resolve follows rel from the top, component by component, as the kernel
// would, through every symbolic link on the way (its own last component
// included), in the tree after the sync or now. A component that does not
// exist, or is not a directory, is taken for a directory the application
// may create later: only ".." can then lead anywhere, and it is followed
// as written, so that a link that would escape once a missing directory
// appears is caught now.
func (t *syncedTree) resolve(rel string, after bool) resolution {
	var res resolution
	var dir []string // the directories reached, from the top
	todo := strings.Split(rel, "/")
	hops := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(dir) == 0 {
				res.outcome = linkOutside
				return res
			}
			dir = dir[:len(dir)-1]
			continue
		}
		p := joinRel(strings.Join(dir, "/"), name)
		if after && res.changed == "" && t.changes(p) {
			res.changed = p
		}
		st := t.at(p, after)
		switch {
		case st.err != "":
			res.outcome, res.err = linkUnreadable, p+": "+st.err
			return res
		case st.exists && st.kind == kindSymlink:
			res.chain = append(res.chain, p)
			if hops++; hops > maxLinkHops {
				res.outcome = linkLoops
				return res
			}
			if path.IsAbs(st.link) {
				res.outcome, res.abs = linkOutside, st.link
				return res
			}
			todo = append(strings.Split(st.link, "/"), todo...)
		default:
			dir = append(dir, name)
		}
	}
	return res
}

// bad reports whether the resolution does not stay inside production.
func (r resolution) bad() bool { return r.outcome != linkInside }

// through names the links followed after the first one.
func (r resolution) through() string {
	var names []string
	for _, l := range r.chain[1:] {
		if !slices.Contains(names, l) {
			names = append(names, l)
		}
	}
	if len(names) > maxChainShown {
		names = append(names[:maxChainShown], "...")
	}
	return strings.Join(names, ", ")
}

// why says why what (a symbolic link, for a refusal) does not stay inside
// production.
func (r resolution) why(what string) string {
	switch r.outcome {
	case linkLoops:
		return what + " loops in production (through " + r.through() + ")"
	case linkUnreadable:
		return what + " cannot be checked in production: " + r.err
	}
	s := what + " would resolve outside production"
	if via := r.through(); via != "" {
		s += " through " + via
	}
	if r.abs != "" {
		s += " (to the absolute path " + r.abs + ")"
	}
	return s
}

// checkLinks resolves, in production as it will be after the sync, every
// symbolic link p writes, and every link of production's (prodLinks, as
// walked) that the sync leaves in place. A written link that leads outside
// production or loops is refused; so is a change that makes a link left in
// place lead outside or loop when it did not before (the refusal is at
// the first changed path on its way). Links refused for themselves are
// taken out of p's added and modified paths, as refused workspace paths
// are never in them. The workspace's own check (linkEscapes) has
// already refused absolute targets and links leaving the workspace.
func (p *Plan) checkLinks(prod *os.Root, prodLinks []string) []Refusal {
	isLink := func(c Change) bool { return p.synced[c.Path].Mode&fs.ModeSymlink != 0 }
	if len(prodLinks) == 0 && !slices.ContainsFunc(p.Added, isLink) && !slices.ContainsFunc(p.Modified, isLink) {
		return nil // no link to check: the common case, and the cheap one
	}
	t := newSyncedTree(prod, p)
	var refused []Refusal
	drop := map[string]bool{}
	for _, cs := range [][]Change{p.Added, p.Modified} {
		for _, c := range cs {
			if !isLink(c) {
				continue
			}
			if r := t.resolve(c.Path, true); r.bad() {
				refused = append(refused, Refusal{c.Path, r.why("symbolic link " + c.Path)})
				drop[c.Path] = true
			}
		}
	}
	for _, l := range slices.Sorted(slices.Values(prodLinks)) {
		if _, changed := t.over[l]; changed {
			continue // written or deleted
		}
		after := t.resolve(l, true)
		if !after.bad() || t.resolve(l, false).bad() {
			continue
		}
		at := cmp.Or(after.changed, l)
		if !slices.ContainsFunc(refused, func(r Refusal) bool { return r.Path == at }) {
			refused = append(refused, Refusal{at, after.why(fmt.Sprintf("once %s is deployed, production's symbolic link %s", at, l))})
		}
	}
	if len(drop) > 0 {
		keep := func(cs []Change) []Change {
			return slices.DeleteFunc(cs, func(c Change) bool { return drop[c.Path] })
		}
		p.Added, p.Modified = keep(p.Added), keep(p.Modified)
		for rel := range drop {
			delete(p.synced, rel)
		}
	}
	return refused
}
