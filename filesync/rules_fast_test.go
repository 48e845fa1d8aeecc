package filesync

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestRulesFastPathMatchesMatcher compares the rules' fast path with
// go-git's matcher (the reference) on generated rule sets and paths, for a
// path alone (excludedSelf, excludedIn) and with its parents (Excluded).
func TestRulesFastPathMatchesMatcher(t *testing.T) {
	atoms := []string{
		"a", "b", "abc", ".env", "node_modules", "__pycache__", "x.pyc", "keep.log", "app.log", "build", ".git",
		"*.log", "*.pyc", "*.tar.gz", "build*", "*cache*", "*", "**", "***", ".berth-tmp-*", "a?c", "[ab]", "[!a]x",
		"[^a]x", `\*x`, `x\ `, `x\`, "[", "[]", "sp ", "é*", "*é", "c++", "(x)", "#x", `\#x`, `\!x`, "",
	}
	names := []string{
		"a", "b", "c", "abc", "axc", ".env", ".env.example", "node_modules", "__pycache__", "x.pyc", "keep.pyc", "keep.log",
		"app.log", "build", "buildx", "cache", "mycache1", ".git", ".berth-tmp-z", "[ab]", "*", "*x", "bx", "ax", "a?c",
		"sp ", "sp", "x\\", "x ", "é", "éé", "c++", "(x)", "#x", "!x", "a.tar.gz", "tar.gz", "x",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	line := func() string {
		switch rng.IntN(20) {
		case 0:
			return "# comment"
		case 1:
			return "   "
		}
		var b strings.Builder
		if rng.IntN(4) == 0 {
			b.WriteString("!")
		}
		if rng.IntN(6) == 0 {
			b.WriteString("/")
		}
		n := 1
		if rng.IntN(4) == 0 {
			n += rng.IntN(3)
		}
		for i := range n {
			if i > 0 {
				b.WriteString("/")
			}
			b.WriteString(atoms[rng.IntN(len(atoms))])
		}
		if rng.IntN(4) == 0 {
			b.WriteString("/")
		}
		if rng.IntN(8) == 0 {
			b.WriteString("  ")
		}
		if rng.IntN(10) == 0 {
			b.WriteString("\r")
		}
		return b.String()
	}
	relPath := func() string {
		parts := make([]string, 1+rng.IntN(4))
		for i := range parts {
			parts[i] = names[rng.IntN(len(names))]
		}
		return strings.Join(parts, "/")
	}
	checked := 0
	for range 3000 {
		lines := make([]string, rng.IntN(7))
		for i := range lines {
			lines[i] = line()
		}
		r, err := CompileRules(lines...)
		if err != nil {
			t.Fatal(err)
		}
		rs := []*Rules{r}
		if len(lines) == 0 {
			rs = append(rs, nil) // the defaults
		}
		for _, r := range rs {
			for range 40 {
				rel := relPath()
				for _, isDir := range []bool{false, true} {
					want := r.excludedSelfMatcher(rel, isDir)
					if got := r.excludedSelf(rel, isDir); got != want {
						t.Fatalf("lines %q: excludedSelf(%q, dir=%v) = %v, go-git's matcher says %v", lines, rel, isDir, got, want)
					}
					dir, name := parentDir(rel), rel[strings.LastIndexByte(rel, '/')+1:]
					if got := r.excludedIn(dir, name, isDir); got != want {
						t.Fatalf("lines %q: excludedIn(%q, %q, dir=%v) = %v, go-git's matcher says %v", lines, dir, name, isDir, got, want)
					}
					if got, want := r.Excluded(rel, isDir), r.excluded(rel, isDir, r.excludedSelfMatcher); got != want {
						t.Fatalf("lines %q: Excluded(%q, dir=%v) = %v, go-git's matcher says %v", lines, rel, isDir, got, want)
					}
					checked++
				}
			}
		}
	}
	t.Logf("%d paths checked", checked)
}

// TestRulesFastPathKinds checks that the common patterns take the fast
// path, so that it is not silently lost.
func TestRulesFastPathKinds(t *testing.T) {
	m := compileFast([]string{".git", ".env", "node_modules/", "__pycache__/", "*.pyc", ".berth-tmp-*", "*cache*", "**", "src/*.go", "a?c"})
	for _, name := range []string{".git", ".env", "node_modules", "__pycache__"} {
		if m.names[name] == nil {
			t.Errorf("%s is not a literal", name)
		}
	}
	kinds := map[string]affixKind{}
	for _, a := range m.affixes {
		kinds[a.s] = a.kind
	}
	for s, k := range map[string]affixKind{".pyc": affixSuffix, ".berth-tmp-": affixPrefix, "cache": affixContains, "": affixAny} {
		if got, ok := kinds[s]; !ok || got != k {
			t.Errorf("affix %q: kind %v (%v), want %v", s, got, ok, k)
		}
	}
	if len(m.slow) != 2 {
		t.Errorf("%d patterns for go-git, want 2 (src/*.go, a?c)", len(m.slow))
	}
	if nd := m.names["node_modules"]; nd[0].idx != 0 || nd[1].idx == 0 {
		t.Errorf("node_modules/ applies to directories only: %+v", *nd)
	}
}
