package filesync

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func FuzzRulesExcluded(f *testing.F) {
	for _, s := range []string{
		"*.log\n!keep.log", "tmp/", "/build/out", "**/x/**", "a/**/b", "[a-", "[!]]x", `\`, "[[:alpha:]",
		"[[:nope:]]", "!", "/", "c++", "\xff\xfe", `\#x`, "x\\ ", "***", "a/**/**/b",
	} {
		f.Add(s, "a/b/keep.log", true)
	}
	f.Fuzz(func(t *testing.T, lines, rel string, isDir bool) {
		r, err := CompileRules(strings.Split(lines, "\n")...)
		if err != nil {
			return // an invalid pattern is reported, not a panic
		}
		r.Excluded(rel, isDir)
		r.Excluded(rel, !isDir)
	})
}

// BenchmarkDiff diffs a tree of 5 000 files (in 100 directories) that
// production has, with 50 files changed in the workspace: the common case
// of a deploy, mostly stat calls.
func BenchmarkDiff(b *testing.B) {
	ws, prod, _ := dirs(b)
	content := []byte(strings.Repeat("some source code\n", 64))
	m := &Manifest{Files: map[string]FileMeta{}}
	for d := range 100 {
		for f := range 50 {
			rel := fmt.Sprintf("pkg%03d/file%02d.go", d, f)
			for _, root := range []string{ws, prod} {
				p := filepath.Join(root, filepath.FromSlash(rel))
				must(b, os.MkdirAll(filepath.Dir(p), 0o755))
				must(b, os.WriteFile(p, content, 0o644))
				must(b, os.Chtimes(p, baseTime, baseTime))
			}
			m.Files[rel] = FileMeta{Size: int64(len(content)), Mode: 0o644, MTime: baseTime}
		}
	}
	changed := []byte(strings.Repeat("some changed code\n", 64))
	for i := range 50 {
		p := filepath.Join(ws, fmt.Sprintf("pkg%03d/file%02d.go", i*2, i%50))
		must(b, os.WriteFile(p, changed, 0o644))
		must(b, os.Chtimes(p, baseTime.Add(time.Minute), baseTime.Add(time.Minute)))
	}
	rules, err := LoadRules(ws)
	must(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p, err := Diff(b.Context(), ws, prod, m, rules)
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Modified) != 50 {
			b.Fatalf("%d modified", len(p.Modified))
		}
	}
}
