package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// RestartArgs are the arguments of restart.
type RestartArgs struct {
	// Services to restart; default: every service of the project.
	Services []string `json:"services,omitempty"`
}

// RestartPlan is the plan of a restart.
type RestartPlan struct {
	Services   []string `json:"services"`
	Containers []string `json:"containers"`
	// DowntimeEstimateS is the expected downtime; EstimateSource says where
	// it comes from (the last measured restart, or a default).
	DowntimeEstimateS float64  `json:"downtime_estimate_s"`
	EstimateSource    string   `json:"estimate_source"`
	Steps             []string `json:"steps"`
}

// RestartResult is the result data of a restart.
type RestartResult struct {
	Services []ServiceHealth `json:"services"`
	// DowntimeS is the measured time from the restart until every service
	// was up again.
	DowntimeS float64 `json:"downtime_s"`
}

// defaultRestartEstimate is the downtime stated before any restart of the
// project was measured.
const defaultRestartEstimate = 10 * time.Second

// Restart restarts a project's services (or some of them) after
// confirmation, then verifies they are up, and reports each one's time to
// healthy.
func (s *Service) Restart(ctx context.Context, req *Request, rep Reporter) (any, error) {
	return s.twoPhase(ctx, req, rep, mutation{plan: s.planRestart, run: func(ctx context.Context, p *berth.Project, args json.RawMessage, pl *plan, rep Reporter) (any, error) {
		rp := pl.Data.(*RestartPlan)
		req.Note("services", rp.Services)
		rep.Progress(events.StepUp, "restarting "+strings.Join(rp.Services, ", "), -1, -1)
		s.pause(ctx, events.StepUp)
		start := s.Now()
		spec := berth.ComposeSpec{Dir: p.Production, Files: p.ComposeFiles, Project: p.ComposeProject}
		err := s.Composer.Compose(ctx, spec, events.CodeHealthFailed, s.output(p, rep, events.StepUp), append([]string{"restart"}, rp.Services...)...)
		_ = s.Store.InvalidateStatus(context.WithoutCancel(ctx), p.Name)
		if err != nil {
			return nil, err
		}
		rep.Progress(events.StepVerify, "waiting for the services to be up", 0, len(rp.Services))
		s.pause(ctx, events.StepVerify)
		health, fail, err := s.verify(ctx, p, rp.Services, rep)
		if err != nil {
			return nil, err
		}
		if fail != nil {
			return map[string]any{"failure": fail}, fail.Error()
		}
		down := s.Now().Sub(start)
		req.Note("downtime_s", down.Seconds())
		return &RestartResult{Services: health, DowntimeS: down.Seconds()}, nil
	}})
}

func (s *Service) planRestart(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a RestartArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	services := a.Services
	if len(services) == 0 {
		services = slices.Clone(p.Services)
	}
	for _, svc := range services {
		if !slices.Contains(p.Services, svc) {
			return nil, events.Errorf(events.CodeBadRequest, "service %q is not part of project %s", svc, p.Name).
				WithHint("pick from: " + strings.Join(p.Services, ", "))
		}
	}
	slices.Sort(services)
	services = slices.Compact(services)
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return nil, err
	}
	rp := &RestartPlan{Services: services, Steps: []string{events.StepUp, events.StepVerify}, Containers: []string{}}
	h := sha256.New()
	for _, c := range cs {
		if slices.Contains(services, c.Service) {
			rp.Containers = append(rp.Containers, c.Name)
			fmt.Fprintf(h, "%s\x00%s\x00%s\n", c.Service, c.Name, c.ID)
		}
	}
	if len(rp.Containers) == 0 {
		return nil, events.Errorf(events.CodeNotFound, "no containers to restart for %s", strings.Join(services, ", ")).
			WithHint("the services are not created; deploy the project first")
	}
	rp.DowntimeEstimateS, rp.EstimateSource = s.restartEstimate(ctx, p.Name)
	return &plan{Data: rp, Digest: hex.EncodeToString(h.Sum(nil))}, nil
}

// restartEstimate is the last measured restart downtime from history.
func (s *Service) restartEstimate(ctx context.Context, project string) (float64, string) {
	entries, err := s.Store.History(ctx, project, 50)
	if err == nil {
		for _, e := range entries {
			if e.Action != events.ActionRestart || !e.OK {
				continue
			}
			if d, ok := e.Details["downtime_s"].(float64); ok {
				return d, fmt.Sprintf("the restart of %s (request %s)", e.StartedAt.Format(time.RFC3339), e.RequestID)
			}
		}
	}
	return defaultRestartEstimate.Seconds(), "a default: no restart of this project was measured yet"
}

// output turns command output into redacted progress events, at most a
// few per second, so a chatty build does not flood the event stream.
func (s *Service) output(p *berth.Project, rep Reporter, step string) func(string) {
	var last time.Time
	var skipped int
	return func(line string) {
		line = strings.TrimSpace(line)
		if line == "" {
			return
		}
		if time.Since(last) < 200*time.Millisecond {
			skipped++
			return
		}
		if skipped > 0 {
			line = fmt.Sprintf("%s (+%d lines)", line, skipped)
		}
		last, skipped = time.Now(), 0
		rep.Progress(step, s.redact(p, line), -1, -1)
	}
}
