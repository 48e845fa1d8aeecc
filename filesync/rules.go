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
	"regexp"
	"strings"

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

// The compiled default rules, shared by every Rules. The defaults are
// excluded unless .berthignore re-includes them with "!": local secrets,
// dependency trees the build recreates and bytecode caches. The hard rules
// apply whatever .berthignore says: a repository's .git is never part of a
// deployment, and Berth's own temporary files never are.
var (
	defaultPatterns = mustCompile(".env", "node_modules/", "__pycache__/", "*.pyc")
	hardPatterns    = mustCompile(".git", tmpPrefix+"*")
)

func mustCompile(lines ...string) []*pattern {
	ps, err := compileLines(lines, "default rule")
	if err != nil {
		panic(err) // the lines above are constants
	}
	return ps
}

// Rules decides which paths are outside what Berth syncs: the default
// exclusions (.git, node_modules, .env, __pycache__, *.pyc), the workspace's
// .berthignore and any extra lines, in that order, with gitignore semantics
// (the last matching line wins, "!" re-includes, a path inside an excluded
// directory is excluded). Excluded paths are never copied from the
// workspace, and never modified, deleted or backed up in production.
type Rules struct {
	hard     []*pattern
	patterns []*pattern
}

// LoadRules reads the rules of a workspace: the defaults, then
// <workspace>/.berthignore when it exists, then extra (gitignore lines, such
// as a project's configured exclusions). An invalid pattern is a
// CodeBadRequest error naming its line.
func LoadRules(workspace string, extra ...string) (*Rules, error) {
	root, err := os.OpenRoot(workspace)
	if err != nil {
		return nil, openError("workspace", workspace, err)
	}
	defer root.Close()

	r := &Rules{hard: hardPatterns, patterns: append([]*pattern(nil), defaultPatterns...)}
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
		ps, err := compileLines(strings.Split(text, "\n"), IgnoreFile)
		if err != nil {
			return nil, err
		}
		r.patterns = append(r.patterns, ps...)
	}
	ps, err := compileLines(extra, "extra rule")
	if err != nil {
		return nil, err
	}
	r.patterns = append(r.patterns, ps...)
	return r, nil
}

// CompileRules returns the default rules followed by lines (gitignore
// syntax), without reading any file.
func CompileRules(lines ...string) (*Rules, error) {
	ps, err := compileLines(lines, "rule")
	if err != nil {
		return nil, err
	}
	return &Rules{hard: hardPatterns, patterns: append(append([]*pattern(nil), defaultPatterns...), ps...)}, nil
}

// Excluded reports whether rel (relative to the tree's top, '/'-separated)
// is excluded; isDir tells whether rel is a directory. A path inside an
// excluded directory is excluded, as in git.
func (r *Rules) Excluded(rel string, isDir bool) bool {
	rel = strings.TrimPrefix(path.Clean("/"+rel), "/")
	if rel == "" {
		return false
	}
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' && r.excludedSelf(rel[:i], true) {
			return true
		}
	}
	return r.excludedSelf(rel, isDir)
}

// excludedSelf applies the rules to rel alone, its parents being known not
// to be excluded (the tree walk does not descend into excluded directories).
func (r *Rules) excludedSelf(rel string, isDir bool) bool {
	base := rel[strings.LastIndexByte(rel, '/')+1:]
	if r == nil {
		return matchAll(hardPatterns, rel, base, isDir) || matchAll(defaultPatterns, rel, base, isDir)
	}
	return matchAll(r.hard, rel, base, isDir) || matchAll(r.patterns, rel, base, isDir)
}

func matchAll(ps []*pattern, rel, base string, isDir bool) bool {
	excluded := false
	for _, p := range ps {
		if p.negate == excluded && p.match(rel, base, isDir) {
			excluded = !p.negate
		}
	}
	return excluded
}

// pattern is one compiled gitignore line.
type pattern struct {
	negate   bool
	dirOnly  bool
	anchored bool // matched against the whole path; otherwise against the base name
	// Exactly one of literal (no wildcards), suffix ("*" then a literal,
	// the common "*.log") and re is used.
	literal string
	suffix  string
	re      *regexp.Regexp
}

func (p *pattern) match(rel, base string, isDir bool) bool {
	if p.dirOnly && !isDir {
		return false
	}
	s := base
	if p.anchored {
		s = rel
	}
	switch {
	case p.re != nil:
		return p.re.MatchString(s)
	case p.suffix != "":
		return strings.HasSuffix(s, p.suffix)
	default:
		return s == p.literal
	}
}

// compileLines compiles gitignore lines; where names them in errors.
func compileLines(lines []string, where string) ([]*pattern, error) {
	var ps []*pattern
	for i, line := range lines {
		p, err := compilePattern(line)
		if err != nil {
			return nil, events.Errorf(events.CodeBadRequest, "%s line %d: %q is not a valid pattern: %v", where, i+1, line, err).
				WithHint("fix or remove that line (gitignore syntax)")
		}
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// compilePattern compiles one gitignore line, or returns nil for a blank
// line or a comment.
func compilePattern(line string) (*pattern, error) {
	line = strings.TrimSuffix(line, "\r")
	if line == "" || line[0] == '#' {
		return nil, nil
	}
	// Trailing spaces are ignored unless escaped with a backslash.
	for strings.HasSuffix(line, " ") && !strings.HasSuffix(line, `\ `) {
		line = line[:len(line)-1]
	}
	p := &pattern{}
	if strings.HasPrefix(line, "!") {
		p.negate = true
		line = line[1:]
	}
	if strings.HasSuffix(line, "/") {
		p.dirOnly = true
		line = strings.TrimRight(line, "/")
	}
	if strings.Contains(line, "/") {
		// A slash at the start or in the middle anchors the pattern at
		// the top of the tree.
		p.anchored = true
		line = strings.TrimLeft(line, "/")
	}
	if line == "" {
		return nil, nil
	}

	segs := strings.Split(line, "/")
	// Consecutive "**" segments mean the same as one.
	kept := segs[:1]
	for _, s := range segs[1:] {
		if !(s == "**" && kept[len(kept)-1] == "**") {
			kept = append(kept, s)
		}
	}
	segs = kept

	var re strings.Builder
	var lit strings.Builder // the pattern's text while it has no wildcard
	wild := false
	re.WriteString("^")
	for i, seg := range segs {
		if seg == "**" {
			wild = true
			switch {
			case len(segs) == 1:
				re.WriteString(".*")
			case i == 0:
				re.WriteString("(?:.*/)?") // any leading directories, or none
			case i == len(segs)-1:
				re.WriteString("/.*") // everything inside
			default:
				re.WriteString("(?:/.*)?") // zero or more directories
			}
			continue
		}
		if i > 0 && !(i == 1 && segs[0] == "**") {
			re.WriteString("/")
			lit.WriteString("/")
		}
		if globToRegexp(&re, &lit, seg) {
			wild = true
		}
	}
	re.WriteString("$")

	if !wild {
		p.literal = lit.String()
		return p, nil
	}
	if !p.anchored && len(segs) == 1 && strings.HasPrefix(segs[0], "*") && !strings.ContainsAny(segs[0][1:], `*?[\`) {
		p.suffix = segs[0][1:]
		if p.suffix != "" {
			return p, nil
		}
	}
	compiled, err := regexp.Compile(re.String())
	if err != nil {
		return nil, err
	}
	p.suffix = ""
	p.re = compiled
	return p, nil
}

// globToRegexp appends the regexp of one path segment of a glob to re, and
// its unescaped text to lit; it reports whether the segment has wildcards.
func globToRegexp(re, lit *strings.Builder, seg string) (wild bool) {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch c {
		case '*':
			for i+1 < len(seg) && seg[i+1] == '*' {
				i++
			}
			re.WriteString("[^/]*")
			wild = true
		case '?':
			re.WriteString("[^/]")
			wild = true
		case '\\':
			if i+1 < len(seg) {
				i++
			}
			re.WriteString(regexp.QuoteMeta(seg[i : i+1]))
			lit.WriteByte(seg[i])
		case '[':
			if end, class, ok := bracket(seg, i); ok {
				re.WriteString(class)
				i = end
				wild = true
				continue
			}
			re.WriteString(`\[`)
			lit.WriteByte(c)
		default:
			re.WriteString(regexp.QuoteMeta(seg[i : i+1]))
			lit.WriteByte(c)
		}
	}
	return wild
}

// bracket translates the bracket expression starting at seg[start] ('[')
// into a regexp class; end is the index of its closing ']'. ok is false when
// the bracket is not closed, and then '[' is an ordinary character.
func bracket(seg string, start int) (end int, class string, ok bool) {
	var b strings.Builder
	k := start + 1
	negate := k < len(seg) && (seg[k] == '!' || seg[k] == '^')
	if negate {
		k++
	}
	first := true
	for ; k < len(seg); k++ {
		c := seg[k]
		switch {
		case c == ']' && !first:
			if negate {
				return k, "[^/" + b.String() + "]", true
			}
			return k, "[" + b.String() + "]", true
		case c == '\\' && k+1 < len(seg):
			k++
			writeClassChar(&b, seg[k], true)
		case c == '[' && k+1 < len(seg) && seg[k+1] == ':':
			// A character class such as [:alpha:], which RE2 knows too.
			j := strings.Index(seg[k+2:], ":]")
			if j < 0 {
				return 0, "", false
			}
			b.WriteString(seg[k : k+2+j+2])
			k += 2 + j + 1
		default:
			writeClassChar(&b, c, false)
		}
		first = false
	}
	return 0, "", false
}

// writeClassChar writes c inside a regexp class: as a literal when escaped
// (so an escaped '-' is no range), else keeping '-' as the range operator.
func writeClassChar(b *strings.Builder, c byte, escaped bool) {
	switch {
	case c == '\\' || c == '[' || c == ']' || c == '^',
		escaped && c < 0x80 && !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'):
		b.WriteByte('\\')
	}
	b.WriteByte(c)
}
