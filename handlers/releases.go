package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/filesync"
)

// Release statuses.
const (
	ReleasePending    = "pending"     // being deployed
	ReleaseOK         = "ok"          // deployed and verified
	ReleaseRolledBack = "rolled_back" // the deploy failed and was undone
	ReleaseReverted   = "reverted"    // undone later by a rollback
)

// Release is one deploy: what it changed, the backup that undoes it, and
// the images the services ran before it.
type Release struct {
	ID         string                  `json:"id"`
	RequestID  string                  `json:"request_id"`
	User       string                  `json:"user"`
	Confirmer  string                  `json:"confirmer,omitempty"`
	Strategy   string                  `json:"strategy"`
	Workspace  string                  `json:"workspace"`
	CreatedAt  time.Time               `json:"created_at"`
	FinishedAt *time.Time              `json:"finished_at,omitempty"`
	Status     string                  `json:"status"`
	Files      filesync.PlanSummary    `json:"files"`
	Images     map[string]ReleaseImage `json:"images,omitempty"`
	// Error is why the deploy failed, for a rolled-back release.
	Error string `json:"error,omitempty"`
	// Recovered is set when the worker stopped during the deploy and a
	// later start finished the rollback.
	Recovered bool `json:"recovered,omitempty"`
	// RevertedBy is the request of the rollback that undid the release.
	RevertedBy string `json:"reverted_by,omitempty"`
	// Steps are the measured durations of the deploy's steps, in ms.
	Steps map[string]int64 `json:"steps_ms,omitempty"`
}

// ReleaseImage is a service's image before a release: the reference the
// compose files use, the image ID it pointed to, and the tag that keeps
// that image from being pruned.
type ReleaseImage struct {
	Ref        string `json:"ref"`
	PreviousID string `json:"previous_id"`
	BackupTag  string `json:"backup_tag"`
}

// Journal records the mutation in progress on a project, so a worker that
// stops at any point can finish it on its next start.
type Journal struct {
	Op        string        `json:"op"` // "deploy" or "rollback"
	RequestID string        `json:"request_id"`
	Project   berth.Project `json:"project"`
	// Releases are the releases being deployed (one) or undone (newest first).
	Releases  []string  `json:"releases"`
	Phase     string    `json:"phase"`
	LockOwner string    `json:"lock_owner"`
	StartedAt time.Time `json:"started_at"`
}

// projectState is a project's directory under the state dir.
type projectState struct{ dir string }

func (s *Service) state(project string) projectState {
	return projectState{dir: filepath.Join(s.Config.StateDir, "projects", project)}
}

func (ps projectState) manifestPath() string        { return filepath.Join(ps.dir, "manifest.json") }
func (ps projectState) hashCachePath() string       { return filepath.Join(ps.dir, "hashes.json") }
func (ps projectState) journalPath() string         { return filepath.Join(ps.dir, "journal.json") }
func (ps projectState) releaseDir(id string) string { return filepath.Join(ps.dir, "releases", id) }

func (ps projectState) manifest() (*filesync.Manifest, error) {
	return filesync.LoadManifest(ps.manifestPath())
}

func (ps projectState) writeJournal(j *Journal) error { return writeJSON(ps.journalPath(), j) }

func (ps projectState) journal() (*Journal, error) {
	var j Journal
	if err := readJSON(ps.journalPath(), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

func (ps projectState) clearJournal() error {
	if err := os.Remove(ps.journalPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return filesync.SyncDir(ps.dir)
}

func (ps projectState) saveRelease(r *Release) error {
	return writeJSON(filepath.Join(ps.releaseDir(r.ID), "release.json"), r)
}

func (ps projectState) release(id string) (*Release, error) {
	var r Release
	if err := readJSON(filepath.Join(ps.releaseDir(id), "release.json"), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// releases returns every release, newest first.
func (ps projectState) releases() ([]*Release, error) {
	entries, err := os.ReadDir(filepath.Join(ps.dir, "releases"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Release
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		r, err := ps.release(e.Name())
		if err != nil {
			continue // a release whose backup never completed
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Release) int { return strings.Compare(b.ID, a.ID) })
	return out, nil
}

// releaseByRequest finds the release a request created.
func (ps projectState) releaseByRequest(requestID string) (*Release, error) {
	rels, err := ps.releases()
	if err != nil {
		return nil, err
	}
	for _, r := range rels {
		if r.RequestID == requestID {
			return r, nil
		}
	}
	return nil, nil
}

// newReleaseID sorts by time and names its request.
func newReleaseID(now time.Time, requestID string) string {
	id := requestID
	if len(id) > 12 {
		id = id[:12]
	}
	return now.UTC().Format("20060102T150405.000Z") + "-" + id
}

// backupTag is the tag that keeps a service's pre-release image.
func backupTag(composeProject, service, releaseID string) string {
	tag := service + "-" + strings.NewReplacer(".", "", "T", "t", "Z", "z").Replace(releaseID)
	tag = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, tag)
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return "berth-release/" + composeProject + ":" + tag
}

// writeJSON writes v, indented, as filesync.WriteFileAtomic does.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return filesync.WriteFileAtomic(path, b)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// diff plans ws against production with the project's hash cache, so a
// repeated plan (plan, confirm, status) does not re-read unchanged files,
// across worker restarts too.
func (s *Service) diff(ctx context.Context, project, ws, prod string, man *filesync.Manifest, rules *filesync.Rules) (*filesync.Plan, error) {
	ps := s.state(project)
	hc, err := filesync.LoadHashCache(ps.hashCachePath())
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("hash cache ignored")
	}
	fp, err := filesync.Diff(ctx, ws, prod, man, rules, filesync.WithHashCache(hc))
	if err == nil {
		if err := os.MkdirAll(ps.dir, 0o750); err == nil {
			if err := hc.Save(ps.hashCachePath()); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot save the hash cache")
			}
		}
	}
	return fp, err
}
