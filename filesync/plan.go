package filesync

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// maxKept bounds Plan.Kept.
const maxKept = 100

// Change is one path a sync adds, modifies or deletes.
type Change struct {
	Path string `json:"path"`
	// Size is the workspace size of an added or modified file (0 for a
	// symbolic link), the production size of a deleted one.
	Size int64 `json:"size"`
	// Hash is the workspace content's SHA-256 of an added or modified
	// regular file.
	Hash string `json:"hash,omitempty"`
}

// Refusal is a workspace path that cannot be deployed, and why.
type Refusal struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Plan is what a sync of a workspace into production will do.
type Plan struct {
	Added    []Change `json:"added"`
	Modified []Change `json:"modified"`
	// Deleted are paths Berth deployed earlier (in the manifest) that are
	// gone from the workspace and still in production.
	Deleted []Change `json:"deleted"`
	// Kept are production paths that Berth leaves alone: excluded by the
	// rules, or neither in the workspace nor deployed by Berth (.env,
	// data/...). A directory whose whole content is kept is listed once,
	// with a trailing slash. At most 100 are listed; KeptCount is the full
	// number.
	Kept      []string `json:"kept"`
	KeptCount int      `json:"kept_count"`
	// Refused are workspace paths that cannot be deployed (symbolic links
	// leading outside the workspace, or outside production or in a loop in
	// production as it will be after the sync, through its own links
	// included; sockets, devices, FIFOs, a file where production has a
	// directory...). Apply refuses a plan with any.
	Refused []Refusal `json:"refused"`
	// Protected are production secret files (.env and .env.* at any
	// depth: see secretName) that the rules would sync but that Berth did
	// not deploy (they are not in the manifest): production's own, which
	// no deploy modifies, deletes or takes over, whatever .berthignore says
	// (ProtectedReason). The rest of the plan goes ahead without them. A
	// secret file production does not have is added as any other file, and
	// is Berth's from then on.
	Protected []string `json:"protected"`
	// Bytes is the number of bytes to copy (added and modified files).
	Bytes int64 `json:"bytes"`
	// Digest identifies the changes: two plans with the same changes
	// (operation, path, content hash, mode, link target) and the same
	// protected paths have the same digest, and any other two do not. Kept
	// paths are not part of it, so an application writing its data does
	// not change a plan.
	Digest string `json:"digest"`

	// synced is the metadata of every workspace path in sync after Apply:
	// the workspace's for added and modified paths, production's for
	// unchanged ones. Apply uses it to check the workspace did not change,
	// Manifest.Apply records it.
	synced map[string]FileMeta
	// forgotten are manifest paths Berth no longer owns: gone from
	// production (or replaced by a directory), or excluded by the rules.
	forgotten []string
}

// Empty reports whether the plan changes nothing. A plan can be empty and
// still have refusals.
func (p *Plan) Empty() bool {
	return len(p.Added) == 0 && len(p.Modified) == 0 && len(p.Deleted) == 0
}

// PlanSummary is a plan in brief, for events and confirmations.
type PlanSummary struct {
	Added         int       `json:"added"`
	Modified      int       `json:"modified"`
	Deleted       int       `json:"deleted"`
	AddedPaths    []string  `json:"added_paths,omitempty"`
	ModifiedPaths []string  `json:"modified_paths,omitempty"`
	DeletedPaths  []string  `json:"deleted_paths,omitempty"`
	Kept          []string  `json:"kept,omitempty"`
	KeptCount     int       `json:"kept_count"`
	Refused       []Refusal `json:"refused,omitempty"`
	// Protected are the first protected paths (Plan.Protected), and
	// ProtectedCount the number of them all.
	Protected      []string `json:"protected,omitempty"`
	ProtectedCount int      `json:"protected_count"`
	Bytes          int64    `json:"bytes"`
	Digest         string   `json:"digest"`
}

// Summary returns the counts and the first n entries of each list (all of
// them when n < 0).
func (p *Plan) Summary(n int) PlanSummary {
	paths := func(cs []Change) []string {
		cs = firstN(cs, n)
		if len(cs) == 0 {
			return nil
		}
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.Path
		}
		return out
	}
	return PlanSummary{
		Added: len(p.Added), Modified: len(p.Modified), Deleted: len(p.Deleted),
		AddedPaths: paths(p.Added), ModifiedPaths: paths(p.Modified), DeletedPaths: paths(p.Deleted),
		Kept: slices.Clone(firstN(p.Kept, n)), KeptCount: p.KeptCount,
		Refused:   slices.Clone(firstN(p.Refused, n)),
		Protected: slices.Clone(firstN(p.Protected, n)), ProtectedCount: len(p.Protected),
		Bytes: p.Bytes, Digest: p.Digest,
	}
}

func firstN[T any](s []T, n int) []T {
	if n >= 0 && len(s) > n {
		return s[:n]
	}
	return s
}

// computeDigest sets p.Digest from the changes and their metadata in
// p.synced. Fields are length-prefixed, so no path (even one with a
// newline) can make two different plans hash alike.
func (p *Plan) computeDigest() {
	type rec struct{ op, path, hash, mode, link string }
	recs := make([]rec, 0, len(p.Added)+len(p.Modified)+len(p.Deleted))
	for op, cs := range map[string][]Change{"add": p.Added, "modify": p.Modified} {
		for _, c := range cs {
			m := p.synced[c.Path]
			recs = append(recs, rec{op, c.Path, m.Hash, strconv.FormatUint(uint64(modeBits(m.Mode)), 8), m.Link})
		}
	}
	for _, c := range p.Deleted {
		recs = append(recs, rec{op: "delete", path: c.Path})
	}
	for _, rel := range p.Protected {
		recs = append(recs, rec{op: "protect", path: rel})
	}
	slices.SortFunc(recs, func(a, b rec) int {
		return cmp.Or(strings.Compare(a.op, b.op), strings.Compare(a.path, b.path))
	})
	h := sha256.New()
	var buf []byte
	for _, r := range recs {
		for _, f := range []string{r.op, r.path, r.hash, r.mode, r.link} {
			buf = binary.AppendUvarint(buf[:0], uint64(len(f)))
			buf = append(buf, f...)
			h.Write(buf)
		}
	}
	p.Digest = hex.EncodeToString(h.Sum(nil))
}

// ProtectedReason is why a path is in Plan.Protected.
const ProtectedReason = "a secret file production has and Berth did not deploy: production's own, never modified, deleted or taken over by a deploy, whatever " + IgnoreFile + " says"

// secretName reports whether rel ('/'-separated) names a secret file: a file
// named .env, or .env. followed by anything (.env.local, .env.production),
// in any directory, in any letter case (on a case-insensitive file system
// .ENV is .env). Files inside a directory of such a name are not (a
// virtualenv is often named .env). Production's own secret files are
// protected: see Plan.Protected.
func secretName(rel string) bool {
	base := rel[strings.LastIndexByte(rel, '/')+1:]
	return len(base) >= 4 && strings.EqualFold(base[:4], ".env") && (len(base) == 4 || base[4] == '.')
}

// modeBits is the part of a mode that matters to a tree: the type, the
// permissions, setuid, setgid and sticky.
func modeBits(m fs.FileMode) fs.FileMode {
	return m & (fs.ModeType | fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// deployMode is the mode a workspace entry gets in production: its
// modeBits without setuid and setgid on files, because a worker running as
// root would otherwise let whoever edits the workspace plant a setuid
// program owned by production's owner (often root).
func deployMode(m fs.FileMode) fs.FileMode {
	m = modeBits(m)
	if m.IsRegular() {
		m &^= fs.ModeSetuid | fs.ModeSetgid
	}
	return m
}
