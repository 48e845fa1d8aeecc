package filesync

import (
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
)

// fastMatcher decides exactly as go-git's gitignore.Matcher over the same
// lines (parsed by parseLines) does, without running filepath.Match for the
// common patterns. A pattern without a slash applies to the last name of a
// path only (baseNamePattern), so its outcome depends on that name and on
// whether the path is a directory; such a pattern is
//
//   - a literal name (.git, .env, node_modules/, __pycache__/): in a map;
//   - "*" then a literal (*.pyc), a literal then "*" (.berth-tmp-*), "*",
//     a literal, "*" (*cache*), or only stars: strings.HasSuffix,
//     HasPrefix, Contains or anything, since filepath.Match's "*" matches
//     any run of characters but "/", and names have none;
//
// where a literal has none of filepath.Match's special characters (* ? [
// and \). Every other pattern (with a slash, or another glob) goes to
// go-git's own Match. As in go-git, the last pattern that matches decides:
// each pattern has its index, and a pattern is only tried when it could
// beat the best match found so far.
type fastMatcher struct {
	// names are the literal patterns: the best verdict for a file
	// ([0]) and for a directory ([1]) of that name.
	names map[string]*[2]verdict
	// affixes and slow are in decreasing index order.
	affixes []affixRule
	slow    []slowRule
}

// verdict is the outcome of the pattern at index idx-1 (0: none matched).
type verdict struct {
	idx     int
	include bool
}

type affixKind uint8

const (
	affixSuffix affixKind = iota
	affixPrefix
	affixContains
	affixAny
)

type affixRule struct {
	verdict
	kind    affixKind
	dirOnly bool
	s       string
}

func (a *affixRule) match(name string) bool {
	switch a.kind {
	case affixSuffix:
		return strings.HasSuffix(name, a.s)
	case affixPrefix:
		return strings.HasPrefix(name, a.s)
	case affixContains:
		return strings.Contains(name, a.s)
	default:
		return true
	}
}

type slowRule struct {
	idx int
	p   gitignore.Pattern
}

// compileFast compiles lines as parseLines does.
func compileFast(lines []string) *fastMatcher {
	m := &fastMatcher{names: map[string]*[2]verdict{}}
	idx := 0
	for _, line := range lines {
		line, ok := ruleLine(line)
		if !ok {
			continue
		}
		idx++
		if hasSlash(line) {
			m.slow = append(m.slow, slowRule{idx, parsePathPattern(line)})
			continue
		}
		// As gitignore.ParsePattern reads a line.
		v := verdict{idx: idx}
		p, include := strings.CutPrefix(line, "!")
		v.include = include
		if !strings.HasSuffix(p, `\ `) {
			p = strings.TrimRight(p, " ")
		}
		p, dirOnly := strings.CutSuffix(p, "/")
		lead := len(p) - len(strings.TrimLeft(p, "*"))
		lit := strings.Trim(p, "*")
		trail := len(p) - lead - len(lit)
		switch {
		case strings.ContainsAny(lit, `*?[\`):
			m.slow = append(m.slow, slowRule{idx, baseNamePattern{gitignore.ParsePattern(line, nil)}})
		case lead == 0 && trail == 0:
			vs := m.names[p]
			if vs == nil {
				vs = new([2]verdict)
				m.names[p] = vs
			}
			vs[1] = v
			if !dirOnly {
				vs[0] = v
			}
		default:
			a := affixRule{verdict: v, dirOnly: dirOnly, s: lit}
			switch {
			case lit == "":
				a.kind = affixAny
			case lead > 0 && trail > 0:
				a.kind = affixContains
			case lead > 0:
				a.kind = affixSuffix
			default:
				a.kind = affixPrefix
			}
			m.affixes = append(m.affixes, a)
		}
	}
	reverse := func(n int, swap func(i, j int)) {
		for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
			swap(i, j)
		}
	}
	reverse(len(m.affixes), func(i, j int) { m.affixes[i], m.affixes[j] = m.affixes[j], m.affixes[i] })
	reverse(len(m.slow), func(i, j int) { m.slow[i], m.slow[j] = m.slow[j], m.slow[i] })
	return m
}

// match reports whether rel ('/'-separated, not empty) is excluded: what
// gitignore.NewMatcher(parseLines(lines)).Match(strings.Split(rel, "/"),
// isDir) returns.
func (m *fastMatcher) match(rel string, isDir bool) bool {
	i := strings.LastIndexByte(rel, '/')
	return m.decide(rel, "", rel[i+1:], isDir)
}

// matchIn is match of the entry name of the directory dir ("" at the top).
func (m *fastMatcher) matchIn(dir, name string, isDir bool) bool {
	return m.decide("", dir, name, isDir)
}

// decide is match of rel, or when rel is "" of dir/name (only joined when
// a pattern needs the whole path).
func (m *fastMatcher) decide(rel, dir, name string, isDir bool) bool {
	var best verdict
	if vs := m.names[name]; vs != nil {
		if isDir {
			best = vs[1]
		} else {
			best = vs[0]
		}
	}
	for i := range m.affixes {
		a := &m.affixes[i]
		if a.idx <= best.idx {
			break
		}
		if (isDir || !a.dirOnly) && a.match(name) {
			best = a.verdict
			break
		}
	}
	if len(m.slow) > 0 && m.slow[0].idx > best.idx {
		if rel == "" {
			rel = joinRel(dir, name)
		}
		parts := strings.Split(rel, "/")
		for _, s := range m.slow {
			if s.idx <= best.idx {
				break
			}
			if r := s.p.Match(parts, isDir); r != gitignore.NoMatch {
				best = verdict{s.idx, r == gitignore.Include}
				break
			}
		}
	}
	return best.idx > 0 && !best.include
}
