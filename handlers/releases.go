package handlers

import (
	"context"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/filesync"
	"github.com/berth-ops/berth/state"
)

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

// diff plans ws against production with the production directory's hash
// cache, so a repeated plan (plan, confirm, status) does not re-read
// unchanged files, across worker restarts too.
func (s *Service) diff(ctx context.Context, ws, prod string, man *filesync.Manifest, rules *filesync.Rules) (*filesync.Plan, error) {
	path := s.State.HashCachePath(prod)
	hc, err := filesync.LoadHashCache(path)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("hash cache ignored")
	}
	fp, err := filesync.Diff(ctx, ws, prod, man, rules, filesync.WithHashCache(hc))
	if err == nil {
		if err := hc.Save(path); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot save the hash cache")
		}
	}
	return fp, err
}

// ReleaseSummary is one kept release, as releases and rollback plans show
// it.
type ReleaseSummary struct {
	ID         string     `json:"id"`
	RequestID  string     `json:"request_id"`
	User       string     `json:"user"`
	Confirmer  string     `json:"confirmer,omitempty"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Added      int        `json:"added"`
	Modified   int        `json:"modified"`
	Deleted    int        `json:"deleted"`
	// Images are the images the services ran before the release (what a
	// rollback of it restores), by service.
	Images map[string]string `json:"images,omitempty"`
	// Error is why a rolled-back release failed.
	Error string `json:"error,omitempty"`
	// Live is set on the release production runs.
	Live bool `json:"live,omitempty"`
}

// ReleasesResult is the result data of releases.
type ReleasesResult struct {
	Project  string           `json:"project"`
	Releases []ReleaseSummary `json:"releases"`
	// Live is the release production runs: the newest one deployed and
	// not undone ("" before the first deploy, or after every kept release
	// was rolled back).
	Live string `json:"live,omitempty"`
	// RollbackTarget is what a rollback without "to" returns to: the
	// release before the live one, or "" for the state before the oldest
	// kept release.
	RollbackTarget string `json:"rollback_target"`
}

// Releases lists the releases kept for a project, newest first, which one
// is live and what the next rollback returns to.
func (s *Service) Releases(ctx context.Context, req *Request, _ Reporter) (any, error) {
	if err := events.DecodeArgs(req.Args, &struct{}{}); err != nil {
		return nil, err
	}
	if s.State == nil {
		return nil, events.Errorf(events.CodeBadRequest, "this worker keeps no releases").
			WithHint("run the worker with its state directory (--state-dir)")
	}
	p, err := s.project(ctx, req.Project)
	if err != nil {
		return nil, err
	}
	rels, err := s.State.Releases(p.Production)
	if err != nil {
		return nil, err
	}
	res := &ReleasesResult{Project: p.Name, Releases: []ReleaseSummary{}}
	var live []*state.Release
	for _, r := range rels {
		if r.Status == state.ReleaseOK {
			live = append(live, r)
		}
	}
	if len(live) > 0 {
		res.Live = live[0].ID
	}
	if len(live) > 1 {
		res.RollbackTarget = live[1].ID
	}
	for _, r := range rels {
		res.Releases = append(res.Releases, summarize(r, r.ID == res.Live))
	}
	return res, nil
}

func summarize(r *state.Release, live bool) ReleaseSummary {
	sum := ReleaseSummary{ID: r.ID, RequestID: r.RequestID, User: r.User, Confirmer: r.Confirmer, Status: r.Status,
		CreatedAt: r.CreatedAt, FinishedAt: r.FinishedAt, Added: r.Files.Added, Modified: r.Files.Modified,
		Deleted: r.Files.Deleted, Error: r.Error, Live: live}
	if len(r.Images) > 0 {
		sum.Images = map[string]string{}
		for svc, img := range r.Images {
			sum.Images[svc] = img.Ref + "@" + shortImageID(img.PreviousID)
		}
	}
	return sum
}
