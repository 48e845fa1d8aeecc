package filesync

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// FileMeta is the metadata of one file or symbolic link.
type FileMeta struct {
	Size int64       `json:"size"`
	Mode fs.FileMode `json:"mode"`
	// MTime is the modification time (not compared for symbolic links).
	MTime time.Time `json:"mtime"`
	// Hash is the hex SHA-256 of a regular file's content, when known.
	Hash string `json:"hash,omitempty"`
	// Link is a symbolic link's target.
	Link string `json:"link,omitempty"`
}

// Manifest is the set of paths Berth deployed into production, with their
// metadata at deploy time. Only those paths are ever deleted from
// production: a file Berth did not put there is the application's.
type Manifest struct {
	Files map[string]FileMeta `json:"files"`
}

// LoadManifest reads a manifest; a missing file is an empty manifest.
func LoadManifest(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Manifest{Files: map[string]FileMeta{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s is corrupt: %w", path, err)
	}
	if m.Files == nil {
		m.Files = map[string]FileMeta{}
	}
	return &m, nil
}

// Save writes the manifest atomically: a crash leaves either the previous
// manifest or this one, never a mix.
func (m *Manifest) Save(path string) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data)
}

// Apply records the outcome of a successful sync of p: every workspace path
// p put or found in sync, with its metadata, and drops the deleted paths and
// the paths Berth no longer owns (gone from production, or now excluded).
// p must come from Diff (a plan decoded from JSON lacks the metadata; then
// only the added and modified paths' sizes and hashes are recorded).
func (m *Manifest) Apply(p *Plan) {
	if m.Files == nil {
		m.Files = map[string]FileMeta{}
	}
	if p.synced == nil {
		for _, cs := range [][]Change{p.Added, p.Modified} {
			for _, c := range cs {
				m.Files[c.Path] = FileMeta{Size: c.Size, Hash: c.Hash}
			}
		}
	}
	for rel, meta := range p.synced {
		m.Files[rel] = meta
	}
	for _, c := range p.Deleted {
		delete(m.Files, c.Path)
	}
	for _, rel := range p.forgotten {
		delete(m.Files, rel)
	}
}

// writeFileAtomic writes a file in Berth's state directory through a
// temporary file, fsynced, renamed over the target, with the directory
// fsynced after.
func WriteFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// syncDirPath fsyncs a directory of Berth's state directory.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
