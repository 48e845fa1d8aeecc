package handlers

import (
	"context"

	"github.com/berth-ops/berth/events"
)

// HistoryArgs are the arguments of history.
type HistoryArgs struct {
	// Limit is how many entries, newest first (default 20).
	Limit *int `json:"limit,omitempty"`
}

// History returns a project's latest operations, newest first. It works
// for a deleted project too, whose history is kept; a project that is
// neither configured nor has any history is not_found.
func (s *Service) History(ctx context.Context, req *Request, _ Reporter) (any, error) {
	var a HistoryArgs
	if err := events.DecodeArgs(req.Args, &a); err != nil {
		return nil, err
	}
	limit := 20
	if a.Limit != nil {
		limit = *a.Limit
	}
	if limit < 1 || limit > s.Config.HistoryLimit {
		return nil, events.Errorf(events.CodeBadRequest, "limit must be between 1 and %d", s.Config.HistoryLimit).
			WithHint("ask for fewer entries")
	}
	entries, err := s.Store.History(ctx, req.Project, limit)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		// Nothing to show: is the project known at all?
		if _, err := s.project(ctx, req.Project); err != nil {
			return nil, err
		}
	}
	return map[string]any{"project": req.Project, "entries": entries, "count": len(entries)}, nil
}
