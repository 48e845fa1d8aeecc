package state

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/filesync"
)

func newDir(t *testing.T) *Dir {
	t.Helper()
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestTargetKeyIsPerDirectory(t *testing.T) {
	a, b := TargetKey("/srv/app/prod"), TargetKey("/srv/other/prod")
	if a == b || filepath.Base(a) != a || TargetKey("/srv/app/prod/") != a {
		t.Fatalf("keys %q %q", a, b)
	}
	if k := TargetKey("/srv/a b/../évil"); filepath.Base(k) != k || len(k) > 80 {
		t.Fatalf("key %q is not a plain file name", k)
	}
}

func TestJournalRoundTrip(t *testing.T) {
	d := newDir(t)
	prod := "/srv/po"
	if j, err := d.Journal(prod); j != nil || err != nil {
		t.Fatalf("no journal yet: %+v %v", j, err)
	}
	j := &Journal{Op: "deploy", RequestID: "r1", Project: berth.Project{Name: "po", Production: prod},
		Steps: []string{"backup", "sync", "up"}, Done: 1, Failure: events.Errorf(events.CodeHealthFailed, "x"), StartedAt: time.Now().UTC()}
	if err := d.WriteJournal(prod, j); err != nil {
		t.Fatal(err)
	}
	got, err := d.Journal(prod)
	if err != nil || got.Current() != "sync" || !got.Reached("sync") || got.Reached("up") || got.Version != JournalVersion || got.Failure.Code != events.CodeHealthFailed {
		t.Fatalf("journal %+v, %v", got, err)
	}
	all, err := d.Journals()
	if err != nil || len(all) != 1 || all[0].RequestID != "r1" {
		t.Fatalf("journals %+v, %v", all, err)
	}
	if err := d.ClearJournal(prod); err != nil {
		t.Fatal(err)
	}
	if err := d.ClearJournal(prod); err != nil {
		t.Fatalf("clearing twice: %v", err)
	}
	if all, _ := d.Journals(); len(all) != 0 {
		t.Fatalf("journals after clear: %+v", all)
	}
}

func TestReleases(t *testing.T) {
	d := newDir(t)
	prod := "/srv/po"
	for _, id := range []string{"20260101T000000.000Z-a", "20260102T000000.000Z-b"} {
		if err := d.SaveRelease(prod, &Release{ID: id, Status: ReleaseOK}); err != nil {
			t.Fatal(err)
		}
	}
	// A backup cut short has a directory and no record.
	if err := os.MkdirAll(d.ReleaseDir(prod, "20260103T000000.000Z-c"), 0o700); err != nil {
		t.Fatal(err)
	}
	rels, err := d.Releases(prod)
	if err != nil || len(rels) != 2 || rels[0].ID != "20260102T000000.000Z-b" {
		t.Fatalf("releases %+v, %v", rels, err)
	}
	if _, err := d.Release(prod, "nope"); events.ErrorCode(err) != events.CodeNotFound {
		t.Fatalf("missing release: %v", err)
	}
	if _, err := d.Release(prod, "../x"); events.ErrorCode(err) != events.CodeBadRequest {
		t.Fatalf("a release id with a path: %v", err)
	}
	if other, _ := d.Releases("/srv/other"); len(other) != 0 {
		t.Fatalf("another directory sees %+v", other)
	}
	m := &filesync.Manifest{Files: map[string]filesync.FileMeta{"a.txt": {Size: 1}}}
	if err := d.SaveReleaseManifest(prod, rels[0].ID, m); err != nil {
		t.Fatal(err)
	}
	if got, err := d.ReleaseManifest(prod, rels[0].ID); err != nil || len(got.Files) != 1 {
		t.Fatalf("release manifest %+v, %v", got, err)
	}
	if err := d.RemoveRelease(prod, rels[0].ID); err != nil {
		t.Fatal(err)
	}
	if rels, _ := d.Releases(prod); len(rels) != 1 {
		t.Fatalf("after remove: %+v", rels)
	}
}

func TestOutcomes(t *testing.T) {
	d := newDir(t)
	if o, err := d.Outcome("r1"); o != nil || err != nil {
		t.Fatalf("unknown outcome: %+v %v", o, err)
	}
	if err := d.SaveOutcome(&Outcome{RequestID: "r1", OK: false, Error: events.Errorf(events.CodeTimeout, "late")}); err != nil {
		t.Fatal(err)
	}
	if o, err := d.Outcome("r1"); err != nil || o.Error.Code != events.CodeTimeout {
		t.Fatalf("outcome %+v %v", o, err)
	}
	// Old outcomes go as new ones come.
	old := filepath.Join(d.Root(), "outcomes", "r1.json")
	past := time.Now().Add(-OutcomeTTL - time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveOutcome(&Outcome{RequestID: "r2", OK: true}); err != nil {
		t.Fatal(err)
	}
	if o, _ := d.Outcome("r1"); o != nil {
		t.Fatal("an outcome older than OutcomeTTL was kept")
	}
	if err := d.SaveOutcome(&Outcome{RequestID: "../x"}); err == nil {
		t.Fatal("a request id with a path was accepted")
	}
}

func TestMigrateLegacy(t *testing.T) {
	d := newDir(t)
	legacy := filepath.Join(d.Root(), "projects")
	for _, name := range []string{"po", "gone"} {
		if err := os.MkdirAll(filepath.Join(legacy, name, "releases", "r1"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(legacy, name, "releases", "r1", "release.json"), []byte(`{"id":"r1","status":"ok"}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err := d.MigrateLegacy(func(p string) (string, bool) {
		if p == "po" {
			return "/srv/po", true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	if rels, _ := d.Releases("/srv/po"); len(rels) != 1 {
		t.Fatalf("the release did not move: %+v", rels)
	}
	if _, err := os.Stat(filepath.Join(legacy, "gone")); err != nil {
		t.Fatalf("the state of an unknown project must stay: %v", err)
	}
}
