// Package filesync copies a workspace directory to a production directory
// safely: it computes the difference between the two (Diff), keeps the list
// of paths Berth deployed (Manifest), saves what a sync will overwrite or
// delete (Backup), applies the difference file by file with atomic renames
// (Apply) and puts production back as it was (Restore).
//
// Every file operation inside production and the workspace goes through an
// os.Root, so neither a path in a plan nor a symbolic link in either tree can
// make Berth read or write outside those directories.
package filesync

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"

	"github.com/berth-ops/berth/events"
)

// IgnoreFile is the name of the workspace file with extra exclusion rules,
// in gitignore syntax.
const IgnoreFile = ".berthignore"

// tmpPrefix starts the name of every temporary file Apply and Restore write
// in production; such files are invisible to Diff and removed by Restore.
const tmpPrefix = ".berth-tmp-"

// maxIgnoreFile bounds .berthignore: a larger one is a mistake, not rules.
const maxIgnoreFile = 1 << 20

// The parsed default rules, shared by every Rules. The defaults are
// excluded unless .berthignore re-includes them with "!": local secrets,
// dependency trees the build recreates and bytecode caches. The hard rules
// apply whatever .berthignore says: a repository's .git is never part of a
// deployment, and Berth's own temporary files never are. A .berthignore
// that re-includes .env deploys the workspace's .env, but never over a
// .env (or .env.*) that production has and Berth did not deploy: see
// Plan.Protected.
var (
	defaultLines    = []string{".env", "node_modules/", "__pycache__/", "*.pyc"}
	hardLines       = []string{".git", tmpPrefix + "*"}
	defaultPatterns = parseLines(defaultLines)
	hardMatcher     = gitignore.NewMatcher(parseLines(hardLines))
	defaultMatcher  = gitignore.NewMatcher(defaultPatterns)
	hardFast        = compileFast(hardLines)
	defaultFast     = compileFast(defaultLines)
)

// Rules decides which paths are outside what Berth syncs: the default
// exclusions (.git, node_modules, .env, __pycache__, *.pyc), the workspace's
// .berthignore and any extra lines, in that order, with gitignore semantics
// (the last matching line wins, "!" re-includes, a path inside an excluded
// directory is excluded). Excluded paths are never copied from the
// workspace, and never modified, deleted or backed up in production.
//
// The lines are parsed and combined by go-git's gitignore package; name
// patterns (no slash) are matched against the base name with it, path
// patterns by pathPattern, and bracket expressions are rewritten first
// (gitClasses), so that the results are git's: TestRulesAgreeWithGit checks
// them against git itself. Rules adds the hard rules, which no "!" line
// can undo, and the rule that nothing inside an excluded directory can be
// re-included. Literal names and simple globs such as "*.pyc" are decided
// without go-git, with the same results (fastMatcher; fuzzed against the
// matcher).
type Rules struct {
	hard    gitignore.Matcher
	matcher gitignore.Matcher
	// hardFast and fast decide as hard and matcher do, without go-git for
	// the common patterns (see fastMatcher).
	hardFast, fast *fastMatcher
}

// LoadRules reads the rules of a workspace: the defaults, then
// <workspace>/.berthignore when it exists, then extra (gitignore lines, such
// as a project's configured exclusions). A .berthignore that is not a
// regular file, or is larger than 1 MiB, is a CodeBadRequest error. Every
// line is accepted: a line that is not a valid pattern (such as an unclosed
// "[") matches nothing.
func LoadRules(workspace string, extra ...string) (*Rules, error) {
	root, err := os.OpenRoot(workspace)
	if err != nil {
		return nil, openError("workspace", workspace, err)
	}
	defer root.Close()

	var lines []string
	fi, err := root.Lstat(IgnoreFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", IgnoreFile, err)
	case !fi.Mode().IsRegular():
		return nil, events.Errorf(events.CodeBadRequest, "%s in the workspace is not a regular file", IgnoreFile).
			WithHint("make it a plain text file with gitignore patterns")
	case fi.Size() > maxIgnoreFile:
		return nil, events.Errorf(events.CodeBadRequest, "%s is larger than %d bytes", IgnoreFile, maxIgnoreFile).
			WithHint("keep it to patterns, one a line")
	default:
		data, err := root.ReadFile(IgnoreFile)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", IgnoreFile, err)
		}
		text := strings.TrimPrefix(string(data), "\ufeff")
		lines = strings.Split(text, "\n")
	}
	return newRules(append(lines, extra...)), nil
}

// CompileRules returns the default rules followed by lines (gitignore
// syntax), without reading any file. It never fails: a line that is not a
// valid pattern matches nothing. The error is kept for callers written
// when invalid lines were refused.
func CompileRules(lines ...string) (*Rules, error) {
	return newRules(lines), nil
}

// newRules returns the hard rules, and the defaults followed by lines.
func newRules(lines []string) *Rules {
	ps := append(append([]gitignore.Pattern(nil), defaultPatterns...), parseLines(lines)...)
	return &Rules{
		hard: hardMatcher, matcher: gitignore.NewMatcher(ps),
		hardFast: hardFast, fast: compileFast(append(slices.Clip(defaultLines), lines...)),
	}
}

// Excluded reports whether rel (relative to the tree's top, '/'-separated)
// is excluded; isDir tells whether rel is a directory. A path inside an
// excluded directory is excluded, as in git.
func (r *Rules) Excluded(rel string, isDir bool) bool {
	return r.excluded(rel, isDir, r.excludedSelf)
}

// excluded is Excluded with self deciding each path alone.
func (r *Rules) excluded(rel string, isDir bool, self func(rel string, isDir bool) bool) bool {
	rel = strings.TrimPrefix(path.Clean("/"+rel), "/")
	if rel == "" {
		return false
	}
	// go-git's matcher lets a "!" line re-include a path whose parent
	// directory is excluded; git does not, so the parents are checked
	// first, each on its own.
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' && self(rel[:i], true) {
			return true
		}
	}
	return self(rel, isDir)
}

// excludedSelf applies the rules to rel alone, its parents being known not
// to be excluded (the tree walk does not descend into excluded directories).
// It decides as excludedSelfMatcher does, faster.
func (r *Rules) excludedSelf(rel string, isDir bool) bool {
	if r == nil {
		return hardFast.match(rel, isDir) || defaultFast.match(rel, isDir)
	}
	return r.hardFast.match(rel, isDir) || r.fast.match(rel, isDir)
}

// excludedIn is excludedSelf of the entry name in the directory dir ("" at
// the top).
func (r *Rules) excludedIn(dir, name string, isDir bool) bool {
	if r == nil {
		return hardFast.matchIn(dir, name, isDir) || defaultFast.matchIn(dir, name, isDir)
	}
	return r.hardFast.matchIn(dir, name, isDir) || r.fast.matchIn(dir, name, isDir)
}

// excludedSelfMatcher is excludedSelf with go-git's matchers only: the
// reference the fast path is tested against.
func (r *Rules) excludedSelfMatcher(rel string, isDir bool) bool {
	parts := strings.Split(rel, "/")
	if r == nil {
		return hardMatcher.Match(parts, isDir) || defaultMatcher.Match(parts, isDir)
	}
	return r.hard.Match(parts, isDir) || r.matcher.Match(parts, isDir)
}

// parseLines parses gitignore lines relative to the top of the tree,
// skipping blank lines and comments as go-git does when it reads a
// .gitignore.
func parseLines(lines []string) []gitignore.Pattern {
	var ps []gitignore.Pattern
	for _, line := range lines {
		line, ok := ruleLine(line)
		if !ok {
			continue
		}
		var p gitignore.Pattern = baseNamePattern{gitignore.ParsePattern(line, nil)}
		if hasSlash(line) {
			p = parsePathPattern(line)
		}
		ps = append(ps, p)
	}
	return ps
}

// ruleLine is line without its "\r", its bracket expressions in the syntax
// of path.Match (gitClasses), a trailing "/**" as "/**/*", and whether it
// is a pattern: not a blank line or a comment. In git "abc/**" matches
// everything inside abc but not abc itself, so "!abc/keep" can bring a
// file back; go-git's matcher also matches abc with it.
func ruleLine(line string) (string, bool) {
	line = strings.TrimSuffix(line, "\r")
	ok := !strings.HasPrefix(line, "#") && strings.TrimSpace(line) != ""
	if t := strings.TrimRight(line, " "); strings.HasSuffix(t, "/**") && !strings.HasSuffix(line, `\ `) {
		line = t + "/*"
	}
	return gitClasses(line), ok
}

// posixClasses are the character classes of git's wildmatch, in the C
// locale, as ranges and escaped characters of path.Match; "/" is left out
// of punct, as a class never matches it in a path (and go-git splits
// patterns at every "/").
var posixClasses = map[string]string{
	"alnum":  "0-9A-Za-z",
	"alpha":  "A-Za-z",
	"blank":  " \t",
	"cntrl":  "\x00-\x1f\x7f",
	"digit":  "0-9",
	"graph":  "!-~",
	"lower":  "a-z",
	"print":  " -~",
	"punct":  `\!\"\#\$\%\&\'\(\)\*\+\,\-\.\:\;\<\=\>\?\@\[\\\]\^\_\` + "`" + `\{\|\}\~`,
	"space":  " \t\n\v\f\r",
	"upper":  "A-Z",
	"xdigit": "0-9A-Fa-f",
}

// gitClasses rewrites the bracket expressions of a gitignore pattern into
// the syntax of path.Match, which go-git's matcher uses: "[!...]" negates
// as "[^...]" does, POSIX classes such as "[:digit:]" become the characters
// they name, and a "]" first in a class is a character. A pattern without
// "[" is returned as it is; an unclosed "[" is left for the matcher, which
// then matches nothing with it.
func gitClasses(p string) string {
	if !strings.Contains(p, "[") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); {
		switch c := p[i]; {
		case c == '\\' && i+1 < len(p):
			b.WriteString(p[i : i+2])
			i += 2
		case c == '[':
			if class, end, ok := bracket(p, i); ok {
				b.WriteString(class)
				i = end
				continue
			}
			b.WriteByte(c)
			i++
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// bracket translates the bracket expression that starts at p[i] (a "[")
// and returns it with the index just past its "]"; ok is false when it is
// not closed.
func bracket(p string, i int) (class string, end int, ok bool) {
	var b strings.Builder
	b.WriteByte('[')
	j := i + 1
	if j < len(p) && (p[j] == '!' || p[j] == '^') {
		b.WriteByte('^')
		j++
	}
	for first := true; j < len(p); first = false {
		c := p[j]
		switch {
		case c == ']' && !first:
			b.WriteByte(']')
			return b.String(), j + 1, true
		case c == ']':
			b.WriteString(`\]`)
			j++
		case c == '\\' && j+1 < len(p):
			b.WriteString(p[j : j+2])
			j += 2
		case c == '-' && (first || strings.HasPrefix(p[j+1:], "]")):
			// First or last, "-" is a character.
			b.WriteString(`\-`)
			j++
		case c == '[' && strings.HasPrefix(p[j:], "[:"):
			if k := strings.Index(p[j+2:], ":]"); k >= 0 {
				if set, known := posixClasses[p[j+2:j+2+k]]; known {
					b.WriteString(set)
					j += 2 + k + 2
					continue
				}
			}
			b.WriteString(`\[`)
			j++
		default:
			b.WriteByte(c)
			j++
		}
	}
	return "", 0, false
}

// hasSlash reports whether go-git's ParsePattern treats line as a path
// (glob) pattern rather than a name pattern: whether a slash is left once
// "!", the trailing spaces and one trailing slash are taken off.
func hasSlash(line string) bool {
	line = strings.TrimPrefix(line, "!")
	if !strings.HasSuffix(line, `\ `) {
		line = strings.TrimRight(line, " ")
	}
	return strings.Contains(strings.TrimSuffix(line, "/"), "/")
}

// baseNamePattern matches a pattern without a slash against the last name
// of a path only, as git does. go-git matches such a pattern against every
// name in the path, so that "!src" would re-include src/.env after ".env"
// and the "*" then "!*/" idiom would re-include every file in a
// subdirectory; Rules checks the parent directories itself.
// pathPattern is a gitignore line with a slash, matched as git matches it:
// against the whole path, "**" standing for any number of directories.
// go-git's own glob matching also matches every path below a match, so a
// "!dir/" line would bring back everything inside dir, which git does not
// (what lies below an excluded directory is the directory rule's business,
// in Rules).
type pathPattern struct {
	parts     []string
	inclusion bool
	dirOnly   bool
}

// parsePathPattern reads a line as gitignore.ParsePattern does.
func parsePathPattern(line string) pathPattern {
	var p pathPattern
	line, p.inclusion = strings.CutPrefix(line, "!")
	if !strings.HasSuffix(line, `\ `) {
		line = strings.TrimRight(line, " ")
	}
	line, p.dirOnly = strings.CutSuffix(line, "/")
	for _, part := range strings.Split(line, "/") {
		if part != "" {
			p.parts = append(p.parts, part)
		}
	}
	return p
}

// Match implements gitignore.Pattern.
func (p pathPattern) Match(names []string, isDir bool) gitignore.MatchResult {
	switch {
	case p.dirOnly && !isDir, !globParts(p.parts, names):
		return gitignore.NoMatch
	case p.inclusion:
		return gitignore.Include
	}
	return gitignore.Exclude
}

// globParts reports whether the pattern's parts match the path's names one
// for one, a "**" part matching any number of names (none included), in
// O(len(parts)·len(names)).
func globParts(parts, names []string) bool {
	pi, ni := 0, 0
	starP, starN := -1, 0
	for ni < len(names) {
		switch {
		case pi < len(parts) && parts[pi] == "**":
			starP, starN = pi, ni
			pi++
		case pi < len(parts) && matchName(parts[pi], names[ni]):
			pi++
			ni++
		case starP >= 0:
			starN++
			pi, ni = starP+1, starN
		default:
			return false
		}
	}
	for pi < len(parts) && parts[pi] == "**" {
		pi++
	}
	return pi == len(parts)
}

// matchName matches one path element; an invalid pattern matches nothing.
func matchName(pattern, name string) bool {
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

type baseNamePattern struct{ gitignore.Pattern }

func (p baseNamePattern) Match(path []string, isDir bool) gitignore.MatchResult {
	return p.Pattern.Match(path[len(path)-1:], isDir)
}
