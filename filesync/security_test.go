//go:build unix

package filesync

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-ops/berth/events"
)

// outsideAfterApply applies p and reports where production's rel resolves
// when that is outside production: what the attack achieves.
func outsideAfterApply(t *testing.T, ws, prod string, p *Plan, rel string) string {
	t.Helper()
	if err := Apply(t.Context(), ws, prod, p, nil); err != nil {
		return ""
	}
	real, err := filepath.EvalSymlinks(filepath.Join(prod, rel))
	if err != nil {
		return ""
	}
	realProd, err := filepath.EvalSymlinks(prod)
	must(t, err)
	if r, err := filepath.Rel(realProd, real); err != nil || !filepath.IsLocal(r) && r != "." {
		return real
	}
	return ""
}

func refusalOf(p *Plan, rel string) (Refusal, bool) {
	i := slices.IndexFunc(p.Refused, func(r Refusal) bool { return r.Path == rel })
	if i < 0 {
		return Refusal{}, false
	}
	return p.Refused[i], true
}

// TestLinkChainEscape: release 1 deploys a/b/c/up -> ../../.. (production's
// top), release 2 excludes it, so production keeps it, and adds links that
// are inside the workspace (where a/b/c/up is gone) but lead out of
// production through it.
func TestLinkChainEscape(t *testing.T) {
	for _, target := range []string{"a/b/c/up/..", "a/b/c/up/../../../..", "a/b/c/up/../etc"} {
		t.Run(target, func(t *testing.T) {
			ws, prod, state := dirs(t)
			build(t, ws, tree{"a/b/c/up": "@../../..", "a/b/c/f": "f", "index.html": "v1"})
			m := &Manifest{}
			if p := deploy(t, ws, prod, state, "r1", m); len(p.Refused) != 0 {
				t.Fatalf("release 1 refused: %v", p.Refused)
			}
			must(t, os.Remove(filepath.Join(ws, "a/b/c/up")))
			build(t, ws, tree{IgnoreFile: "a/b/c/up\n", "x": "@" + target, "index.html": "v2"})
			p := diff(t, ws, prod, m)
			if _, err := os.Lstat(filepath.Join(prod, "a/b/c/up")); err != nil {
				t.Fatalf("production lost a/b/c/up: %v", err)
			}
			r, ok := refusalOf(p, "x")
			if !ok {
				t.Fatalf("x -> %s is not refused (refused %v, added %q); applied, production's x resolves to %q",
					target, p.Refused, paths(p.Added), outsideAfterApply(t, ws, prod, p, "x"))
			}
			t.Logf("refused: %s: %s", r.Path, r.Reason)
			wantCode(t, Apply(t.Context(), ws, prod, p, nil), events.CodeBadRequest)
			if _, err := os.Lstat(filepath.Join(prod, "x")); !os.IsNotExist(err) {
				t.Errorf("x was written: %v", err)
			}
		})
	}
}

// TestLinkEscapeThroughProductionLinks: links that production has and the
// workspace never had (the application's) count too, and so do production
// links that a written link makes lead outside.
func TestLinkEscapeThroughProductionLinks(t *testing.T) {
	cases := []struct {
		name       string
		ws, prod   tree
		refused    string
		reasonHas  []string
		resolvesAt string // the production path that leads outside without the fix
	}{
		{
			name:    "through an application's link",
			ws:      tree{"y": "@shared/cur/..", "app": "x"},
			prod:    tree{"shared/cur": "@.."},
			refused: "y", reasonHas: []string{"outside production", "shared/cur"}, resolvesAt: "y",
		},
		{
			name:    "through an absolute production link",
			ws:      tree{"web/uploads": "@../data/uploads", "app": "x"},
			prod:    tree{"data": "@/tmp"},
			refused: "web/uploads", reasonHas: []string{"outside production", "data"}, resolvesAt: "web/uploads",
		},
		{
			name:    "a kept production link made to lead out",
			ws:      tree{"r": "@.", "app": "x"},
			prod:    tree{"l": "@r/.."},
			refused: "r", reasonHas: []string{"outside production", "l"}, resolvesAt: "l",
		},
		{
			name:    "through a directory the application may create",
			ws:      tree{"z": "@top/nothere/../.."},
			prod:    tree{"top": "@."},
			refused: "z", reasonHas: []string{"outside production", "top"},
		},
		{
			name:    "a loop",
			ws:      tree{"p": "@q/x"},
			prod:    tree{"q": "@p"},
			refused: "p", reasonHas: []string{"loop"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ws, prod, _ := dirs(t)
			build(t, ws, c.ws)
			build(t, prod, c.prod)
			p := diff(t, ws, prod, nil)
			r, ok := refusalOf(p, c.refused)
			if !ok {
				where := ""
				if c.resolvesAt != "" {
					where = outsideAfterApply(t, ws, prod, p, c.resolvesAt)
				}
				t.Fatalf("%s is not refused (refused %v, added %q); applied, production's %s resolves to %q",
					c.refused, p.Refused, paths(p.Added), c.resolvesAt, where)
			}
			for _, s := range c.reasonHas {
				if !strings.Contains(r.Reason, s) {
					t.Errorf("reason %q does not say %q", r.Reason, s)
				}
			}
			t.Logf("refused: %s: %s", r.Path, r.Reason)
		})
	}
}

// TestLinksThroughProductionInside: a chain through production's links
// that stays inside is deployed.
func TestLinksThroughProductionInside(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{"v2/app": "two", "current": "@releases/cur/app", "deep/d/l": "@../../shared/up/v2"})
	build(t, prod, tree{"releases/cur": "@../v2", "shared/up": "@..", "keep/abs": "@/etc"})
	p := diff(t, ws, prod, nil)
	eq(t, "refused", refusedPaths(p.Refused), nil)
	eq(t, "added", paths(p.Added), []string{"current", "deep/d/l", "v2/app"})
	must(t, Apply(t.Context(), ws, prod, p, nil))
	if got := readFile(t, filepath.Join(prod, "current")); got != "two" {
		t.Errorf("current reads %q", got)
	}
}

// TestProductionSecretsProtected: a .berthignore that re-includes .env
// does not let a deploy overwrite production's own .env.
func TestProductionSecretsProtected(t *testing.T) {
	ws, prod, _ := dirs(t)
	build(t, ws, tree{
		IgnoreFile:       "!.env\n!.env.*\n",
		".env":           "SECRET=from-the-workspace",
		"sub/.env.local": "LOCAL=ws",
		"same/.env":      "SAME=1",
		"app.py":         "version 2",
	})
	build(t, prod, tree{
		".env":           "SECRET=production-only",
		"sub/.env.local": "LOCAL=production",
		"same/.env":      "SAME=1", // identical: still not adopted
		"app.py":         "v1",
	})
	m := &Manifest{Files: map[string]FileMeta{"app.py": {}}}
	p := diff(t, ws, prod, m)
	eq(t, "modified", paths(p.Modified), []string{"app.py"})
	eq(t, "added", paths(p.Added), []string{IgnoreFile})
	eq(t, "protected", p.Protected, []string{".env", "same/.env", "sub/.env.local"})
	eq(t, "refused", refusedPaths(p.Refused), nil)
	if s := p.Summary(1); s.ProtectedCount != 3 || len(s.Protected) != 1 || s.Protected[0] != ".env" {
		t.Errorf("summary: protected %q, count %d", s.Protected, s.ProtectedCount)
	}
	if _, ok := p.synced[".env"]; ok {
		t.Error(".env is in sync after the plan")
	}
	before := map[string]string{}
	for _, rel := range []string{".env", "sub/.env.local", "same/.env"} {
		before[rel] = readFile(t, filepath.Join(prod, rel))
	}
	must(t, Apply(t.Context(), ws, prod, p, nil))
	for rel, want := range before {
		if got := readFile(t, filepath.Join(prod, rel)); got != want {
			t.Errorf("production's %s became %q", rel, got)
		}
	}
	m.Apply(p)
	for _, rel := range []string{".env", "sub/.env.local", "same/.env"} {
		if _, ok := m.Files[rel]; ok {
			t.Errorf("the manifest lists %s", rel)
		}
	}
	// Still protected at the next deploy.
	again := diff(t, ws, prod, m)
	eq(t, "modified again", paths(again.Modified), nil)
	eq(t, "protected again", again.Protected, []string{".env", "same/.env", "sub/.env.local"})

	// What is protected is part of the digest: the same changes, but
	// same/.env deployed by Berth (so in sync, not protected).
	m.Files["same/.env"] = FileMeta{}
	owned := diff(t, ws, prod, m)
	eq(t, "protected when owned", owned.Protected, []string{".env", "sub/.env.local"})
	if !owned.Empty() || !again.Empty() || owned.Digest == again.Digest {
		t.Errorf("digest does not cover protected paths: %s, %s", owned.Digest, again.Digest)
	}
	delete(m.Files, "same/.env")

	// A production without them gets the workspace's, and Berth owns
	// them from then on.
	prod2 := filepath.Join(t.TempDir(), "prod2")
	must(t, os.Mkdir(prod2, 0o755))
	m2 := &Manifest{}
	p2 := diff(t, ws, prod2, m2)
	eq(t, "added", paths(p2.Added), []string{".berthignore", ".env", "app.py", "same/.env", "sub/.env.local"})
	must(t, Apply(t.Context(), ws, prod2, p2, nil))
	m2.Apply(p2)
	if got := readFile(t, filepath.Join(prod2, ".env")); got != "SECRET=from-the-workspace" {
		t.Errorf("prod2 .env = %q", got)
	}
	if _, ok := m2.Files[".env"]; !ok {
		t.Error("the manifest does not list the .env Berth created")
	}
	build(t, ws, tree{".env": "SECRET=rotated-in-the-workspace"})
	eq(t, "modified owned", paths(diff(t, ws, prod2, m2).Modified), []string{".env"})
}

func TestSecretName(t *testing.T) {
	for rel, want := range map[string]bool{
		".env": true, "sub/.env": true, ".env.local": true, "a/b/.env.production": true, ".env.": true,
		".ENV": true, "x/.Env.Local": true,
		".envrc": false, "x.env": false, "env": false, ".env/bin/python": false, ".en": false, "a.env/b": false,
	} {
		if got := secretName(rel); got != want {
			t.Errorf("secretName(%q) = %v", rel, got)
		}
	}
}

// TestProtectedSecretsMore: production's .env as a link to its secrets is
// left alone too; an added .env that appears in production between the
// plan and Apply is not replaced.
func TestProtectedSecretsMore(t *testing.T) {
	t.Run("a link", func(t *testing.T) {
		ws, prod, _ := dirs(t)
		build(t, ws, tree{IgnoreFile: "!.env\n", ".env": "WS=1", "app": "x"})
		build(t, prod, tree{".env": "@/run/secrets/app.env"})
		p := diff(t, ws, prod, nil)
		eq(t, "protected", p.Protected, []string{".env"})
		eq(t, "refused", refusedPaths(p.Refused), nil)
		eq(t, "added", paths(p.Added), []string{IgnoreFile, "app"})
		must(t, Apply(t.Context(), ws, prod, p, nil))
		if l, err := os.Readlink(filepath.Join(prod, ".env")); err != nil || l != "/run/secrets/app.env" {
			t.Errorf(".env -> %q (%v)", l, err)
		}
	})
	t.Run("appears after the plan", func(t *testing.T) {
		ws, prod, state := dirs(t)
		build(t, ws, tree{IgnoreFile: "!.env\n", ".env": "WS=1", "app": "x"})
		p := diff(t, ws, prod, nil)
		eq(t, "added", paths(p.Added), []string{".berthignore", ".env", "app"})
		must(t, Backup(t.Context(), prod, p, filepath.Join(state, "b")))
		build(t, prod, tree{".env": "SECRET=written-meanwhile"})
		wantCode(t, Apply(t.Context(), ws, prod, p, nil), events.CodePlanChanged)
		if got := readFile(t, filepath.Join(prod, ".env")); got != "SECRET=written-meanwhile" {
			t.Errorf("production's .env became %q", got)
		}
	})
}
