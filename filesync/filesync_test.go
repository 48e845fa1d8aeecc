//go:build unix

package filesync

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
)

func TestDiffClassifies(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{
		"same.txt":      "same",
		"changed.txt":   "new content!",
		"c/d.txt":       "deep",
		"new.txt":       "brand new",
		"sub/new/x.txt": "x",
	})
	build(t, prod, tree{
		"same.txt":       "same",
		"changed.txt":    "old content",
		"c/d.txt":        "deep",
		"old.txt":        "deployed before, gone from the workspace",
		"unknown.txt":    "written by the app",
		".env":           "SECRET=1",
		"data/db.sqlite": "rows",
		"data/sub/x":     "more rows",
		"c/cache.bin":    "app cache next to deployed files",
		"empty/":         "",
	})
	m := &Manifest{Files: map[string]FileMeta{
		"same.txt": {}, "changed.txt": {}, "c/d.txt": {}, "old.txt": {},
		"vanished.txt": {}, // deployed once, since removed from production
	}}
	p := diff(t, ws, prod, m)
	eq(t, "added", paths(p.Added), []string{"new.txt", "sub/new/x.txt"})
	eq(t, "modified", paths(p.Modified), []string{"changed.txt"})
	eq(t, "deleted", paths(p.Deleted), []string{"old.txt"})
	eq(t, "kept", p.Kept, []string{".env", "c/cache.bin", "data/", "empty/", "unknown.txt"})
	eq(t, "refused", refusedPaths(p.Refused), nil)
	eq(t, "forgotten", p.forgotten, []string{"vanished.txt"})
	if p.KeptCount != 5 {
		t.Errorf("KeptCount = %d", p.KeptCount)
	}
	if want := int64(len("brand new") + len("x") + len("new content!")); p.Bytes != want {
		t.Errorf("Bytes = %d, want %d", p.Bytes, want)
	}
	if p.Empty() {
		t.Error("plan is empty")
	}
	for _, c := range append(p.Added, p.Modified...) {
		if len(c.Hash) != 64 {
			t.Errorf("%s: hash %q", c.Path, c.Hash)
		}
	}

	s := p.Summary(1)
	if s.Added != 2 || len(s.AddedPaths) != 1 || s.AddedPaths[0] != "new.txt" || s.KeptCount != 5 || len(s.Kept) != 1 || s.Digest != p.Digest {
		t.Errorf("summary %+v", s)
	}
	if _, err := json.Marshal(s); err != nil {
		t.Fatal(err)
	}

	// Applying it leaves the kept paths alone and gives production the
	// workspace's content.
	before := map[string]string{}
	for _, k := range []string{".env", "data/db.sqlite", "data/sub/x", "unknown.txt", "c/cache.bin"} {
		before[k] = readFile(t, filepath.Join(prod, k))
	}
	must(t, Apply(t.Context(), ws, prod, p, nil))
	for k, v := range before {
		if got := readFile(t, filepath.Join(prod, k)); got != v {
			t.Errorf("%s changed to %q", k, got)
		}
	}
	if _, err := os.Lstat(filepath.Join(prod, "old.txt")); !os.IsNotExist(err) {
		t.Errorf("old.txt not deleted: %v", err)
	}
	for _, k := range []string{"changed.txt", "new.txt", "sub/new/x.txt"} {
		if readFile(t, filepath.Join(prod, k)) != readFile(t, filepath.Join(ws, k)) {
			t.Errorf("%s not synced", k)
		}
	}
	m.Apply(p)
	if again := diff(t, ws, prod, m); !again.Empty() {
		t.Errorf("plan after apply is not empty: %+v", again.Summary(-1))
	}
	if _, ok := m.Files["vanished.txt"]; ok {
		t.Error("manifest still has vanished.txt")
	}
}

func TestTouchOnlyIsNotAChange(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{"a.txt": "hello", "b.txt": "world"})
	build(t, prod, tree{"a.txt": "hello", "b.txt": "world"})
	later := baseTime.Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(ws, "a.txt"), later, later))
	// b: production touched instead, and its hash known from the manifest.
	must(t, os.Chtimes(filepath.Join(prod, "b.txt"), later, later))

	m := &Manifest{Files: map[string]FileMeta{}}
	p := diff(t, ws, prod, m)
	if !p.Empty() {
		t.Fatalf("touch-only changes in the plan: %+v", p.Summary(-1))
	}
	m.Apply(p)
	if h := m.Files["a.txt"].Hash; len(h) != 64 {
		t.Errorf("the hash computed for a.txt is not recorded: %q", h)
	}
	// The manifest's hash stands for production's content when its stat
	// still matches: a content change of the same size in the workspace
	// is then found without reading production.
	must(t, os.WriteFile(filepath.Join(ws, "a.txt"), []byte("HELLO"), 0o644))
	p = diff(t, ws, prod, m)
	eq(t, "modified", paths(p.Modified), []string{"a.txt"})
}

func TestModeChangeIsAChange(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{"run.sh": "#!/bin/sh\n"})
	build(t, prod, tree{"run.sh": "#!/bin/sh\n"})
	must(t, os.Chmod(filepath.Join(ws, "run.sh"), 0o755))
	p := diff(t, ws, prod, nil)
	eq(t, "modified", paths(p.Modified), []string{"run.sh"})
	must(t, Apply(t.Context(), ws, prod, p, nil))
	fi, err := os.Stat(filepath.Join(prod, "run.sh"))
	must(t, err)
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v", fi.Mode())
	}
}

func TestModesAndTimesPreserved(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{"bin/tool": "x", "secret.key": "k", "shared/": "", "suid": "s"})
	must(t, os.Chmod(filepath.Join(ws, "bin/tool"), 0o750))
	must(t, os.Chmod(filepath.Join(ws, "suid"), fs.ModeSetuid|fs.ModeSetgid|0o755))
	if fi, err := os.Stat(filepath.Join(ws, "suid")); err != nil || fi.Mode()&fs.ModeSetuid == 0 {
		t.Fatalf("setuid not set in the workspace: %v %v", fi, err)
	}
	must(t, os.Chmod(filepath.Join(ws, "secret.key"), 0o600))
	must(t, os.Chmod(filepath.Join(ws, "bin"), 0o711))
	p := diff(t, ws, prod, nil)
	must(t, Apply(t.Context(), ws, prod, p, nil))
	m := &Manifest{}
	m.Apply(p)
	if !diff(t, ws, prod, m).Empty() {
		t.Error("not in sync after apply")
	}
	// setuid and setgid are not deployed.
	for rel, want := range map[string]fs.FileMode{"bin/tool": 0o750, "secret.key": 0o600, "bin": fs.ModeDir | 0o711, "suid": 0o755} {
		fi, err := os.Lstat(filepath.Join(prod, rel))
		must(t, err)
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), want)
		}
		if !fi.IsDir() && !fi.ModTime().Equal(baseTime) {
			t.Errorf("%s: mtime %v", rel, fi.ModTime())
		}
	}
	if _, err := os.Lstat(filepath.Join(prod, "shared")); !os.IsNotExist(err) {
		t.Errorf("an empty workspace directory was created: %v", err)
	}
}

func TestManifestDecidesDeletion(t *testing.T) {
	ws, prod, state := dirs(t)
	build(t, ws, tree{"app.py": "v1", "lib/util.py": "u", "gone.py": "soon removed"})
	build(t, prod, tree{"notes.txt": "the operator's"})
	m, err := LoadManifest(filepath.Join(state, "manifest.json"))
	must(t, err)
	if len(m.Files) != 0 {
		t.Fatal("a missing manifest is not empty")
	}
	deploy(t, ws, prod, state, "b1", m)
	must(t, m.Save(filepath.Join(state, "manifest.json")))
	m, err = LoadManifest(filepath.Join(state, "manifest.json"))
	must(t, err)
	if len(m.Files) != 3 || m.Files["lib/util.py"].Hash == "" {
		t.Fatalf("manifest %+v", m.Files)
	}

	must(t, os.Remove(filepath.Join(ws, "gone.py")))
	p := diff(t, ws, prod, m)
	eq(t, "deleted", paths(p.Deleted), []string{"gone.py"})
	eq(t, "kept", p.Kept, []string{"notes.txt"})

	// A file that matched production before its first deploy is owned
	// from then on, too.
	ws2, prod2, _ := dirs(t)
	build(t, ws2, tree{"a": "1", "b": "2"})
	build(t, prod2, tree{"a": "1", "b": "2"})
	m2 := &Manifest{}
	p2 := diff(t, ws2, prod2, m2)
	if !p2.Empty() {
		t.Fatal("identical trees differ")
	}
	m2.Apply(p2)
	must(t, os.Remove(filepath.Join(ws2, "b")))
	eq(t, "deleted", paths(diff(t, ws2, prod2, m2).Deleted), []string{"b"})
}

func TestManifestSaveIsAtomicJSON(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "manifest.json")
	m := &Manifest{Files: map[string]FileMeta{"a": {Size: 1, Mode: 0o644, MTime: baseTime, Hash: "h"}, "l": {Mode: fs.ModeSymlink | 0o777, Link: "a"}}}
	must(t, m.Save(p))
	got, err := LoadManifest(p)
	must(t, err)
	if !got.Files["a"].MTime.Equal(baseTime) || got.Files["a"].Hash != "h" || got.Files["l"].Link != "a" {
		t.Errorf("round trip: %+v", got.Files)
	}
	entries, err := os.ReadDir(filepath.Dir(p))
	must(t, err)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	must(t, os.WriteFile(p, []byte("{not json"), 0o600))
	if _, err := LoadManifest(p); err == nil {
		t.Error("a corrupt manifest loads")
	}
}

func TestBerthignore(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{
		IgnoreFile:        "# logs\n*.log\n!keep.log\ntmp/\n/build/out\n\n",
		"app.log":         "x",
		"keep.log":        "x",
		"sub/trace.log":   "x",
		"tmp/scratch":     "x",
		"sub/tmp/scratch": "x",
		"tmp.txt":         "x",
		"build/out":       "x",
		"sub/build/out":   "x",
		"main.go":         "x",
		".env":            "x",
		".git/HEAD":       "x",
		"node_modules/m":  "x",
		"__pycache__/c":   "x",
		"x.pyc":           "x",
	})
	build(t, prod, tree{
		"old.log":    "production log: excluded, kept even though in the manifest",
		"tmp/thing":  "kept",
		".git/HEAD":  "kept",
		"main.go":    "old",
		"main.go.sw": "kept",
	})
	m := &Manifest{Files: map[string]FileMeta{"old.log": {}, "tmp/thing": {}}}
	p := diff(t, ws, prod, m)
	eq(t, "added", paths(p.Added), []string{IgnoreFile, "keep.log", "sub/build/out", "tmp.txt"})
	eq(t, "modified", paths(p.Modified), []string{"main.go"})
	eq(t, "deleted", paths(p.Deleted), nil)
	eq(t, "kept", p.Kept, []string{".git/", "main.go.sw", "old.log", "tmp/"})
	eq(t, "forgotten", p.forgotten, []string{"old.log", "tmp/thing"})

	// Extra lines come after .berthignore.
	p = diff(t, ws, prod, m, "tmp.txt", "!x.pyc")
	eq(t, "added with extras", paths(p.Added), []string{IgnoreFile, "keep.log", "sub/build/out", "x.pyc"})
}

func TestRulesExcluded(t *testing.T) {
	cases := []struct {
		lines []string
		rel   string
		isDir bool
		want  bool
	}{
		{nil, ".env", false, true},
		{nil, "config/.env", false, true},
		{nil, ".env.example", false, false},
		{nil, "node_modules", true, true},
		{nil, "node_modules", false, false}, // node_modules/ is for directories
		{nil, "web/node_modules/react/index.js", false, true},
		{nil, "a/__pycache__/x.cpython.pyc", false, true},
		{nil, "mod.pyc", false, true},
		{nil, ".git", true, true},
		{nil, ".git", false, true}, // a worktree's .git file
		{nil, ".berth-tmp-abc", false, true},
		{nil, "main.go", false, false},
		{[]string{"!.env"}, ".env", false, false},
		{[]string{"!.git"}, ".git/config", false, true}, // hard rule
		{[]string{"*.log"}, "a/b/c.log", false, true},
		{[]string{"*.log", "!keep.log"}, "d/keep.log", false, false},
		{[]string{"logs/", "!logs/keep.log"}, "logs/keep.log", false, true}, // parent excluded: no re-include
		{[]string{"logs/*", "!logs/keep.log"}, "logs/keep.log", false, false},
		{[]string{"logs/*", "!logs/keep.log"}, "logs/other.log", false, true},
		{[]string{"/root.txt"}, "root.txt", false, true},
		{[]string{"/root.txt"}, "sub/root.txt", false, false},
		{[]string{"doc/frotz"}, "doc/frotz", false, true},
		{[]string{"doc/frotz"}, "a/doc/frotz", false, false},
		{[]string{"frotz"}, "a/doc/frotz", false, true},
		{[]string{"**/foo"}, "foo", false, true},
		{[]string{"**/foo"}, "a/b/foo", false, true},
		{[]string{"**/foo/bar"}, "x/foo/bar", false, true},
		{[]string{"abc/**"}, "abc/x/y", false, true},
		// As in git, "abc/**" matches what is inside abc, not abc, so a
		// file in abc can be re-included.
		{[]string{"abc/**"}, "abc", true, false},
		{[]string{"abc/**", "!abc/keep"}, "abc/keep", false, false},
		{[]string{"abc/**", "!abc/keep"}, "abc/other", false, true},
		{[]string{"abc/*", "!abc/keep"}, "abc/keep", false, false},
		{[]string{"a/**/b"}, "a/b", false, true},
		{[]string{"a/**/b"}, "a/x/y/b", false, true},
		{[]string{"a/**/b"}, "a/x/y/c", false, false},
		{[]string{"Documentation/*.html"}, "Documentation/git.html", false, true},
		{[]string{"Documentation/*.html"}, "Documentation/ppc/ppc.html", false, false},
		{[]string{"file?.txt"}, "file1.txt", false, true},
		{[]string{"file?.txt"}, "file10.txt", false, false},
		{[]string{"[a-c].txt"}, "b.txt", false, true},
		{[]string{"[a-c].txt"}, "d.txt", false, false},
		{[]string{"[^a-c].txt"}, "d.txt", false, true},
		{[]string{"[^a-c].txt"}, "a.txt", false, false},
		// As in git: "[!" negates, POSIX classes name their characters,
		// a "]" first in a class is a character.
		{[]string{"[!a-c].txt"}, "d.txt", false, true},
		{[]string{"[!a-c].txt"}, "a.txt", false, false},
		{[]string{"[[:digit:]].txt"}, "7.txt", false, true},
		{[]string{"[[:digit:]].txt"}, "x.txt", false, false},
		{[]string{"[]x].txt"}, "].txt", false, true},
		{[]string{"[!]x].txt"}, "].txt", false, false},
		{[]string{"[[:nope:]].txt"}, "n.txt", false, false},
		{[]string{`\#hash`}, "#hash", false, true},
		{[]string{`\!bang`}, "!bang", false, true},
		{[]string{"# comment"}, "# comment", false, false},
		{[]string{"trail   "}, "trail", false, true},
		{[]string{`sp\ `}, "sp ", false, true},
		{[]string{"c++"}, "c++", false, true},
		{[]string{"a|b"}, "a", false, false},
		{[]string{"(x)"}, "(x)", false, true},
		{[]string{"*.LOG"}, "a.log", false, false},
		{[]string{"tmp/"}, "tmp", false, false},
		{[]string{"tmp/"}, "tmp", true, true},
		{[]string{"tmp/"}, "tmp/x", false, true},
		{[]string{"*"}, "anything/at/all", false, true},
		{[]string{"/"}, "x", false, false},
		{[]string{"!"}, "x", false, false},
		{[]string{"[]"}, "[]", false, false}, // an invalid pattern matches nothing, as in git
		{[]string{"[abc"}, "[abc", false, false},
		{[]string{"ok", "[z-a]"}, "ok", false, true}, // accepted, not an error
		// A name pattern applies to the last name only, as in git.
		{[]string{"*.log", "!sub"}, "sub/x.log", false, true},
		{[]string{"*", "!*/", "!src/**"}, "src/main.go", false, false},
		{[]string{"*", "!*/", "!src/**"}, "web/main.go", false, true},
		{[]string{"!*/"}, "config/.env", false, true},
		// As in git, a path pattern matches that path, not what is inside
		// it: "!a/b" re-includes a/b, and x.c inside is still *.c.
		{[]string{"*.c", "!a/b"}, "a/b/x.c", false, true},
		{[]string{"a/b/", "!a/b/"}, "a/b/x.c", false, false},
		{[]string{"a/**/b"}, "a/b", false, true},
		{[]string{"a/**/b"}, "a/x/y/b", false, true},
		{[]string{"a/**/b"}, "a/x/y/c", false, false},
		{[]string{"a/**/**/b"}, "a/b", false, true},
		{[]string{"a/x**y/b"}, "a/xzzy/b", false, true},
		{[]string{`a[\-]b`}, "a-b", false, true},
		{[]string{`a[\-]b`}, "a,b", false, false},
		{[]string{"héllo*"}, "héllo-wörld", false, true},
	}
	for _, c := range cases {
		r, err := CompileRules(c.lines...)
		if err != nil {
			t.Errorf("%q: %v", c.lines, err)
			continue
		}
		if got := r.Excluded(c.rel, c.isDir); got != c.want {
			t.Errorf("lines %q: Excluded(%q, dir=%v) = %v, want %v", c.lines, c.rel, c.isDir, got, c.want)
		}
	}
	var nilRules *Rules
	if !nilRules.Excluded(".env", false) {
		t.Error("nil rules are not the defaults")
	}
}

func TestSymlinks(t *testing.T) {
	t.Run("escaping links are refused", func(t *testing.T) {
		ws, prod, _ := dirs(t)
		build(t, ws, tree{
			"ok.txt":    "x",
			"abs":       "@/etc/passwd",
			"up":        "@../../etc",
			"deep/up":   "@../../x",
			"self":      "@.",
			"via":       "@self/..", // lexically inside, escapes through self
			"inside/ok": "@../ok.txt",
			"dangling":  "@nowhere",
		})
		must(t, syscall.Mkfifo(filepath.Join(ws, "fifo"), 0o644))
		p := diff(t, ws, prod, nil)
		eq(t, "refused", refusedPaths(p.Refused), []string{"abs", "deep/up", "fifo", "up", "via"})
		eq(t, "added", paths(p.Added), []string{"dangling", "inside/ok", "ok.txt", "self"})
		err := Apply(t.Context(), ws, prod, p, nil)
		wantCode(t, err, events.CodeBadRequest)
		if entries, _ := os.ReadDir(prod); len(entries) != 0 {
			t.Errorf("a refused plan touched production: %v", entries)
		}
	})
	t.Run("links inside are synced as links", func(t *testing.T) {
		ws, prod, _ := dirs(t)
		build(t, ws, tree{"v1/app": "one", "current": "@v1", "bin/run": "@../v1/app"})
		p := diff(t, ws, prod, nil)
		must(t, Apply(t.Context(), ws, prod, p, nil))
		for rel, want := range map[string]string{"current": "v1", "bin/run": "../v1/app"} {
			got, err := os.Readlink(filepath.Join(prod, rel))
			if err != nil || got != want {
				t.Errorf("%s -> %q (%v), want %q", rel, got, err, want)
			}
		}
		m := &Manifest{}
		m.Apply(p)
		if !diff(t, ws, prod, m).Empty() {
			t.Error("links differ after apply")
		}
		// Retargeting a link is a modification.
		must(t, os.Remove(filepath.Join(ws, "current")))
		must(t, os.Symlink("v1/app", filepath.Join(ws, "current")))
		eq(t, "modified", paths(diff(t, ws, prod, m).Modified), []string{"current"})
	})
	t.Run("production symlinks are not followed", func(t *testing.T) {
		ws, prod, _ := dirs(t)
		outside := t.TempDir()
		build(t, outside, tree{"victim": "untouched"})
		build(t, ws, tree{"link/victim": "overwrite?", "file": "new"})
		build(t, prod, tree{"link": "@" + outside, "file": "@" + filepath.Join(outside, "victim")})
		p := diff(t, ws, prod, nil)
		eq(t, "refused", refusedPaths(p.Refused), []string{"link"})
		// Without the refused directory, the link named like a file is
		// replaced, not written through.
		must(t, os.RemoveAll(filepath.Join(ws, "link")))
		p = diff(t, ws, prod, nil)
		eq(t, "modified", paths(p.Modified), []string{"file"})
		must(t, Apply(t.Context(), ws, prod, p, nil))
		if got := readFile(t, filepath.Join(outside, "victim")); got != "untouched" {
			t.Errorf("wrote through a production symlink: %q", got)
		}
		if readFile(t, filepath.Join(prod, "file")) != "new" {
			t.Error("file not replaced")
		}
	})
}

func TestDigest(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{"a.txt": "aaaa", "b/c.txt": "cccc", "l": "@a.txt"})
	build(t, prod, tree{"old": "o"})
	m := &Manifest{Files: map[string]FileMeta{"old": {}}}
	d1 := diff(t, ws, prod, m).Digest
	d2 := diff(t, ws, prod, m).Digest
	if d1 != d2 || len(d1) != 64 {
		t.Fatalf("digests %q %q", d1, d2)
	}
	// One byte, same size and time.
	must(t, os.WriteFile(filepath.Join(ws, "b/c.txt"), []byte("cccd"), 0o644))
	must(t, os.Chtimes(filepath.Join(ws, "b/c.txt"), baseTime, baseTime))
	d3 := diff(t, ws, prod, m).Digest
	if d3 == d1 {
		t.Error("a changed byte does not change the digest")
	}
	must(t, os.Chmod(filepath.Join(ws, "a.txt"), 0o600))
	if d4 := diff(t, ws, prod, m).Digest; d4 == d3 {
		t.Error("a changed mode does not change the digest")
	}
	// Data written by the app does not change it.
	d5 := diff(t, ws, prod, m).Digest
	build(t, prod, tree{"data/new": "app data"})
	if d6 := diff(t, ws, prod, m).Digest; d6 != d5 {
		t.Error("a kept file changes the digest")
	}
	// Deleting is part of it.
	if d7 := diff(t, ws, prod, &Manifest{}).Digest; d7 == d5 {
		t.Error("a deletion is not part of the digest")
	}
}

// scenario builds a production with deployed files, app data and an
// earlier deploy, and a workspace with every kind of change.
func scenario(t *testing.T) (ws, prod, state string, m *Manifest) {
	ws, prod, state = dirs(t)
	build(t, ws, tree{
		"app.py": "v1", "lib/a.py": "a1", "lib/b.py": "b1", "conf/x": "deployed file, becomes a dir",
		"run.sh": "#!/bin/sh", "cur": "@lib",
	})
	build(t, prod, tree{".env": "SECRET", "data/db": "rows"})
	must(t, os.Chmod(filepath.Join(ws, "run.sh"), 0o700))
	m = &Manifest{}
	deploy(t, ws, prod, state, "first", m)
	// The next version.
	must(t, os.RemoveAll(filepath.Join(ws, "conf")))
	must(t, os.Remove(filepath.Join(ws, "lib/b.py")))
	must(t, os.Remove(filepath.Join(ws, "cur")))
	build(t, ws, tree{
		"app.py": "v2!", "lib/a.py": "a2 is longer", "new/deep/n.py": "n", "conf/x/inside": "now a dir",
		"cur": "@new", "z.txt": "last",
	})
	must(t, os.Chmod(filepath.Join(ws, "run.sh"), 0o755))
	return ws, prod, state, m
}

func TestApplyThenRestore(t *testing.T) {
	ws, prod, state, m := scenario(t)
	before := treeHash(t, prod)
	p := diff(t, ws, prod, m)
	eq(t, "added", paths(p.Added), []string{"conf/x/inside", "new/deep/n.py", "z.txt"})
	eq(t, "modified", paths(p.Modified), []string{"app.py", "cur", "lib/a.py", "run.sh"})
	eq(t, "deleted", paths(p.Deleted), []string{"conf/x", "lib/b.py"})
	bdir := filepath.Join(state, "second")
	must(t, Backup(t.Context(), prod, p, bdir))
	var calls []string
	must(t, Apply(t.Context(), ws, prod, p, func(done, total int) { calls = append(calls, fmt.Sprint(done, "/", total)) }))
	if len(calls) != 9 || calls[8] != "9/9" {
		t.Errorf("progress calls %v", calls)
	}
	after := treeHash(t, prod)
	if after == before {
		t.Fatal("apply changed nothing")
	}
	m2 := &Manifest{Files: map[string]FileMeta{}}
	for k, v := range m.Files {
		m2.Files[k] = v
	}
	m2.Apply(p)
	if again := diff(t, ws, prod, m2); !again.Empty() {
		t.Fatalf("not in sync after apply: %+v", again.Summary(-1))
	}

	must(t, Restore(t.Context(), prod, bdir))
	if got := treeHash(t, prod); got != before {
		t.Fatal("restore did not give the original tree back")
	}
	must(t, Restore(t.Context(), prod, bdir))
	if got := treeHash(t, prod); got != before {
		t.Fatal("a second restore changed the tree")
	}
	// Owners, modes and times are back too.
	fi, err := os.Stat(filepath.Join(prod, "run.sh"))
	must(t, err)
	if fi.Mode().Perm() != 0o700 || !fi.ModTime().Equal(baseTime) {
		t.Errorf("run.sh restored as %v %v", fi.Mode(), fi.ModTime())
	}

	// The backup is kept safe from a second Backup.
	wantCode(t, Backup(t.Context(), prod, p, bdir), events.CodeConflict)
	wantCode(t, Restore(t.Context(), prod, filepath.Join(state, "none")), events.CodeNotFound)
}

func TestRestoreAfterInterruptedApply(t *testing.T) {
	ws, prod, state, m := scenario(t)
	p := diff(t, ws, prod, m)
	total := len(p.Added) + len(p.Modified) + len(p.Deleted)
	base := t.TempDir()
	for k := 0; k <= total; k++ {
		t.Run(fmt.Sprint("after ", k), func(t *testing.T) {
			// A fresh copy of the scenario's production for each k.
			prodK := filepath.Join(base, fmt.Sprint("prod", k))
			must(t, os.Mkdir(prodK, 0o755))
			copyTree(t, prod, prodK)
			before := treeHash(t, prodK)
			pk := diff(t, ws, prodK, m)
			if pk.Digest != p.Digest {
				t.Fatal("the copy plans differently")
			}
			bdir := filepath.Join(state, fmt.Sprint("b", k))
			must(t, Backup(t.Context(), prodK, pk, bdir))
			ctx, progress := cancelAfter(t, k)
			if k == 0 {
				progress(0, total)
			}
			err := Apply(ctx, ws, prodK, pk, progress)
			if k < total && err == nil {
				t.Fatal("apply was not stopped")
			}
			// A worker killed in the middle of a write leaves a temporary
			// file behind.
			must(t, os.WriteFile(filepath.Join(prodK, "lib", tmpPrefix+"leftover"), []byte("partial"), 0o600))
			if got := treeHash(t, prodK); got == before {
				t.Fatal("nothing changed")
			}
			must(t, Restore(t.Context(), prodK, bdir))
			if got := treeHash(t, prodK); got != before {
				t.Fatalf("restore after %d of %d changes did not give the original back", k, total)
			}
			must(t, Restore(t.Context(), prodK, bdir))
			if got := treeHash(t, prodK); got != before {
				t.Fatal("a second restore changed the tree")
			}
		})
	}
}

// copyTree copies src into dst keeping modes and times (test helper: plain
// os calls).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	must(t, filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case rel == ".":
			return nil
		case fi.IsDir():
			return os.Mkdir(target, fi.Mode().Perm())
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, b, fi.Mode().Perm()); err != nil {
				return err
			}
			return os.Chtimes(target, fi.ModTime(), fi.ModTime())
		}
	}))
}

func TestOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	ws, prod, state := dirs(t)
	build(t, ws, tree{"new.txt": "n", "newdir/sub/f": "f", "old/replaced.txt": "v2", "old/added.txt": "a"})
	build(t, prod, tree{"old/replaced.txt": "v1"})
	must(t, os.Chown(prod, 1234, 1234))
	must(t, os.Chown(filepath.Join(prod, "old"), 2345, 2346))
	must(t, os.Chown(filepath.Join(prod, "old/replaced.txt"), 4321, 4322))
	before := treeHash(t, prod)
	p := diff(t, ws, prod, nil)
	bdir := filepath.Join(state, "b")
	must(t, Backup(t.Context(), prod, p, bdir))
	must(t, Apply(t.Context(), ws, prod, p, nil))
	for rel, want := range map[string][2]uint32{
		"new.txt":          {1234, 1234},
		"newdir":           {1234, 1234},
		"newdir/sub":       {1234, 1234},
		"newdir/sub/f":     {1234, 1234},
		"old/added.txt":    {2345, 2346},
		"old/replaced.txt": {4321, 4322},
	} {
		fi, err := os.Lstat(filepath.Join(prod, rel))
		must(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, st.Uid, st.Gid, want[0], want[1])
		}
	}
	// Restore gives the replaced file its owner back.
	must(t, Restore(t.Context(), prod, bdir))
	if treeHash(t, prod) != before {
		t.Fatal("restore did not give the tree back")
	}
	fi, err := os.Lstat(filepath.Join(prod, "old/replaced.txt"))
	must(t, err)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4321 || st.Gid != 4322 {
		t.Errorf("restored owner %d:%d", st.Uid, st.Gid)
	}
}

func TestPlanChanged(t *testing.T) {
	for name, change := range map[string]func(ws string){
		"content": func(ws string) { os.WriteFile(filepath.Join(ws, "b.txt"), []byte("changed meanwhile"), 0o644) },
		"mode":    func(ws string) { os.Chmod(filepath.Join(ws, "b.txt"), 0o600) },
		"removed": func(ws string) { os.Remove(filepath.Join(ws, "b.txt")) },
		"link":    func(ws string) { os.Remove(filepath.Join(ws, "c")); os.Symlink("b.txt", filepath.Join(ws, "c")) },
	} {
		t.Run(name, func(t *testing.T) {
			ws, prod, state := dirs(t)
			build(t, ws, tree{"a.txt": "a", "b.txt": "b", "c": "@a.txt", "d.txt": "d"})
			before := treeHash(t, prod)
			p := diff(t, ws, prod, nil)
			must(t, Backup(t.Context(), prod, p, filepath.Join(state, "b")))
			change(ws)
			var done int
			err := Apply(t.Context(), ws, prod, p, func(d, _ int) { done = d })
			wantCode(t, err, events.CodePlanChanged)
			if _, err := os.Lstat(filepath.Join(prod, "d.txt")); !os.IsNotExist(err) {
				t.Error("apply went on after the change")
			}
			if done == 0 {
				t.Error("nothing was applied before the changed file")
			}
			must(t, Restore(t.Context(), prod, filepath.Join(state, "b")))
			if treeHash(t, prod) != before {
				t.Error("restore did not undo the partial apply")
			}
		})
	}
}

func TestConflictsAreRefused(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{"dir-in-prod": "a file in the workspace", "file-in-prod/x": "a dir in the workspace"})
	build(t, prod, tree{"dir-in-prod/data": "app's", "file-in-prod": "app's"})
	p := diff(t, ws, prod, nil)
	eq(t, "refused", refusedPaths(p.Refused), []string{"dir-in-prod", "file-in-prod"})
	wantCode(t, Apply(t.Context(), ws, prod, p, nil), events.CodeBadRequest)
}

func TestKeptIsCapped(t *testing.T) {
	ws, prod, _ := dirs(t)
	tr := tree{}
	for i := range 150 {
		tr[fmt.Sprintf("f%03d", i)] = "x"
	}
	tr["logs/a"], tr["logs/b/c"] = "x", "y"
	build(t, prod, tr)
	build(t, ws, tree{"app": "x"})
	p := diff(t, ws, prod, nil)
	if len(p.Kept) != 100 || p.KeptCount != 151 || p.Kept[0] != "f000" {
		t.Errorf("kept %d/%d: %v", len(p.Kept), p.KeptCount, p.Kept[:3])
	}
	if p.Kept[99] != "f099" {
		t.Errorf("kept[99] = %q", p.Kept[99])
	}
	if s := p.Summary(-1); len(s.Kept) != 100 {
		t.Errorf("summary kept %d", len(s.Kept))
	}
}

func TestDiffErrors(t *testing.T) {
	ws, prod, _ := dirs(t)
	_, err := Diff(t.Context(), ws, filepath.Join(prod, "missing"), nil, nil)
	wantCode(t, err, events.CodeBadRequest)
	_, err = Diff(t.Context(), ws, filepath.Join(ws, "prod"), nil, nil)
	wantCode(t, err, events.CodeBadRequest)
	build(t, ws, tree{"a": "x"})
	p := diff(t, ws, prod, nil)
	p.Added[0].Path = "../escape"
	wantCode(t, Apply(t.Context(), ws, prod, p, nil), events.CodeBadRequest)
}

func TestTreeHash(t *testing.T) {
	a, b, _ := dirs(t)
	build(t, a, tree{"x": "1", "d/y": "2", "l": "@x"})
	build(t, b, tree{"x": "1", "d/y": "2", "l": "@x"})
	later := baseTime.Add(time.Minute)
	must(t, os.Chtimes(filepath.Join(b, "x"), later, later))
	if treeHash(t, a) != treeHash(t, b) {
		t.Fatal("equal trees hash differently")
	}
	for _, change := range []func(){
		func() { os.WriteFile(filepath.Join(b, "x"), []byte("2"), 0o644) },
		func() { os.Chmod(filepath.Join(b, "d"), 0o700) },
		func() { os.Remove(filepath.Join(b, "l")); os.Symlink("d", filepath.Join(b, "l")) },
		func() { os.WriteFile(filepath.Join(b, tmpPrefix+"x"), nil, 0o644) },
	} {
		h := treeHash(t, b)
		change()
		if treeHash(t, b) == h {
			t.Error("a change does not change the tree hash")
		}
	}
}
