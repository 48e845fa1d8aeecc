package filesync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-ops/berth/events"
)

// BackupFile is the name of the backup's index in a backup directory; the
// copies are under files/.
const BackupFile = "backup.json"

const backupVersion = 1

// backupIndex is backup.json.
type backupIndex struct {
	Version   int           `json:"version"`
	CreatedAt time.Time     `json:"created_at"`
	Entries   []backupEntry `json:"entries"`
	// Dirs are the production directories Apply may create, deepest
	// first: Restore removes them when they are empty.
	Dirs []string `json:"dirs,omitempty"`
}

// backupEntry is one production path a plan writes or deletes, as it was.
type backupEntry struct {
	Path string `json:"path"`
	// Absent: the path did not exist, Restore removes it.
	Absent bool        `json:"absent,omitempty"`
	Mode   fs.FileMode `json:"mode,omitempty"`
	MTime  time.Time   `json:"mtime,omitzero"`
	UID    *int        `json:"uid,omitempty"`
	GID    *int        `json:"gid,omitempty"`
	Link   string      `json:"link,omitempty"`
	Size   int64       `json:"size,omitempty"`
	// Hash is the SHA-256 of the copy in files/, checked when restoring.
	Hash string `json:"hash,omitempty"`
}

// Backup saves, into dir (in Berth's state directory, not production),
// every production path p will modify or delete: regular files are copied
// to dir/files/<path> with their content, mode and modification time, and
// dir/backup.json records them with their owners, the symbolic links'
// targets, the paths that do not exist yet (p's added paths, which Restore
// removes) and the directories Apply may create. Everything is fsynced, and
// backup.json is written last: a directory without it holds no backup.
//
// Backup refuses (CodeConflict) to overwrite an existing backup: after a
// deploy was interrupted, that backup is the only record of the production
// that was; Restore it, or remove dir, first.
func Backup(ctx context.Context, production string, p *Plan, dir string) error {
	if overlapping(production, dir) {
		return events.Errorf(events.CodeBadRequest, "backup directory %s and production %s overlap", dir, production).
			WithHint("keep backups in Berth's state directory, outside production")
	}
	index := filepath.Join(dir, BackupFile)
	if _, err := os.Lstat(index); err == nil {
		return events.Errorf(events.CodeConflict, "a backup already exists in %s", dir).
			WithHint("restore it (roll back) or remove it before making a new one")
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	paths := make([]string, 0, len(p.Added)+len(p.Modified)+len(p.Deleted))
	for _, cs := range [][]Change{p.Added, p.Modified, p.Deleted} {
		for _, c := range cs {
			if !validRel(c.Path) {
				return events.Errorf(events.CodeBadRequest, "invalid path %q in the plan", c.Path)
			}
			paths = append(paths, c.Path)
		}
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)

	prod, err := os.OpenRoot(production)
	if err != nil {
		return openError("production", production, err)
	}
	defer prod.Close()

	files := filepath.Join(dir, "files")
	if err := os.MkdirAll(files, 0o700); err != nil {
		return err
	}
	b := backupIndex{Version: backupVersion, CreatedAt: time.Now().UTC(), Entries: make([]backupEntry, 0, len(paths))}
	syncDirs := map[string]bool{dir: true, files: true}
	buf := make([]byte, copyBufSize)
	for _, rel := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := backupOne(ctx, prod, rel, files, buf)
		if err != nil {
			return err
		}
		if !e.Absent && e.Link == "" {
			for d := filepath.Dir(filepath.Join(files, filepath.FromSlash(rel))); d != files && strings.HasPrefix(d, files); d = filepath.Dir(d) {
				syncDirs[d] = true
			}
		}
		b.Entries = append(b.Entries, e)
	}

	// The directories Apply will create: the first missing (or
	// non-directory) ancestor of each written path, and all below it.
	created := map[string]bool{}
	for _, cs := range [][]Change{p.Added, p.Modified} {
		for _, c := range cs {
			var chain []string
			for d := parentRel(c.Path); d != "."; d = parentRel(d) {
				chain = append(chain, d)
			}
			for i := len(chain) - 1; i >= 0; i-- {
				if fi, err := prod.Lstat(chain[i]); err != nil || !fi.IsDir() {
					for _, d := range chain[:i+1] {
						created[d] = true
					}
					break
				}
			}
		}
	}
	for d := range created {
		b.Dirs = append(b.Dirs, d)
	}
	slices.SortFunc(b.Dirs, deepestFirst)

	for d := range syncDirs {
		if err := SyncDir(d); err != nil {
			return err
		}
	}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(index, data)
}

// deepestFirst orders paths so that a directory comes after its content.
func deepestFirst(a, b string) int {
	da, db := strings.Count(a, "/"), strings.Count(b, "/")
	if da != db {
		return db - da
	}
	return strings.Compare(a, b)
}

// backupOne saves production's rel.
func backupOne(ctx context.Context, prod *os.Root, rel, files string, buf []byte) (backupEntry, error) {
	e := backupEntry{Path: rel}
	fi, err := prod.Lstat(rel)
	if absent(err) {
		e.Absent = true
		return e, nil
	}
	if err != nil {
		return e, err
	}
	e.Mode, e.MTime = modeBits(fi.Mode()), fi.ModTime()
	if uid, gid, ok := ownerOf(fi); ok {
		e.UID, e.GID = &uid, &gid
	}
	switch kindOf(fi.Mode()) {
	case kindSymlink:
		if e.Link, err = prod.Readlink(rel); err != nil {
			return e, err
		}
		return e, nil
	case kindFile:
	case kindDir:
		return e, planChanged("%s became a directory in production after the plan was made", rel)
	default:
		return e, events.Errorf(events.CodeBadRequest, "production path %s is not a regular file or symbolic link and cannot be backed up", rel).
			WithHint("remove it from production by hand")
	}

	src, err := prod.OpenFile(rel, readFlags, 0)
	if err != nil {
		return e, err
	}
	defer src.Close()
	sfi, err := src.Stat()
	if err != nil {
		return e, err
	}
	if !sfi.Mode().IsRegular() {
		return e, planChanged("production path %s changed while being backed up", rel)
	}
	e.Mode, e.MTime = modeBits(sfi.Mode()), sfi.ModTime()
	dst := filepath.Join(files, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return e, err
	}
	// The copy stays readable and writable by the worker whatever the
	// original mode: the real mode is in backup.json.
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return e, err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(out, h), ctxReader{ctx, src}, buf)
	if err == nil {
		err = out.Chmod(e.Mode.Perm() | 0o600)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(dst, time.Time{}, e.MTime)
	}
	if err != nil {
		return e, fmt.Errorf("backing up %s: %w", rel, err)
	}
	e.Size, e.Hash = n, hex.EncodeToString(h.Sum(nil))
	return e, nil
}

// Restore puts production back as it was when the backup in dir was made:
// it removes Berth's leftover temporary files, the paths that did not exist
// then, and the directories Apply created (when empty), then puts back
// every saved file and link, atomically, with its mode, owner and
// modification time. It can run any number of times, and after an Apply
// stopped at any point. The backup stays in dir.
func Restore(ctx context.Context, production, dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, BackupFile))
	if errors.Is(err, fs.ErrNotExist) {
		return events.Errorf(events.CodeNotFound, "no backup in %s", dir).
			WithHint("there is nothing to roll back to")
	}
	if err != nil {
		return err
	}
	var b backupIndex
	if err := json.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("backup %s is corrupt: %w", dir, err)
	}
	if b.Version != backupVersion {
		return fmt.Errorf("backup %s has version %d, this Berth reads %d", dir, b.Version, backupVersion)
	}
	for _, e := range b.Entries {
		if !validRel(e.Path) {
			return fmt.Errorf("backup %s is corrupt: invalid path %q", dir, e.Path)
		}
	}
	for _, d := range b.Dirs {
		if !validRel(d) {
			return fmt.Errorf("backup %s is corrupt: invalid path %q", dir, d)
		}
	}

	prod, err := os.OpenRoot(production)
	if err != nil {
		return openError("production", production, err)
	}
	defer prod.Close()
	in := newInstaller(prod)

	// Leftover temporary files of an interrupted Apply or Restore: only
	// in the directories where those write.
	scan := map[string]bool{}
	for _, e := range b.Entries {
		scan[parentRel(e.Path)] = true
	}
	for _, d := range b.Dirs {
		scan[d] = true
	}
	for _, d := range slices.Sorted(maps.Keys(scan)) {
		if err := removeTemps(prod, d, in.dirty); err != nil {
			return err
		}
	}

	for _, e := range b.Entries {
		if !e.Absent {
			continue
		}
		fi, err := prod.Lstat(e.Path)
		if absent(err) || (err == nil && fi.IsDir()) {
			continue // not there, or a directory that is not Berth's
		}
		if err != nil {
			return err
		}
		if err := prod.Remove(e.Path); err != nil && !absent(err) {
			return err
		}
		in.dirty[parentRel(e.Path)] = true
	}
	for _, d := range b.Dirs {
		fi, err := prod.Lstat(d)
		if err != nil || !fi.IsDir() {
			continue
		}
		if err := prod.Remove(d); err != nil {
			if dirNotEmpty(err) || absent(err) {
				continue // something else lives there now
			}
			return err
		}
		in.dirty[parentRel(d)] = true
	}

	files := filepath.Join(dir, "files")
	for _, e := range b.Entries {
		if e.Absent {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := restoreOne(ctx, in, e, files); err != nil {
			return err
		}
	}
	return in.syncDirs()
}

func restoreOne(ctx context.Context, in *installer, e backupEntry, files string) error {
	prod := in.prod
	parent := parentRel(e.Path)
	if parent != "." {
		if fi, err := prod.Lstat(parent); err != nil || !fi.IsDir() {
			// Only a directory Berth created could have been in the
			// way, and it is gone; the parent was removed by someone.
			if err := prod.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("restoring %s: %w", e.Path, err)
			}
		}
	}
	if fi, err := prod.Lstat(e.Path); err == nil && fi.IsDir() {
		return events.Errorf(events.CodeConflict, "cannot restore %s: production has a directory there", e.Path).
			WithHint("move that directory away and roll back again")
	}
	own := owner{}
	if e.UID != nil && e.GID != nil {
		own = owner{*e.UID, *e.GID, true}
	}
	if e.Mode&fs.ModeSymlink != 0 {
		return in.installLink(e.Path, e.Link, own)
	}
	src, err := os.Open(filepath.Join(files, filepath.FromSlash(e.Path)))
	if err != nil {
		return fmt.Errorf("backup copy of %s: %w", e.Path, err)
	}
	defer src.Close()
	return in.installFile(ctx, e.Path, src, e.Mode, e.MTime, own, e.Hash, func() error {
		return fmt.Errorf("the backup copy of %s does not match its recorded hash; production keeps its current %s", e.Path, e.Path)
	})
}

// removeTemps removes Berth's temporary files from the production directory
// d, if it is one.
func removeTemps(prod *os.Root, d string, dirty map[string]bool) error {
	if fi, err := prod.Lstat(d); err != nil || !fi.IsDir() {
		return nil
	}
	f, err := prod.Open(d)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		if !strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		rel := name
		if d != "." {
			rel = d + "/" + name
		}
		if err := prod.Remove(rel); err != nil && !absent(err) {
			return fmt.Errorf("removing leftover %s: %w", rel, err)
		}
		dirty[d] = true
	}
	return nil
}
