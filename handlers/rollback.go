package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// RollbackArgs are the arguments of rollback.
type RollbackArgs struct {
	// To names the release to return to; default: the one before the
	// latest successful release.
	To string `json:"to,omitempty"`
}

// RollbackPlan is the plan of a rollback.
type RollbackPlan struct {
	// Undo are the releases to undo, newest first.
	Undo []ReleaseInfo `json:"undo"`
	// Target is the release production returns to ("" for the state
	// before Berth's first kept release).
	Target string `json:"target"`
	// Files counts the files restored and removed.
	FilesRestored int `json:"files_restored"`
	FilesRemoved  int `json:"files_removed"`
	// Images are the service images re-tagged to what they were.
	Images map[string]string `json:"images"`
	Steps  []string          `json:"steps"`
}

// ReleaseInfo summarises a release in plans and results.
type ReleaseInfo struct {
	ID        string `json:"id"`
	User      string `json:"user"`
	CreatedAt string `json:"created_at"`
	Added     int    `json:"added"`
	Modified  int    `json:"modified"`
	Deleted   int    `json:"deleted"`
}

// RollbackResult is the result data of a rollback.
type RollbackResult struct {
	Reverted []string        `json:"reverted"`
	Target   string          `json:"target"`
	Services []ServiceHealth `json:"services,omitempty"`
}

// Rollback returns production to an earlier release after confirmation:
// the files and the images the services ran, then verifies.
func (s *Service) Rollback(ctx context.Context, req *Request, rep Reporter) (any, error) {
	if req.Resumed && req.Confirm != "" {
		if data, err, ok := s.resumedRollback(ctx, req); ok {
			return data, err
		}
	}
	return s.twoPhase(ctx, req, rep, mutation{plan: s.planRollback, run: func(ctx context.Context, p *berth.Project, _ json.RawMessage, pl *plan, rep Reporter) (any, error) {
		rp, rels := pl.Data.(*RollbackPlan), pl.state.([]*Release)
		ps := s.state(p.Name)
		j := &Journal{Op: "rollback", RequestID: req.ID, Project: *p, StartedAt: s.Now().UTC()}
		for _, r := range rels {
			j.Releases = append(j.Releases, r.ID)
		}
		req.Note("reverted", j.Releases)
		if err := s.undo(ctx, ps, j, rels, rep); err != nil {
			return nil, err
		}
		now := s.Now().UTC()
		for _, r := range rels {
			r.Status, r.RevertedBy, r.FinishedAt = ReleaseReverted, req.ID, &now
			_ = ps.saveRelease(r)
		}
		return &RollbackResult{Reverted: j.Releases, Target: rp.Target}, nil
	}})
}

func (s *Service) planRollback(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a RollbackArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	all, err := s.state(p.Name).releases()
	if err != nil {
		return nil, err
	}
	var live []*Release // deployed and not undone, newest first
	for _, r := range all {
		if r.Status == ReleaseOK {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return nil, events.Errorf(events.CodeNotFound, "project %s has no deployed release to roll back", p.Name).
			WithHint("roll back is possible after a successful deploy")
	}
	undo := live[:1]
	target := ""
	if len(live) > 1 {
		target = live[1].ID
	}
	if a.To != "" {
		i := -1
		for k, r := range live {
			if r.ID == a.To {
				i = k
			}
		}
		if i < 0 {
			ids := make([]string, 0, len(live))
			for _, r := range live {
				ids = append(ids, r.ID)
			}
			return nil, events.Errorf(events.CodeNotFound, "release %q is not a live release of %s", a.To, p.Name).
				With("releases", ids).WithHint("pick one of: " + strings.Join(ids, ", "))
		}
		if i == 0 {
			return nil, events.Errorf(events.CodeBadRequest, "release %s is the current release", a.To).
				WithHint("name an older release, or leave to out to undo the latest deploy")
		}
		undo, target = live[:i], a.To
	}
	rp := &RollbackPlan{Target: target, Images: map[string]string{}, Steps: []string{events.StepLock, events.StepRollback, events.StepUp, events.StepVerify}}
	h := sha256.New()
	for _, r := range undo {
		rp.Undo = append(rp.Undo, ReleaseInfo{ID: r.ID, User: r.User, CreatedAt: r.CreatedAt.Format("2006-01-02T15:04:05Z07:00"),
			Added: r.Files.Added, Modified: r.Files.Modified, Deleted: r.Files.Deleted})
		rp.FilesRestored += r.Files.Modified + r.Files.Deleted
		rp.FilesRemoved += r.Files.Added
		fmt.Fprintln(h, r.ID)
	}
	for svc, img := range undo[len(undo)-1].Images {
		rp.Images[svc] = img.Ref + " → " + shortImageID(img.PreviousID)
	}
	return &plan{Data: rp, Digest: hex.EncodeToString(h.Sum(nil)), state: undo}, nil
}

// resumedRollback answers a redelivered rollback whose first attempt
// stopped with the worker.
func (s *Service) resumedRollback(ctx context.Context, req *Request) (any, error, bool) {
	ps := s.state(req.Project)
	if j, err := ps.journal(); err == nil && j.RequestID == req.ID {
		if err := s.recoverOne(ctx, ps, j, nopReporter{}); err != nil {
			return nil, events.Errorf(events.CodeInternal, "the rollback was interrupted and could not be finished yet: %v", err).
				WithHint("check the worker log and the project's status"), true
		}
	}
	rels, err := ps.releases()
	if err != nil {
		return nil, nil, false
	}
	var reverted []string
	for _, r := range rels {
		if r.RevertedBy == req.ID {
			reverted = append(reverted, r.ID)
		}
	}
	if len(reverted) == 0 {
		return nil, nil, false
	}
	return &RollbackResult{Reverted: reverted}, nil, true
}

func shortImageID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
