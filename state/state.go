// Package state keeps what outlives a request on the worker's disk: per
// production directory, the releases (file backups and the images the
// services ran before), the journal of the mutation in progress, the
// manifest of the files Berth deployed and the hash cache of the diff; and
// per request, the outcome of a mutation, so that a redelivered command is
// answered with what really happened.
//
// Everything is keyed by the production directory, not by the project
// name: the files and containers a release describes belong to the
// directory, whichever project points at it.
//
// The layout under the state directory:
//
//	targets/<key>/target.json          the production directory (and its project)
//	targets/<key>/manifest.json        the paths Berth deployed
//	targets/<key>/hashes.json          the diff's hash cache
//	targets/<key>/journal.json         the mutation in progress, if any
//	targets/<key>/releases/<id>/       release.json, the backup (backup.json, files/), manifest.before.json
//	outcomes/<request id>.json         the outcome of a finished mutation
//	configs/<project>.json             a copy of a project's configuration, as config.set args
//
// <key> is the directory's base name and a hash of its path.
package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/filesync"
)

// Store is the state of the mutations. Every method that takes prod works
// on the state of that production directory (absolute, clean).
type Store interface {
	// Journal returns the journal of the mutation in progress on prod, or
	// nil when there is none.
	Journal(prod string) (*Journal, error)
	// WriteJournal replaces prod's journal, durably.
	WriteJournal(prod string, j *Journal) error
	// ClearJournal removes prod's journal (it is not an error when none).
	ClearJournal(prod string) error
	// Journals returns every journal left on disk, of every production
	// directory.
	Journals() ([]*Journal, error)

	// Releases returns prod's releases, newest first; a release whose
	// record was never written (a backup cut short) is left out.
	Releases(prod string) ([]*Release, error)
	// Release returns one release, or a CodeNotFound error.
	Release(prod, id string) (*Release, error)
	// SaveRelease writes a release's record, durably.
	SaveRelease(prod string, r *Release) error
	// RemoveRelease removes a release and its backup.
	RemoveRelease(prod, id string) error
	// ReleaseDir is the directory of a release's backup.
	ReleaseDir(prod, id string) string
	// ReleaseManifest returns the manifest as it was before a release
	// (empty when it was not saved); SaveReleaseManifest saves it.
	ReleaseManifest(prod, id string) (*filesync.Manifest, error)
	SaveReleaseManifest(prod, id string, m *filesync.Manifest) error

	// Manifest returns the paths Berth deployed into prod (empty when
	// none yet).
	Manifest(prod string) (*filesync.Manifest, error)
	// SaveManifest replaces prod's manifest, durably.
	SaveManifest(prod string, m *filesync.Manifest) error
	// HashCachePath is the file of prod's diff hash cache.
	HashCachePath(prod string) string

	// SaveProjectConfig keeps a copy of a project's configuration, as the
	// args of the config.set that recreates it (configs/<project>.json);
	// RemoveProjectConfig removes it.
	SaveProjectConfig(project string, args []byte) error
	RemoveProjectConfig(project string) error

	// SaveOutcome records how a request's mutation ended.
	SaveOutcome(o *Outcome) error
	// Outcome returns how a request's mutation ended, or nil when it is
	// not known.
	Outcome(requestID string) (*Outcome, error)
}

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
	ID         string               `json:"id"`
	RequestID  string               `json:"request_id"`
	User       string               `json:"user"`
	Confirmer  string               `json:"confirmer,omitempty"`
	Strategy   string               `json:"strategy"`
	Workspace  string               `json:"workspace"`
	CreatedAt  time.Time            `json:"created_at"`
	FinishedAt *time.Time           `json:"finished_at,omitempty"`
	Status     string               `json:"status"`
	Files      filesync.PlanSummary `json:"files"`
	// Images are the services' images before the release, by service.
	Images map[string]ReleaseImage `json:"images,omitempty"`
	// BackedUp is set once the backup is complete: the files the release
	// changes, the manifest before it and the images' tags.
	BackedUp bool `json:"backed_up,omitempty"`
	// Error is why the deploy failed, for a rolled-back release.
	Error string `json:"error,omitempty"`
	// Recovered is set when the worker stopped during the deploy and a
	// later one finished the rollback.
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

// JournalVersion is the version of the journal format this Berth writes.
const JournalVersion = 2

// Journal records the mutation in progress on a production directory, so
// that a worker that stops at any point lets the next one finish it: undo
// what was done, or finish what was started, as the operation says.
type Journal struct {
	Version int `json:"version"`
	// Op names the operation (deploy, rollback, restart, start, stop).
	Op        string `json:"op"`
	RequestID string `json:"request_id"`
	User      string `json:"user"`
	Confirmer string `json:"confirmer,omitempty"`
	// Project is the configuration the operation runs with.
	Project berth.Project `json:"project"`
	// Steps are the steps of this run, in order; Done counts those that
	// finished, so Steps[Done] is the one in progress.
	Steps []string `json:"steps"`
	Done  int      `json:"done"`
	// Undoing is set once the operation failed and its steps are being
	// undone; Failure is why.
	Undoing bool          `json:"undoing,omitempty"`
	Failure *events.Error `json:"failure,omitempty"`
	// Release is the release a deploy makes; Releases those a rollback
	// undoes, newest first; Services those a restart, start or stop acts on.
	Release  string   `json:"release,omitempty"`
	Releases []string `json:"releases,omitempty"`
	Services []string `json:"services,omitempty"`
	// Rolling are the services a restart rolls out start-first.
	Rolling []string `json:"rolling,omitempty"`
	// LockOwner is the owner of the project lock the operation holds.
	LockOwner string    `json:"lock_owner"`
	StartedAt time.Time `json:"started_at"`
	// Answered is set when the request was answered while the operation
	// still had to be finished (its undo waited for the engine).
	Answered bool `json:"answered,omitempty"`
	// Phase is the step in progress in the journals of an earlier Berth
	// (version 1), which had no Steps.
	Phase string `json:"phase,omitempty"`
	// StepsMS are the measured durations of the finished steps.
	StepsMS map[string]int64 `json:"steps_ms,omitempty"`
	// Rollouts are the start-first rollouts of the run, one per service,
	// in order: what undo needs to put the old containers back, or to
	// finish taking them out.
	Rollouts []Rollout `json:"rollouts,omitempty"`
}

// The phases of a rollout, in order.
const (
	// RolloutStarting: new containers are being started beside Old.
	RolloutStarting = "starting"
	// RolloutDraining: the new ones are ready; Old are being taken off
	// the networks and drained.
	RolloutDraining = "draining"
	// RolloutRemoving: Old are being stopped and removed; the new ones
	// serve.
	RolloutRemoving = "removing"
	// RolloutDone: only the new containers are left.
	RolloutDone = "done"
)

// Rollout records one service's start-first rollout.
type Rollout struct {
	Service string `json:"service"`
	// Old are the IDs of the service's containers before the rollout.
	Old []string `json:"old"`
	// New are the IDs of the containers the rollout started, once known.
	New []string `json:"new,omitempty"`
	// Networks are what each old container was on, by ID, once taken off.
	Networks map[string][]berth.NetworkAttachment `json:"networks,omitempty"`
	Phase    string                               `json:"phase"`
}

// Current is the step in progress, or "" when every step is done.
func (j *Journal) Current() string {
	if j.Done < len(j.Steps) {
		return j.Steps[j.Done]
	}
	return ""
}

// Reached reports whether the run started step (it is done or in
// progress).
func (j *Journal) Reached(step string) bool {
	i := slices.Index(j.Steps, step)
	return i >= 0 && i <= j.Done
}

// Outcome is how a request's mutation ended.
type Outcome struct {
	RequestID  string          `json:"request_id"`
	Project    string          `json:"project"`
	Op         string          `json:"op"`
	OK         bool            `json:"ok"`
	Data       json.RawMessage `json:"data,omitempty"`
	Error      *events.Error   `json:"error,omitempty"`
	StartedAt  time.Time       `json:"started_at"`
	FinishedAt time.Time       `json:"finished_at"`
	// Recovered is set when a worker other than the one that ran the
	// request finished it (after a crash).
	Recovered bool `json:"recovered,omitempty"`
}

// OutcomeTTL is how long outcomes are kept: as long as a command can be
// redelivered (the command stream keeps messages for 24 hours).
const OutcomeTTL = 25 * time.Hour

// Dir is the Store in a directory of the local filesystem.
type Dir struct {
	root string
	now  func() time.Time
}

var _ Store = (*Dir)(nil)

// New returns the Store in root, an absolute directory (created on first
// write, mode 0700).
func New(root string) (*Dir, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("state: directory %q must be absolute", root)
	}
	return &Dir{root: filepath.Clean(root), now: time.Now}, nil
}

// Root returns the state directory.
func (d *Dir) Root() string { return d.root }

// TargetKey is the name of a production directory's state: its base name
// (for people reading the directory) and a hash of its path.
func TargetKey(prod string) string {
	prod = filepath.Clean(prod)
	sum := sha256.Sum256([]byte(prod))
	base := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, filepath.Base(prod))
	if len(base) > 40 {
		base = base[:40]
	}
	return base + "-" + hex.EncodeToString(sum[:10])
}

func (d *Dir) target(prod string) string { return filepath.Join(d.root, "targets", TargetKey(prod)) }

// targetRecord names the production directory of a target's state.
type targetRecord struct {
	Production string `json:"production"`
}

// ensure creates prod's state directory with its target.json.
func (d *Dir) ensure(prod string) error {
	dir := d.target(prod)
	rec := filepath.Join(dir, "target.json")
	if _, err := os.Stat(rec); err == nil {
		return nil
	}
	return writeJSON(rec, targetRecord{Production: filepath.Clean(prod)})
}

// Journal implements Store.
func (d *Dir) Journal(prod string) (*Journal, error) {
	var j Journal
	err := readJSON(filepath.Join(d.target(prod), "journal.json"), &j)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// WriteJournal implements Store.
func (d *Dir) WriteJournal(prod string, j *Journal) error {
	if err := d.ensure(prod); err != nil {
		return err
	}
	if j.Version == 0 {
		j.Version = JournalVersion
	}
	return writeJSON(filepath.Join(d.target(prod), "journal.json"), j)
}

// ClearJournal implements Store.
func (d *Dir) ClearJournal(prod string) error {
	dir := d.target(prod)
	if err := os.Remove(filepath.Join(dir, "journal.json")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return filesync.SyncDir(dir)
}

// Journals implements Store.
func (d *Dir) Journals() ([]*Journal, error) {
	entries, err := os.ReadDir(filepath.Join(d.root, "targets"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Journal
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		var j Journal
		err := readJSON(filepath.Join(d.root, "targets", e.Name(), "journal.json"), &j)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			errs = append(errs, err)
		default:
			out = append(out, &j)
		}
	}
	return out, errors.Join(errs...)
}

// ReleaseDir implements Store.
func (d *Dir) ReleaseDir(prod, id string) string {
	return filepath.Join(d.target(prod), "releases", id)
}

// Releases implements Store.
func (d *Dir) Releases(prod string) ([]*Release, error) {
	entries, err := os.ReadDir(filepath.Join(d.target(prod), "releases"))
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
		r, err := d.Release(prod, e.Name())
		if err != nil {
			continue // a release whose backup never completed
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Release) int { return strings.Compare(b.ID, a.ID) })
	return out, nil
}

// Release implements Store.
func (d *Dir) Release(prod, id string) (*Release, error) {
	if !validName(id) {
		return nil, events.Errorf(events.CodeBadRequest, "release id %q is not valid", id)
	}
	var r Release
	err := readJSON(filepath.Join(d.ReleaseDir(prod, id), "release.json"), &r)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, events.Errorf(events.CodeNotFound, "release %s is not known", id).
			WithHint("list the releases with history or rollback's plan")
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// SaveRelease implements Store.
func (d *Dir) SaveRelease(prod string, r *Release) error {
	if !validName(r.ID) {
		return fmt.Errorf("state: release id %q is not valid", r.ID)
	}
	if err := d.ensure(prod); err != nil {
		return err
	}
	return writeJSON(filepath.Join(d.ReleaseDir(prod, r.ID), "release.json"), r)
}

// RemoveRelease implements Store.
func (d *Dir) RemoveRelease(prod, id string) error {
	if !validName(id) {
		return fmt.Errorf("state: release id %q is not valid", id)
	}
	return os.RemoveAll(d.ReleaseDir(prod, id))
}

// ReleaseManifest implements Store.
func (d *Dir) ReleaseManifest(prod, id string) (*filesync.Manifest, error) {
	if !validName(id) {
		return nil, fmt.Errorf("state: release id %q is not valid", id)
	}
	return filesync.LoadManifest(filepath.Join(d.ReleaseDir(prod, id), "manifest.before.json"))
}

// SaveReleaseManifest implements Store.
func (d *Dir) SaveReleaseManifest(prod, id string, m *filesync.Manifest) error {
	if !validName(id) {
		return fmt.Errorf("state: release id %q is not valid", id)
	}
	return m.Save(filepath.Join(d.ReleaseDir(prod, id), "manifest.before.json"))
}

// Manifest implements Store.
func (d *Dir) Manifest(prod string) (*filesync.Manifest, error) {
	return filesync.LoadManifest(filepath.Join(d.target(prod), "manifest.json"))
}

// SaveManifest implements Store.
func (d *Dir) SaveManifest(prod string, m *filesync.Manifest) error {
	if err := d.ensure(prod); err != nil {
		return err
	}
	return m.Save(filepath.Join(d.target(prod), "manifest.json"))
}

// HashCachePath implements Store.
func (d *Dir) HashCachePath(prod string) string { return filepath.Join(d.target(prod), "hashes.json") }

// SaveProjectConfig implements Store.
func (d *Dir) SaveProjectConfig(project string, args []byte) error {
	if !validName(project) {
		return fmt.Errorf("state: project %q is not valid", project)
	}
	return filesync.WriteFileAtomic(filepath.Join(d.root, "configs", project+".json"), args)
}

// RemoveProjectConfig implements Store.
func (d *Dir) RemoveProjectConfig(project string) error {
	if !validName(project) {
		return fmt.Errorf("state: project %q is not valid", project)
	}
	err := os.Remove(filepath.Join(d.root, "configs", project+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// SaveOutcome implements Store. Outcomes older than OutcomeTTL are
// removed on the way.
func (d *Dir) SaveOutcome(o *Outcome) error {
	if !validName(o.RequestID) {
		return fmt.Errorf("state: request id %q is not valid", o.RequestID)
	}
	dir := filepath.Join(d.root, "outcomes")
	if err := writeJSON(filepath.Join(dir, o.RequestID+".json"), o); err != nil {
		return err
	}
	d.pruneOutcomes(dir)
	return nil
}

func (d *Dir) pruneOutcomes(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	old := d.now().Add(-OutcomeTTL)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(old) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Outcome implements Store.
func (d *Dir) Outcome(requestID string) (*Outcome, error) {
	if !validName(requestID) {
		return nil, nil
	}
	var o Outcome
	err := readJSON(filepath.Join(d.root, "outcomes", requestID+".json"), &o)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// MigrateLegacy moves the state an earlier Berth kept per project name
// (projects/<name>/) to its production directory's place; production
// returns the directory of a project, and false when it is not known (its
// state is then left where it is). A target that already has state is not
// overwritten.
func (d *Dir) MigrateLegacy(production func(project string) (string, bool)) error {
	legacy := filepath.Join(d.root, "projects")
	entries, err := os.ReadDir(legacy)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		from := filepath.Join(legacy, e.Name())
		prod, ok := "", false
		var j struct {
			Project berth.Project `json:"project"`
		}
		if readJSON(filepath.Join(from, "journal.json"), &j) == nil && j.Project.Production != "" {
			prod, ok = j.Project.Production, true
		} else {
			prod, ok = production(e.Name())
		}
		if !ok || !filepath.IsAbs(prod) {
			continue
		}
		to := d.target(prod)
		if _, err := os.Stat(to); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Rename(from, to); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := d.ensure(prod); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validName reports whether a release or request id can be a file name.
func validName(s string) bool {
	if s == "" || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
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
