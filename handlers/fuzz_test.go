package handlers

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-ops/berth/events"
)

// FuzzConfinedDir feeds arbitrary paths to confinedDir, with roots holding
// directories and symbolic links that point inside, outside, up and in a
// loop: it never panics, and a path it accepts is absolute, clean, and
// resolves (symlinks followed) to a directory inside the resolved root.
//
// A path is tried as given, with {ROOT} replaced by the root (so seeds
// survive the fuzzer's worker processes, each with its own root), and
// appended to the root.
func FuzzConfinedDir(f *testing.F) {
	base := f.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "a", "b"), filepath.Join(root, "c"), filepath.Join(outside, "x")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		filepath.Join(root, "link-out"):      outside,
		filepath.Join(root, "link-etc"):      "/etc",
		filepath.Join(root, "link-in"):       "a",
		filepath.Join(root, "link-up"):       "..",
		filepath.Join(root, "a", "link-rel"): "../../outside",
		filepath.Join(root, "loop"):          "loop",
		filepath.Join(base, "root-link"):     "root",
	} {
		if err := os.Symlink(target, link); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "file"), []byte("x"), 0o644); err != nil {
		f.Fatal(err)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		f.Fatal(err)
	}
	// The roots as configured: the directory, and a symlink to it.
	services := []*Service{
		{Config: Config{Roots: []string{root}}},
		{Config: Config{Roots: []string{filepath.Join(base, "root-link")}}},
	}

	for _, s := range []string{
		"../", "/etc", "/", "", "\x00", root, root + "/../x", root + "/link-out", root + "/a/./b", root + "/a/b",
		root + "/link-in/b", root + "/link-up/outside", root + "/a/link-rel/x", root + "/loop", root + "/file",
		root + "/a\x00/b", root + "/", root + "//a", "{ROOT}/link-out/x", "{ROOT}/link-in", "{ROOT}/c", "{ROOT}/../root/c",
		"/link-etc", "/a/b", "/link-up/root/a", "/a/../../outside", "a", "./a", "/proc/self/cwd", "/dev/fd/0",
		// Longer than PATH_MAX and NAME_MAX; kept short enough that the
		// fuzzer's minimisation of inputs grown from them stays quick.
		strings.Repeat("a/", 2100), strings.Repeat("x", 5000), root + "/" + strings.Repeat("x", 300),
		"/" + strings.Repeat("link-in/b/../", 50), root + strings.Repeat("/link-in/..", 40),
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, path string) {
		for _, s := range services {
			for _, p := range []string{path, strings.ReplaceAll(path, "{ROOT}", root), root + path, root + "/" + path} {
				checkConfined(t, s, realRoot, p)
			}
		}
	})
}

func checkConfined(t *testing.T, s *Service, realRoot, path string) {
	t.Helper()
	got, err := s.confinedDir("workspace", path)
	if err != nil {
		var e *events.Error
		if !errors.As(err, &e) || e.Code != events.CodeBadRequest || strings.TrimSpace(e.Hint) == "" {
			t.Fatalf("confinedDir(%q): refusal %v is not a bad_request with a hint", path, err)
		}
		return
	}
	if got != path {
		t.Fatalf("confinedDir(%q) accepted it as %q", path, got)
	}
	if !filepath.IsAbs(got) || filepath.Clean(got) != got || strings.ContainsRune(got, 0) {
		t.Fatalf("confinedDir accepted %q, which is not an absolute, clean path", got)
	}
	real, err := filepath.EvalSymlinks(got)
	if err != nil {
		t.Fatalf("confinedDir accepted %q, which does not resolve: %v", got, err)
	}
	if real != realRoot && !strings.HasPrefix(real, realRoot+string(filepath.Separator)) {
		t.Fatalf("confinedDir accepted %q, which resolves to %q, outside the root %q", got, real, realRoot)
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		t.Fatalf("confinedDir accepted %q, which is not a directory (%v)", got, err)
	}
}
