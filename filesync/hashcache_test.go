//go:build linux || darwin

package filesync

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fakeSum(c byte) string { return strings.Repeat(string(c), 64) }

func TestHashCacheLRU(t *testing.T) {
	c := NewHashCache(2)
	id := func(n int64) fileID { return fileID{Size: n, MTime: 1, CTime: 2, Dev: 3, Ino: uint64(n)} }
	c.put("a", id(1), fakeSum('a'))
	c.put("b", id(2), fakeSum('b'))
	if h, ok := c.get("a", id(1)); !ok || h != fakeSum('a') {
		t.Fatalf("a: %q %v", h, ok)
	}
	c.put("c", id(3), fakeSum('c')) // b is the least recently used
	if _, ok := c.get("b", id(2)); ok {
		t.Error("b was not evicted")
	}
	if c.Len() != 2 {
		t.Errorf("Len %d", c.Len())
	}
	if _, ok := c.get("a", id(9)); ok {
		t.Error("another identity hits")
	}
	c.put("a", id(9), fakeSum('e'))
	if _, ok := c.get("a", id(1)); ok {
		t.Error("the replaced identity still hits")
	}
	if h, _ := c.get("a", id(9)); h != fakeSum('e') {
		t.Errorf("a: %q", h)
	}
	c.put("bad", id(4), "not hex")
	if _, ok := c.get("bad", id(4)); ok {
		t.Error("a malformed hash was recorded")
	}
	if NewHashCache(0).max != DefaultHashCacheSize {
		t.Error("NewHashCache(0) is not the default size")
	}
}

func TestHashCacheSaveLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state", "hashes.json")
	c, err := LoadHashCache(p)
	if err != nil || c.Len() != 0 {
		t.Fatalf("a missing file: %v, %d entries", err, c.Len())
	}
	for i, k := range []string{"x", "y", "z"} {
		c.put(k, fileID{Size: int64(i), Ino: 7}, fakeSum('1'+byte(i)))
	}
	c.get("x", fileID{Size: 0, Ino: 7}) // the most recent
	must(t, c.Save(p))
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved: %v %v", fi, err)
	}
	// Unchanged since saved: not written again.
	must(t, os.Remove(p))
	must(t, c.Save(p))
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Error("an unchanged cache was written again")
	}
	c.put("w", fileID{Size: 9, Ino: 7}, fakeSum('9'))
	must(t, c.Save(p))

	got, err := LoadHashCache(p)
	must(t, err)
	// The order of use is kept.
	var order []string
	for e := got.lru.next; e != &got.lru; e = e.next {
		order = append(order, e.key)
	}
	if strings.Join(order, " ") != "w x z y" {
		t.Errorf("most recently used first: %q, want w x z y", order)
	}
	for i, k := range []string{"x", "y", "z"} {
		if h, ok := got.get(k, fileID{Size: int64(i), Ino: 7}); !ok || h != fakeSum('1'+byte(i)) {
			t.Errorf("%s: %q %v", k, h, ok)
		}
	}

	for _, bad := range []string{"{not json", `{"version":2,"entries":[]}`} {
		must(t, os.WriteFile(p, []byte(bad), 0o600))
		c, err := LoadHashCache(p)
		if err == nil || c == nil || c.Len() != 0 {
			t.Errorf("%q: %v, %v", bad, c, err)
		}
	}
}

// TestDiffUsesHashCache shows that a hash in the cache stands for the
// file's content: Diff does not read a file the cache knows.
func TestDiffUsesHashCache(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{"a.txt": "hello"})
	build(t, prod, tree{"a.txt": "world"})
	later := baseTime.Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(ws, "a.txt"), later, later))

	// Just written: too recent to be cached (racyMargin).
	c := NewHashCache(0)
	p, err := Diff(t.Context(), ws, prod, nil, nil, WithHashCache(c))
	must(t, err)
	eq(t, "modified", paths(p.Modified), []string{"a.txt"})
	if c.Len() != 0 {
		t.Fatalf("%d entries for files just written", c.Len())
	}

	// Both files with the same (made-up) hash in the cache: unchanged.
	for _, top := range []string{ws, prod} {
		fi, err := os.Lstat(filepath.Join(top, "a.txt"))
		must(t, err)
		id, ok := fileIDOf(fi)
		if !ok {
			t.Fatal("no file identity")
		}
		abs, err := filepath.Abs(top)
		must(t, err)
		c.put(abs+"\x00a.txt", id, fakeSum('f'))
	}
	p, err = Diff(t.Context(), ws, prod, nil, nil, WithHashCache(c))
	must(t, err)
	if !p.Empty() || p.synced["a.txt"].Hash != fakeSum('f') {
		t.Fatalf("the cache was not used: %+v %+v", p.Summary(-1), p.synced)
	}
	// Without the cache the contents decide.
	p, err = Diff(t.Context(), ws, prod, nil, nil, WithHashCache(nil))
	must(t, err)
	eq(t, "modified without a cache", paths(p.Modified), []string{"a.txt"})

	// A write changes the identity: the entry no longer applies.
	time.Sleep(10 * time.Millisecond)
	must(t, os.WriteFile(filepath.Join(prod, "a.txt"), []byte("hello"), 0o644))
	must(t, os.Chtimes(filepath.Join(prod, "a.txt"), baseTime, baseTime))
	p, err = Diff(t.Context(), ws, prod, nil, nil, WithHashCache(c))
	must(t, err)
	eq(t, "modified after a write", paths(p.Modified), []string{"a.txt"}) // ws's made-up hash differs now

	// Files written long enough ago are cached, and found again.
	defer func(c func() time.Time) { hashClock = c }(hashClock)
	hashClock = func() time.Time { return time.Now().Add(racyMargin + time.Second) }
	c = NewHashCache(0)
	p1, err := Diff(t.Context(), ws, prod, nil, nil, WithHashCache(c))
	must(t, err)
	if c.Len() != 2 {
		t.Fatalf("%d entries cached, want 2", c.Len())
	}
	p2, err := Diff(t.Context(), ws, prod, nil, nil, WithHashCache(c))
	must(t, err)
	if !p1.Empty() || !p2.Empty() || p1.Digest != p2.Digest {
		t.Errorf("plans %+v, %+v", p1.Summary(-1), p2.Summary(-1))
	}

	// As a handler would keep it: next to the manifest.
	hp := filepath.Join(t.TempDir(), "hashes.json")
	must(t, c.Save(hp))
	c2, err := LoadHashCache(hp)
	must(t, err)
	if c2.Len() != 2 {
		t.Errorf("%d entries after a reload", c2.Len())
	}
}
