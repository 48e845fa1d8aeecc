package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// Start brings a project up as it is configured (its production files,
// without building what is already built), and verifies it: the way back
// up after a stop, a reboot, or a `docker compose down`. It needs no
// confirmation: it only creates and starts what the compose files
// declare, and removes containers of services they no longer have.
func (s *Service) Start(ctx context.Context, req *Request, rep Reporter) (any, error) {
	return s.mutate(ctx, req, rep, startMutation)
}

var startMutation = &mutation{op: startOp, plan: (*Service).planStart, begin: beginServices}

// startOp is `docker compose up` and verify; both can run twice.
var startOp = &operation{
	name:      events.ActionStart,
	onFailure: finishSteps,
	steps: []step{
		{name: events.StepUp, title: servicesTitle("starting"), do: composeOnServices("up", "-d", "--remove-orphans")},
		{name: events.StepVerify, title: verifyTitle, do: verifyServices},
	},
	finish: recordStart,
	failed: opFailure,
}

// StartArgs are the arguments of start.
type StartArgs struct {
	// Services to start; default: every service.
	Services []string `json:"services,omitempty"`
}

// StartPlan says what start does.
type StartPlan struct {
	Services []string `json:"services"`
	// NotUp are the services that had no running container.
	NotUp []string `json:"not_up"`
	Steps []string `json:"steps"`
}

// StartResult is the result data of start.
type StartResult struct {
	Services []ServiceHealth `json:"services"`
	// Started are the services that were not up before.
	Started []string `json:"started"`
}

func (s *Service) planStart(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a StartArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	_, services, err := s.serviceScope(ctx, p, a.Services, (*berth.ComposeModel).ServiceNames)
	if err != nil {
		return nil, err
	}
	down, err := s.servicesNotUp(ctx, p)
	if err != nil {
		return nil, err
	}
	sp := &StartPlan{Services: services, NotUp: []string{}, Steps: []string{events.StepLock, events.StepUp, events.StepVerify}}
	for _, d := range down {
		svc, _, _ := strings.Cut(d, " ")
		if slices.Contains(services, svc) {
			sp.NotUp = append(sp.NotUp, svc)
		}
	}
	return &plan{Data: sp, state: services}, nil
}

func recordStart(ctx context.Context, r *opRun) (any, error) {
	var started []string
	if sp, ok := r.planData.(*StartPlan); ok {
		started = sp.NotUp
	}
	return &StartResult{Services: r.health, Started: started}, nil
}

// servicesNotUp lists the services of a project that are not up, each
// with why ("web (missing)", "worker (exited 1)"): no container, or none
// running; a one-shot that exited 0 is up.
func (s *Service) servicesNotUp(ctx context.Context, p *berth.Project) ([]string, error) {
	model, err := s.Engine.ComposeModel(ctx, composeSpec(p))
	if err != nil {
		return nil, err
	}
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, svc := range model.ServiceNames() {
		mine := containersOf(cs, svc)
		switch {
		case len(mine) == 0 && model.Services[svc].Replicas == 0:
		case len(mine) == 0:
			out = append(out, svc+" (missing)")
		case !slices.ContainsFunc(mine, func(c berth.Container) bool {
			return c.State == "running" || (c.State == "exited" && c.ExitCode == 0 && model.Completion(svc) != berth.Runs)
		}):
			out = append(out, fmt.Sprintf("%s (%s)", svc, describeState(mine[0])))
		}
	}
	return out, nil
}

func describeState(c berth.Container) string {
	if c.State == "exited" {
		return fmt.Sprintf("exited %d", c.ExitCode)
	}
	return c.State
}
