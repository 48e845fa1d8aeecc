package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"

	"github.com/berth-ops/berth/events"
)

// ConfigGet returns a project's configuration.
func (s *Service) ConfigGet(ctx context.Context, req *Request, _ Reporter) (any, error) {
	if err := events.DecodeArgs(req.Args, &struct{}{}); err != nil {
		return nil, err
	}
	return s.project(ctx, req.Project)
}

// ConfigDelete removes a project's configuration and status cache after
// confirmation. Its history stays, so a project configured again later
// keeps its past; its containers and files are not touched.
func (s *Service) ConfigDelete(ctx context.Context, req *Request, rep Reporter) (any, error) {
	if s.Confirms == nil || s.Locks == nil {
		// Without the confirmation store, delete at once (read-only setups).
		if err := events.DecodeArgs(req.Args, &struct{}{}); err != nil {
			return nil, err
		}
		return s.deleteConfig(ctx, req.Project)
	}
	return s.mutate(ctx, req, rep, configDeleteMutation)
}

// configDeleteMutation is a confirmed config.delete: one write to the
// store, so it needs no journal.
var configDeleteMutation = &mutation{confirm: true, plan: (*Service).planConfigDelete,
	apply: func(s *Service, ctx context.Context, p *berth.Project, _ *plan) (any, error) {
		return s.deleteConfig(ctx, p.Name)
	}}

func (s *Service) planConfigDelete(ctx context.Context, p *berth.Project, args json.RawMessage) (*plan, error) {
	if err := events.DecodeArgs(args, &struct{}{}); err != nil {
		return nil, err
	}
	raw, _ := json.Marshal(p)
	sum := sha256.Sum256(raw)
	return &plan{Data: map[string]any{"delete": p, "kept": "history, containers, files and releases are not touched"},
		Digest: hex.EncodeToString(sum[:])}, nil
}

func (s *Service) deleteConfig(ctx context.Context, project string) (any, error) {
	if _, err := s.project(ctx, project); err != nil {
		return nil, err
	}
	if err := s.Store.DeleteProject(ctx, project); err != nil {
		return nil, err
	}
	if s.State != nil {
		if err := s.State.RemoveProjectConfig(project); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot remove the copy of the project's configuration")
		}
	}
	s.known.forget(project)
	return map[string]any{"project": project, "deleted": true,
		"note": fmt.Sprintf("history of %s is kept", project)}, nil
}
