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
	"os"
	"path/filepath"
	"sync"
	"time"
)

// HashCache remembers the SHA-256 of files' contents, so that Diff does not
// read again a file it already hashed: plan, then confirm, re-plans. An
// entry stands for a path with one identity: size, modification time,
// change time, device and inode number. Every write to a file, and every
// change of its times, sets its change time to the current time, and only
// the kernel sets it, so a file whose identity is the same has the same
// content. A hash is only remembered when the file's change time is more
// than racyMargin older than the moment its reading began (a write in the
// same tick of the file system's clock would leave the identity as it
// was), and the file did not change while it was read.
//
// On systems without inode numbers and change times in their file
// information (other than Linux and macOS), nothing is cached.
//
// A HashCache holds at most its capacity of entries, dropping the least
// recently used. It is safe for concurrent use.
type HashCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]*cacheEntry
	lru     cacheEntry // sentinel: lru.next is the most recently used
	dirty   bool
}

// fileID is what identifies the content of a file (see HashCache).
type fileID struct {
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime_ns"`
	CTime int64  `json:"ctime_ns"`
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
}

type cacheEntry struct {
	key        string
	id         fileID
	sum        [sha256.Size]byte
	prev, next *cacheEntry
}

// DefaultHashCacheSize is the capacity of the cache Diff uses when it is
// given none, and of NewHashCache(0).
const DefaultHashCacheSize = 4096

// loadedHashCacheSize is the capacity of a cache from LoadHashCache.
const loadedHashCacheSize = 16384

// racyMargin: see HashCache. Two seconds covers the coarsest file system
// clocks (FAT and SMB count in units of two seconds).
var racyMargin = 2 * time.Second

// hashClock is the clock racyMargin is measured with (tests move it).
var hashClock = time.Now

// sharedHashes is the cache of this process: Diff's default.
var sharedHashes = NewHashCache(DefaultHashCacheSize)

// NewHashCache returns an empty cache of at most max entries
// (DefaultHashCacheSize when max <= 0).
func NewHashCache(max int) *HashCache {
	if max <= 0 {
		max = DefaultHashCacheSize
	}
	c := &HashCache{max: max, entries: map[string]*cacheEntry{}}
	c.lru.next, c.lru.prev = &c.lru, &c.lru
	return c
}

// Len returns the number of entries.
func (c *HashCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *HashCache) unlink(e *cacheEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (c *HashCache) pushFront(e *cacheEntry) {
	e.prev, e.next = &c.lru, c.lru.next
	c.lru.next.prev = e
	c.lru.next = e
}

// get returns the hex hash recorded for key with identity id.
func (c *HashCache) get(key string, id fileID) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil || e.id != id {
		return "", false
	}
	c.unlink(e)
	c.pushFront(e)
	return hex.EncodeToString(e.sum[:]), true
}

// put records the hash of key with identity id; sum is hex.
func (c *HashCache) put(key string, id fileID, sum string) {
	var raw [sha256.Size]byte
	if n, err := hex.Decode(raw[:], []byte(sum)); err != nil || n != len(raw) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dirty = true
	if e := c.entries[key]; e != nil {
		e.id, e.sum = id, raw
		c.unlink(e)
		c.pushFront(e)
		return
	}
	e := &cacheEntry{key: key, id: id, sum: raw}
	c.entries[key] = e
	c.pushFront(e)
	for len(c.entries) > c.max {
		last := c.lru.prev
		c.unlink(last)
		delete(c.entries, last.key)
	}
}

// hashCacheFile is the JSON form of a HashCache, most recently used first.
type hashCacheFile struct {
	Version int              `json:"version"`
	Entries []hashCacheEntry `json:"entries"`
}

type hashCacheEntry struct {
	Path string `json:"path"`
	fileID
	SHA256 string `json:"sha256"`
}

const hashCacheVersion = 1

// LoadHashCache reads a cache written by Save, such as hashes.json next to
// a project's manifest.json; it holds at most 16 384 entries. A missing file
// is an empty cache. A file that cannot be read or decoded also gives an
// empty cache, usable, with an error that says why (a cache is never worth
// failing for; log it).
func LoadHashCache(path string) (*HashCache, error) {
	c := NewHashCache(loadedHashCacheSize)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reading hash cache: %w", err)
	}
	var f hashCacheFile
	if err := json.Unmarshal(data, &f); err != nil {
		return c, fmt.Errorf("hash cache %s is corrupt: %w", path, err)
	}
	if f.Version != hashCacheVersion {
		return c, fmt.Errorf("hash cache %s has version %d, not %d: ignored", path, f.Version, hashCacheVersion)
	}
	// Least recently used first, so the most recent end up in front.
	for i := len(f.Entries) - 1; i >= 0; i-- {
		e := f.Entries[i]
		c.put(e.Path, e.fileID, e.SHA256)
	}
	c.dirty = false
	return c, nil
}

// Save writes the cache atomically (as Manifest.Save does), when it changed
// since it was loaded or last saved.
func (c *HashCache) Save(path string) error {
	c.mu.Lock()
	if !c.dirty {
		c.mu.Unlock()
		return nil
	}
	f := hashCacheFile{Version: hashCacheVersion, Entries: make([]hashCacheEntry, 0, len(c.entries))}
	for e := c.lru.next; e != &c.lru; e = e.next {
		f.Entries = append(f.Entries, hashCacheEntry{Path: e.key, fileID: e.id, SHA256: hex.EncodeToString(e.sum[:])})
	}
	c.dirty = false
	c.mu.Unlock()
	data, err := json.Marshal(f)
	if err == nil {
		err = WriteFileAtomic(path, data)
	}
	if err != nil {
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
	}
	return err
}

// treeHasher hashes files of one tree (a Root opened on dir) through a
// cache (nil: none).
type treeHasher struct {
	root  *os.Root
	cache *HashCache
	top   string // the tree's absolute path, for the cache's keys
}

func newTreeHasher(root *os.Root, dir string, cache *HashCache) treeHasher {
	abs, err := filepath.Abs(dir)
	if err != nil {
		cache = nil
	}
	return treeHasher{root: root, cache: cache, top: abs}
}

func (t treeHasher) key(rel string) string { return t.top + "\x00" + rel }

// hash returns the hex SHA-256 of the regular file rel and its size, as
// hashFile does. listed is rel's Lstat from the walk: when the cache has
// the hash of the file with that identity, the file is not read.
func (t treeHasher) hash(ctx context.Context, rel string, listed fs.FileInfo, buf *lazyBuf) (string, int64, error) {
	if t.cache == nil {
		return hashFile(ctx, t.root, rel, buf.get())
	}
	if id, ok := fileIDOf(listed); ok {
		if sum, ok := t.cache.get(t.key(rel), id); ok {
			return sum, id.Size, nil
		}
	}
	start := hashClock()
	f, err := t.root.OpenFile(rel, readFlags, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if !before.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s is no longer a regular file", rel)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, ctxReader{ctx, f}, buf.get())
	if err != nil {
		return "", 0, fmt.Errorf("reading %s: %w", rel, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if after, err := f.Stat(); err == nil {
		id, ok := fileIDOf(before)
		idAfter, okAfter := fileIDOf(after)
		if ok && okAfter && id == idAfter && id.Size == n && id.CTime < start.Add(-racyMargin).UnixNano() {
			t.cache.put(t.key(rel), id, sum)
		}
	}
	return sum, n, nil
}
