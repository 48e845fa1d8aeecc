package handlers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/auth"
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

// FuzzAdmission sends arbitrary bodies and headers through the admission
// chain of a worker that requires signatures with client keys: it never
// panics, a message it trusts was signed by a key that may speak for the
// user it claims, and one it admits is trusted.
func FuzzAdmission(f *testing.F) {
	key := auth.Key{ID: "k1", Secret: []byte("fuzz-key-secret-0123456789"), Users: []string{"t:a*"}, Projects: []string{"po"}}
	signedBody := []byte(`{"id":"r1","user":"t:alice"}`)
	ts, sig := auth.Sign(key.Secret, time.Unix(1800000000, 0), "berth.cmd.po.status", signedBody)
	f.Add(signedBody, ts, sig, "k1", "po")
	f.Add(signedBody, ts, sig, "", "po")
	f.Add([]byte(`{"user":"t:bob"}`), ts, sig, "k1", "po")
	f.Add([]byte(`{`), "", "", "", "po")
	mux := NewMux()
	mux.Handle(events.ActionStatus, HandlerFunc(func(context.Context, *Request, Reporter) (any, error) { return nil, nil }))
	a := &Admission{Mux: mux, Subjects: events.NewSubjects(""),
		Verifier: &auth.Verifier{Keys: []auth.Key{key}, Now: func() time.Time { return time.Unix(1800000000, 0) }}}
	f.Fuzz(func(t *testing.T, body []byte, ts, sig, keyID, project string) {
		h := map[string][]string{auth.HeaderTimestamp: {ts}, auth.HeaderSignature: {sig}}
		if keyID != "" {
			h[auth.HeaderKey] = []string{keyID}
		}
		tk, err := a.Admit(context.Background(), &Inbound{Subject: "berth.cmd." + project + ".status", Project: project,
			Action: events.ActionStatus, Body: body, Header: h, Seq: 1}, time.Unix(1800000000, 0))
		if tk.Trusted && (tk.Signed == nil || tk.Signed.Key.Allows(tk.User, project) != nil) {
			t.Fatalf("trusted %q for %q without a key that may speak for it", tk.User, project)
		}
		if err == nil && (!tk.Trusted || tk.Req == nil || tk.Req.User != tk.User) {
			t.Fatalf("admitted without trust: %+v", tk)
		}
	})
}
