package filesync

import (
	"path"
	"strings"
	"testing"
)

func FuzzRulesExcluded(f *testing.F) {
	for _, s := range []string{
		"*.log\n!keep.log", "tmp/", "/build/out", "**/x/**", "a/**/b", "[a-", "[!]]x", `\`, "[[:alpha:]",
		"[[:nope:]]", "!", "/", "c++", "\xff\xfe", `\#x`, "x\\ ", "***", "a/**/**/b",
		"*.pyc\n!keep.pyc", "node_modules/\n!node_modules", ".env\n!.env", "*cache*", "build*", "**.log", "*",
		"!*", "*/", "!.git", "a\\*b", "*.tar.gz", "*\n!*.go\n!*/",
	} {
		for _, rel := range []string{"a/b/keep.log", "node_modules", "src/cache/x.pyc", ".berth-tmp-1", "x/.env"} {
			f.Add(s, rel, true)
		}
	}
	f.Fuzz(func(t *testing.T, lines, rel string, isDir bool) {
		r, err := CompileRules(strings.Split(lines, "\n")...)
		if err != nil {
			return // an invalid pattern is reported, not a panic
		}
		// The fast path decides as go-git's matcher does.
		for _, dir := range []bool{isDir, !isDir} {
			got, want := r.Excluded(rel, dir), r.excluded(rel, dir, r.excludedSelfMatcher)
			if got != want {
				t.Fatalf("lines %q: Excluded(%q, dir=%v) = %v, go-git's matcher says %v", lines, rel, dir, got, want)
			}
		}
		if clean := strings.TrimPrefix(path.Clean("/"+rel), "/"); clean != "" {
			d, name := parentDir(clean), clean[strings.LastIndexByte(clean, '/')+1:]
			if got, want := r.excludedIn(d, name, isDir), r.excludedSelfMatcher(clean, isDir); got != want {
				t.Fatalf("lines %q: excludedIn(%q, %q, dir=%v) = %v, go-git's matcher says %v", lines, d, name, isDir, got, want)
			}
		}
	})
}
