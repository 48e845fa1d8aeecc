package handlers

import (
	"slices"
	"strings"
	"testing"
)

func TestDiffLines(t *testing.T) {
	a := strings.Split("services:\n  web:\n    image: a\n    ports:\n      - 80\n  worker:\n    image: w\n    command: [x]\n    restart: always", "\n")
	b := strings.Split("services:\n  web:\n    image: b\n    ports:\n      - 80\n  worker:\n    image: w\n    command: [x]\n    restart: always\n    privileged: true", "\n")
	got := diffLines(a, b)
	want := []string{" services:", "   web:", "-    image: a", "+    image: b", "     ports:", "       - 80", " …", "     command: [x]", "     restart: always", "+    privileged: true"}
	if !slices.Equal(got, want) {
		t.Fatalf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := diffLines(a, a); d != nil {
		t.Fatalf("no change: %q", d)
	}
	if d := diffLines(nil, []string{"x"}); !slices.Equal(d, []string{"+x"}) {
		t.Fatalf("a new file: %q", d)
	}
}
