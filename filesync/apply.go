package filesync

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/berth-ops/berth/events"
)

// Apply syncs production with the workspace as p says: it removes the
// deleted paths, then writes every added and modified file, each through a
// temporary file in its directory that is fsynced, given the workspace's
// mode and modification time and its owner, then renamed over the target,
// so a reader sees the old file or the new one, never a partial one. A
// replaced file keeps its owner and group; a new file or directory gets its
// parent directory's (so the application's user can still read what a
// worker running as root wrote). Symbolic links are recreated as links. The
// touched directories are fsynced before Apply returns.
//
// progress, when not nil, is called after each path with the number done
// and the total. Apply refuses a plan with refusals (CodeBadRequest), and
// stops with CodePlanChanged when a workspace file no longer has the
// content, mode or link target the plan was made with, or production no
// longer has the shape it had (such as a secret file the plan adds, .env,
// that appeared there meanwhile: it is production's own and is not
// replaced). When it returns an error, production is partly synced:
// Restore the backup made before.
func Apply(ctx context.Context, workspace, production string, p *Plan, progress func(done, total int)) error {
	if len(p.Refused) > 0 {
		r := p.Refused[0]
		return events.Errorf(events.CodeBadRequest, "%d workspace path(s) cannot be deployed, such as %s: %s", len(p.Refused), r.Path, r.Reason).
			WithHint("fix or remove these paths in the workspace, or exclude them in "+IgnoreFile).
			With("refused", firstN(p.Refused, 20))
	}
	writes := slices.Concat(p.Added, p.Modified)
	slices.SortFunc(writes, func(a, b Change) int { return strings.Compare(a.Path, b.Path) })
	if len(writes) > 0 && p.synced == nil {
		return errors.New("filesync: Apply needs a plan made by Diff, with its file metadata")
	}
	for _, c := range slices.Concat(writes, p.Deleted) {
		if !validRel(c.Path) {
			return events.Errorf(events.CodeBadRequest, "invalid path %q in the plan", c.Path)
		}
	}

	ws, err := os.OpenRoot(workspace)
	if err != nil {
		return openError("workspace", workspace, err)
	}
	defer ws.Close()
	prod, err := os.OpenRoot(production)
	if err != nil {
		return openError("production", production, err)
	}
	defer prod.Close()

	a := &applier{
		inst:    newInstaller(prod),
		ws:      ws,
		ensured: map[string]bool{".": true},
	}
	total := len(p.Deleted) + len(writes)
	done := 0
	step := func() {
		done++
		if progress != nil {
			progress(done, total)
		}
	}
	stopped := func() error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("apply stopped after %d of %d changes: %w", done, total, err)
		}
		return nil
	}

	// Deletions first: a deployed file may be where the workspace now has
	// a directory.
	for _, c := range p.Deleted {
		if err := stopped(); err != nil {
			return err
		}
		if err := a.remove(c.Path); err != nil {
			return err
		}
		step()
	}
	// An added secret file must still be absent: one that appeared since
	// the plan was made is production's own (see Plan.Protected).
	newSecrets := map[string]bool{}
	for _, c := range p.Added {
		if secretName(c.Path) {
			newSecrets[c.Path] = true
		}
	}
	for _, c := range writes {
		if err := stopped(); err != nil {
			return err
		}
		if newSecrets[c.Path] {
			if err := a.stillAbsent(c.Path); err != nil {
				return err
			}
		}
		if err := a.write(ctx, c.Path, p.synced[c.Path]); err != nil {
			return err
		}
		step()
	}
	return a.inst.syncDirs()
}

// applier holds the state of one Apply.
type applier struct {
	inst    *installer
	ws      *os.Root
	ensured map[string]bool // production directories known to exist
}

func planChanged(format string, args ...any) *events.Error {
	return events.Errorf(events.CodePlanChanged, format, args...).
		WithHint("production was partly updated: roll back, then look at the new plan and deploy again")
}

func (a *applier) remove(rel string) error {
	fi, err := a.inst.prod.Lstat(rel)
	if absent(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return planChanged("%s became a directory in production after the plan was made", rel)
	}
	if err := a.inst.prod.Remove(rel); err != nil && !absent(err) {
		return err
	}
	a.inst.dirty[parentRel(rel)] = true
	return nil
}

// stillAbsent checks production has nothing at rel.
func (a *applier) stillAbsent(rel string) error {
	_, err := a.inst.prod.Lstat(rel)
	switch {
	case err == nil:
		return planChanged("production has a %s Berth did not deploy since the plan was made; it is left alone", rel)
	case absent(err):
		return nil
	}
	return err
}

// write puts the workspace's rel into production, checking it against the
// planned metadata.
func (a *applier) write(ctx context.Context, rel string, meta FileMeta) error {
	if err := a.ensureDir(parentRel(rel)); err != nil {
		return err
	}
	own, err := a.targetOwner(rel)
	if err != nil {
		return err
	}
	if meta.Mode&fs.ModeSymlink != 0 {
		target, err := a.ws.Readlink(rel)
		if err != nil || target != meta.Link {
			return planChanged("workspace symbolic link %s changed after the plan was made", rel)
		}
		return a.inst.installLink(rel, target, own)
	}
	src, err := a.ws.OpenFile(rel, readFlags, 0)
	if absent(err) {
		return planChanged("workspace file %s was removed after the plan was made", rel)
	}
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || deployMode(fi.Mode()) != meta.Mode {
		return planChanged("workspace file %s changed type or mode after the plan was made", rel)
	}
	return a.inst.installFile(ctx, rel, src, meta.Mode, meta.MTime, own, meta.Hash, func() error {
		return planChanged("workspace file %s changed after the plan was made", rel)
	})
}

// targetOwner is the owner a write of rel gives it: the replaced file's, or
// the parent directory's.
func (a *applier) targetOwner(rel string) (owner, error) {
	fi, err := a.inst.prod.Lstat(rel)
	switch {
	case err == nil && fi.IsDir():
		return owner{}, planChanged("%s became a directory in production after the plan was made", rel)
	case err == nil:
		return ownerOfInfo(fi), nil
	case !absent(err):
		return owner{}, err
	}
	fi, err = a.inst.prod.Lstat(parentRel(rel))
	if err != nil {
		return owner{}, err
	}
	return ownerOfInfo(fi), nil
}

// ensureDir makes sure every component of the production directory rel is
// a real directory (not a symbolic link), creating the missing ones with the
// workspace directory's mode and their parent's owner.
func (a *applier) ensureDir(rel string) error {
	if a.ensured[rel] {
		return nil
	}
	if err := a.ensureDir(parentRel(rel)); err != nil {
		return err
	}
	prod := a.inst.prod
	fi, err := prod.Lstat(rel)
	if err == nil {
		if !fi.IsDir() {
			return planChanged("production path %s is no longer a directory", rel)
		}
		a.ensured[rel] = true
		return nil
	}
	if !absent(err) {
		return err
	}
	mode := fs.FileMode(0o755)
	if wfi, err := a.ws.Lstat(rel); err == nil && wfi.IsDir() {
		// setgid on a directory only makes new files inherit its group.
		mode = wfi.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSticky)
	}
	pfi, err := prod.Lstat(parentRel(rel))
	if err != nil {
		return err
	}
	// Created private, then given its owner, then its mode: it is never
	// open to others under the wrong owner.
	if err := prod.Mkdir(rel, 0o700); err != nil {
		return err
	}
	if own := ownerOfInfo(pfi); own.ok {
		if err := prod.Lchown(rel, own.uid, own.gid); err != nil && !chownDenied(err) {
			return err
		}
	}
	if err := prod.Chmod(rel, mode); err != nil {
		return err
	}
	a.inst.dirty[parentRel(rel)] = true
	a.inst.dirty[rel] = true
	a.ensured[rel] = true
	return nil
}

// owner is a file's owner and group, when known.
type owner struct {
	uid, gid int
	ok       bool
}

func ownerOfInfo(fi fs.FileInfo) owner {
	uid, gid, ok := ownerOf(fi)
	return owner{uid, gid, ok}
}

// installer writes files into production atomically and remembers which
// directories to fsync.
type installer struct {
	prod  *os.Root
	dirty map[string]bool
	buf   []byte
}

func newInstaller(prod *os.Root) *installer {
	return &installer{prod: prod, dirty: map[string]bool{}, buf: make([]byte, copyBufSize)}
}

func tmpName(rel string) string {
	return path.Join(parentRel(rel), tmpPrefix+rand.Text())
}

// installFile replaces rel with src's content through a temporary file,
// with mode, mtime and owner. The content's SHA-256 must be wantHash, else
// the temporary file is removed and mismatch's error returned.
func (in *installer) installFile(ctx context.Context, rel string, src io.Reader, mode fs.FileMode, mtime time.Time, own owner, wantHash string, mismatch func() error) (err error) {
	tmp := tmpName(rel)
	f, err := in.prod.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	installed := false
	defer func() {
		if !installed {
			f.Close()
			in.prod.Remove(tmp)
		}
	}()
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), ctxReader{ctx, src}, in.buf); err != nil {
		return fmt.Errorf("copying %s: %w", rel, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != wantHash {
		return mismatch()
	}
	// Owner before mode: a chown clears the setuid and setgid bits.
	if own.ok {
		if uid, gid, ok := ownerOfFile(f); !ok || uid != own.uid || gid != own.gid {
			if err := f.Chown(own.uid, own.gid); err != nil && !chownDenied(err) {
				return err
			}
		}
	}
	if err := f.Chmod(mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := in.prod.Chtimes(tmp, time.Time{}, mtime); err != nil {
		return err
	}
	if err := in.prod.Rename(tmp, rel); err != nil {
		return err
	}
	installed = true
	in.dirty[parentRel(rel)] = true
	return nil
}

// installLink replaces rel with a symbolic link to target.
func (in *installer) installLink(rel, target string, own owner) error {
	tmp := tmpName(rel)
	if err := in.prod.Symlink(target, tmp); err != nil {
		return err
	}
	if own.ok {
		if err := in.prod.Lchown(tmp, own.uid, own.gid); err != nil && !chownDenied(err) {
			in.prod.Remove(tmp)
			return err
		}
	}
	if err := in.prod.Rename(tmp, rel); err != nil {
		in.prod.Remove(tmp)
		return err
	}
	in.dirty[parentRel(rel)] = true
	return nil
}

// syncDirs fsyncs every directory whose entries changed, so the renames
// and removals are durable.
func (in *installer) syncDirs() error {
	dirs := make([]string, 0, len(in.dirty))
	for d := range in.dirty {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	for _, d := range dirs {
		f, err := in.prod.Open(d)
		if absent(err) {
			continue // removed by Restore after it was touched
		}
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("syncing directory %s: %w", d, err)
		}
	}
	return nil
}

func ownerOfFile(f *os.File) (uid, gid int, ok bool) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, false
	}
	return ownerOf(fi)
}
