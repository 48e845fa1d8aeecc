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
	var lower string
	for _, r := range f.rules {
		if len(r.keys) > 0 {
			if lower == "" {
				lower = asciiLower(s)
			}
			if !containsAny(lower, r.keys) {
				continue
			}
		}
		s = r.re.ReplaceAllString(s, r.repl)
		lower = ""
	}
	return s
}

func containsAny(s string, keys []string) bool {
	for _, k := range keys {
		if strings.Contains(s, k) {
			return true
		}
	}
	return false
}

// asciiLower lowers ASCII letters only: the gates are ASCII, and this
// keeps byte offsets (and invalid UTF-8) as they are.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
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
