package handlers

import (
	"context"
	"fmt"

	"github.com/berth-ops/berth/events"
)

// ConfigGet returns a project's configuration.
func (s *Service) ConfigGet(ctx context.Context, req *Request, _ Reporter) (any, error) {
	if err := events.DecodeArgs(req.Args, &struct{}{}); err != nil {
		return nil, err
	}
	return s.project(ctx, req.Project)
}

// ConfigDelete removes a project's configuration and status cache. Its
// history stays, so a project configured again later keeps its past.
func (s *Service) ConfigDelete(ctx context.Context, req *Request, _ Reporter) (any, error) {
	if err := events.DecodeArgs(req.Args, &struct{}{}); err != nil {
		return nil, err
	}
	if _, err := s.project(ctx, req.Project); err != nil {
		return nil, err
	}
	if err := s.Store.DeleteProject(ctx, req.Project); err != nil {
		return nil, err
	}
	return map[string]any{"project": req.Project, "deleted": true,
		"note": fmt.Sprintf("history of %s is kept", req.Project)}, nil
}
