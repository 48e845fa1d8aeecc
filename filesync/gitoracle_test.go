package filesync

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// oracleTree is the tree the gitignore cases are decided on.
var oracleTree = []string{
	"a/b/c.txt", "a/c.txt", "abc/x", "abc/y/z", "abcd/x", "x.o", "x.c", "x.h", "x.oo",
	"y1.txt", "yA.txt", "y_.txt", "yé.txt", "foo/bar/baz.log", "foo/qux.log", "bar/baz.log",
	"doc/a.md", "doc/sub/b.md", "doc/sub/deep/c.md", "logs/2024/a.log", "logs/b.log",
	"build/out.bin", "src/build/x", "!weird", "#hash", "sp ace.txt", "Upper.TXT", "tab\tname",
	"q[1].txt", "star*.txt", "dir.d/f", "z/.hidden", "z/visible", "].txt", "n.txt",
}

// oracleCases are .berthignore contents, decided by git itself and by Rules.
var oracleCases = []string{
	"*.[!o]", "*.[^o]", "x.[!a-n]", "y[[:digit:]].txt", "y[[:alpha:]].txt", "y[[:alnum:]_].txt",
	"y[![:digit:]].txt", "y[[:upper:]].txt", "y[[:lower:][:digit:]].txt", "[[:upper:]]*",
	"abc/**", "abc/**/z", "**/bar", "**/bar/", "doc/**/*.md", "doc/**", "a/**/c.txt", "/build", "build/", "build",
	"logs/**/*.log", "\\!weird", "\\#hash", "sp\\ ace.txt", "foo/\n!foo/bar/baz.log", "foo/*\n!foo/bar/",
	"*.txt\n!y1.txt", "abc", "abc/", "a*/x", "**/x", "x.?", "x.??", "q\\[1\\].txt", "star\\*.txt",
	"*.d/", "z/*\n!z/visible", "/*\n!/doc", "**", "*", "doc/*", "doc/*/", "/doc/sub/", "sub",
	"**/*.log\n!logs/**", "*.TXT", "[", "a/b/", "a/b/**", "*/c.txt", "/*/c.txt",
	"abc/**\n!abc/x", "*.txt\n!a/b", "*.txt\n!a/b/", "a/**/c.txt\n!a/b/", "a/x**y/b", "a/**/**/c.txt", "/a/**", "abc/**\n!abc/y/", "doc/**\n!doc/sub/b.md", "[]x].txt", "[!]x].txt", "[[:nope:]].txt", "[[:punct:]].txt", "q[[:digit:]-].txt", "[a-]*",
}

// oracleByteWise are the known differences: git's wildmatch matches "?"
// and a bracket expression against one byte, path.Match against one
// character, so a negated class matches a non-ASCII character for Rules
// and not for git.
var oracleByteWise = map[string][]string{
	"y[![:digit:]].txt": {"yé.txt"},
}

// TestRulesAgreeWithGit decides every case with git (git ls-files of the
// ignored files) and with Rules, on the same tree.
func TestRulesAgreeWithGit(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("git is needed to check the gitignore semantics")
		}
		t.Skip("git not installed")
	}
	for _, c := range oracleCases {
		t.Run(strings.ReplaceAll(c, "\n", "⏎"), func(t *testing.T) {
			dir := t.TempDir()
			for _, p := range oracleTree {
				full := filepath.Join(dir, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			lines := strings.Split(c, "\n")
			ignore := strings.Join(append(slices.Clone(defaultLines), lines...), "\n") + "\n"
			if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte(ignore), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(git, "-c", "core.quotePath=false", "init", "-q", dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("git init: %v %s", err, out)
			}
			cmd = exec.Command(git, "-c", "core.quotePath=false", "-C", dir, "ls-files", "-z", "--others", "--ignored", "--exclude-standard")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("git ls-files: %v", err)
			}
			var byGit []string
			for _, p := range strings.Split(string(out), "\x00") {
				if p != "" {
					byGit = append(byGit, p)
				}
			}
			byGit = slices.DeleteFunc(byGit, func(p string) bool { return p == ".gitignore" }) // the oracle's own file
			slices.Sort(byGit)
			r, _ := CompileRules(lines...)
			var byRules []string
			for _, p := range oracleTree {
				if r.Excluded(p, false) {
					byRules = append(byRules, p)
				}
			}
			byRules = slices.DeleteFunc(byRules, func(p string) bool { return slices.Contains(oracleByteWise[c], p) })
			slices.Sort(byRules)
			if !slices.Equal(byGit, byRules) {
				t.Errorf("%q:\n git excludes   %q\n Rules exclude  %q", c, byGit, byRules)
			}
		})
	}
}
