package handlers

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-ops/berth/filesync"
)

// ComposeDiff is the change a deploy makes to one compose file: its lines
// as a unified diff without headers ("+" added, "-" removed, " " context).
type ComposeDiff struct {
	File  string   `json:"file"`
	Lines []string `json:"lines"`
	// Truncated is set when the diff was cut at maxComposeDiffLines.
	Truncated bool `json:"truncated,omitempty"`
}

// maxComposeDiffLines bounds a compose file's diff in a plan; a compose
// file bigger than maxComposeDiffInput lines is not diffed line by line.
const (
	maxComposeDiffLines = 200
	maxComposeDiffInput = 5000
	composeDiffContext  = 2
)

// composeDiffs diffs the compose files a plan adds or modifies, production's
// against the workspace's.
func composeDiffs(files []string, ws, prod string, fp *filesync.Plan) []ComposeDiff {
	var out []ComposeDiff
	for _, c := range slices.Concat(fp.Added, fp.Modified) {
		if !slices.Contains(files, c.Path) {
			continue
		}
		before := readLines(prod, c.Path)
		after := readLines(ws, c.Path)
		if d := diffLines(before, after); len(d) > 0 {
			cd := ComposeDiff{File: c.Path, Lines: d}
			if len(d) > maxComposeDiffLines {
				cd.Lines, cd.Truncated = d[:maxComposeDiffLines], true
			}
			out = append(out, cd)
		}
	}
	return out
}

// readLines reads a file under dir through an os.Root (production's files
// never leave production); a missing file has no lines.
func readLines(dir, rel string) []string {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil
	}
	defer root.Close()
	b, err := root.ReadFile(filepath.FromSlash(rel))
	if err != nil || len(b) > 1<<20 {
		return nil
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// diffLines is a unified diff of a and b with a few lines of context (an
// LCS over lines: compose files are small).
func diffLines(a, b []string) []string {
	if len(a) > maxComposeDiffInput || len(b) > maxComposeDiffInput {
		return []string{"-(" + strconv.Itoa(len(a)) + " lines)", "+(" + strconv.Itoa(len(b)) + " lines)"}
	}
	// lcs[i][j] is the length of the LCS of a[i:] and b[j:].
	lcs := make([][]int32, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []string
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			ops = append(ops, " "+a[i])
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || lcs[i][j+1] > lcs[i+1][j]):
			ops = append(ops, "+"+b[j])
			j++
		default:
			ops = append(ops, "-"+a[i])
			i++
		}
	}
	// Keep the changes and composeDiffContext lines around each.
	keep := make([]bool, len(ops))
	for k, op := range ops {
		if op[0] != ' ' {
			for c := max(0, k-composeDiffContext); c <= min(len(ops)-1, k+composeDiffContext); c++ {
				keep[c] = true
			}
		}
	}
	var out []string
	gap := false
	for k, op := range ops {
		if !keep[k] {
			gap = true
			continue
		}
		if gap && len(out) > 0 {
			out = append(out, " …")
		}
		gap = false
		out = append(out, op)
	}
	if !slices.ContainsFunc(out, func(s string) bool { return s[0] != ' ' }) {
		return nil
	}
	return out
}
