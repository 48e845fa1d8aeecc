package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// Stop stops a project's services (or some of them) after confirmation.
// The containers, their volumes and images stay: start brings them back.
func (s *Service) Stop(ctx context.Context, req *Request, rep Reporter) (any, error) {
	return s.mutate(ctx, req, rep, stopMutation)
}

var stopMutation = &mutation{op: stopOp, confirm: true, plan: (*Service).planStop, skip: nothingToStop, begin: beginServices}

// stopOp is `docker compose stop`, which can run twice.
var stopOp = &operation{
	name:      events.ActionStop,
	onFailure: finishSteps,
	steps: []step{
		{name: events.StepStop, title: servicesTitle("stopping"), do: composeOnServices("stop")},
	},
	finish: recordStop,
	failed: opFailure,
}

// StopArgs are the arguments of stop.
type StopArgs struct {
	// Services to stop; default: every service.
	Services []string `json:"services,omitempty"`
}

// StopPlan says what stop stops.
type StopPlan struct {
	Services []string `json:"services"`
	// Containers are the running containers that stop.
	Containers []string `json:"containers"`
	Steps      []string `json:"steps"`
}

// StopResult is the result data of stop.
type StopResult struct {
	Services  []string `json:"services"`
	Stopped   []string `json:"stopped"`
	DurationS float64  `json:"duration_s"`
}

func (s *Service) planStop(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a StopArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	_, services, err := s.serviceScope(ctx, p, a.Services, (*berth.ComposeModel).ServiceNames)
	if err != nil {
		return nil, err
	}
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return nil, err
	}
	sp := &StopPlan{Services: services, Containers: []string{}, Steps: []string{events.StepLock, events.StepStop}}
	h := sha256.New()
	for _, c := range cs {
		if slices.Contains(services, c.Service) && (c.State == "running" || c.State == "restarting") {
			sp.Containers = append(sp.Containers, c.Name)
			fmt.Fprintf(h, "%s\x00%s\n", c.Name, c.ID)
		}
	}
	return &plan{Data: sp, Digest: hex.EncodeToString(h.Sum(nil)), state: services}, nil
}

// nothingToStop answers a stop of services that are all stopped.
func nothingToStop(_ *Service, _ context.Context, _ *berth.Project, pl *plan) (any, bool) {
	sp := pl.Data.(*StopPlan)
	if len(sp.Containers) > 0 {
		return nil, false
	}
	return map[string]any{"services": sp.Services, "stopped": []string{}, "message": "nothing to stop: no container of these services is running"}, true
}

func recordStop(ctx context.Context, r *opRun) (any, error) {
	var stopped []string
	if sp, ok := r.planData.(*StopPlan); ok {
		stopped = sp.Containers
	}
	d := time.Duration(r.j.StepsMS[events.StepStop]) * time.Millisecond
	return &StopResult{Services: r.j.Services, Stopped: stopped, DurationS: d.Seconds()}, nil
}
