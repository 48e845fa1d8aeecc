// Package redact removes secrets from text Berth passes on: container log
// lines, compose output, health-check output. It knows common token shapes
// and takes the values of a project's .env file as secrets too.
package redact

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Mask replaces a secret.
const Mask = "[REDACTED]"

// rule is one pattern and its replacement template; keys, when set,
// gate it (see defaultRules).
type rule struct {
	re   *regexp.Regexp
	repl string
	keys []string
}

// defaultRules are common credential shapes. Each keeps enough context
// (the key name) for the line to stay useful. keys are substrings (in
// lower case) one of which every match contains: a line without any of
// them skips the regular expression, which keeps redaction cheap for the
// vast majority of log lines.
var defaultRules = []struct {
	pattern, repl string
	keys          []string
}{
	// key=value and key: value for secret-like keys.
	{`(?i)\b([a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential)s?)(["']?\s*[:=]\s*["']?)([^\s"'&,;]{3,})`, "${1}${2}" + Mask,
		[]string{"pass", "pwd", "secret", "token", "key", "credential"}},
	{`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/-]{8,}=*`, "${1} " + Mask, []string{"bearer", "basic"}},
	{`(://[^/\s:@]+:)[^/\s@]+@`, "${1}" + Mask + "@", []string{"://"}},
	{`\bAKIA[0-9A-Z]{16}\b`, Mask, []string{"akia"}},
	{`\bgh[pousr]_[A-Za-z0-9]{36,}\b`, Mask, []string{"gh"}},
	{`\bgithub_pat_[A-Za-z0-9_]{22,}\b`, Mask, []string{"github_pat_"}},
	{`\bxox[abprs]-[A-Za-z0-9-]{10,}\b`, Mask, []string{"xox"}},
	{`\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}`, Mask, []string{"eyj"}},
	{`-----BEGIN [A-Z ]*PRIVATE KEY-----`, Mask, []string{"-----begin"}},
}

// Filter redacts text.
type Filter struct {
	rules []rule
	// gated has bit i set when rules[i] has keys; byFirst lists the keys
	// by their first byte, each with the rules it opens (see gate).
	gated   uint64
	byFirst [256][]gateKey
}

// gateKey is one key of the gates and the rules that have it.
type gateKey struct {
	key   string
	rules uint64
}

// New returns a Filter with the default rules (unless noDefaults) and the
// extra regular expressions, whose whole matches are masked.
func New(extra []string, noDefaults bool) (*Filter, error) {
	f := &Filter{}
	if !noDefaults {
		for _, d := range defaultRules {
			f.rules = append(f.rules, rule{regexp.MustCompile(d.pattern), d.repl, d.keys})
		}
	}
	for _, p := range extra {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("redaction pattern %q: %w", p, err)
		}
		f.rules = append(f.rules, rule{re, Mask, nil})
	}
	for i, r := range f.rules {
		if i >= 64 || len(r.keys) == 0 {
			continue // always run
		}
		f.gated |= 1 << i
	keys:
		for _, k := range r.keys {
			for j := range f.byFirst[k[0]] {
				if f.byFirst[k[0]][j].key == k {
					f.byFirst[k[0]][j].rules |= 1 << i
					continue keys
				}
			}
			f.byFirst[k[0]] = append(f.byFirst[k[0]], gateKey{k, 1 << i})
		}
	}
	return f, nil
}

// Redact masks every known secret shape in s, and every value of secrets.
func (f *Filter) Redact(s string, secrets []string) string {
	if f == nil {
		return s
	}
	for _, v := range secrets {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, Mask)
		}
	}
	open := f.gate(s)
	for i, r := range f.rules {
		if i < 64 && f.gated&(1<<i) != 0 && open&(1<<i) == 0 {
			continue
		}
		s = r.re.ReplaceAllString(s, r.repl)
	}
	return s
}

// Characters outside ASCII that case-insensitive matching folds to ASCII
// letters of the keys: KELVIN SIGN (k) and LATIN SMALL LETTER LONG S (s).
const (
	kelvin = "\u212a"
	longS  = "\u017f"
)

// gate returns the rules (bits) whose keys occur in s, ignoring ASCII case,
// in one pass over s without allocating. A masked value ("[REDACTED]")
// cannot join text into a new key, so the gates of the original line hold
// for every rule in turn. A line with a character that folds to a key's
// letter opens every rule.
func (f *Filter) gate(s string) uint64 {
	if f.gated == 0 {
		return 0
	}
	if strings.Contains(s, kelvin) || strings.Contains(s, longS) {
		return f.gated
	}
	var open uint64
	for i := 0; i < len(s); i++ {
		for _, k := range f.byFirst[lowerASCII(s[i])] {
			if k.rules&^open != 0 && hasPrefixFold(s[i:], k.key) {
				open |= k.rules
				if open == f.gated {
					return open
				}
			}
		}
	}
	return open
}

// hasPrefixFold reports whether s starts with key (lower-case ASCII),
// ignoring the case of ASCII letters.
func hasPrefixFold(s, key string) bool {
	if len(s) < len(key) {
		return false
	}
	for j := 0; j < len(key); j++ {
		if lowerASCII(s[j]) != key[j] {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// minSecretLen is the shortest .env value taken as a secret: shorter ones
// ("1", "true", "prod") would mask ordinary words.
const minSecretLen = 6

// EnvSecrets returns the values of a .env file worth masking, longest
// first (so a secret containing another is masked whole).
func EnvSecrets(env []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(env))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		_, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if len(v) >= minSecretLen {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}
