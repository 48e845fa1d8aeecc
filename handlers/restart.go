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

// Restart restarts a project's services (or some of them) after
// confirmation, then verifies they are up, and reports each one's time to
// up and the downtime.
func (s *Service) Restart(ctx context.Context, req *Request, rep Reporter) (any, error) {
	return s.mutate(ctx, req, rep, restartMutation)
}

var restartMutation = &mutation{op: restartOp, confirm: true, plan: (*Service).planRestart, begin: beginServices}

// restartOp restarts containers and verifies them. A worker that stops
// during the restart leaves the next one to start what is stopped (not to
// restart again), then verify.
var restartOp = &operation{
	name:      events.ActionRestart,
	onFailure: finishSteps,
	steps: []step{
		{name: events.StepRestart, title: servicesTitle("restarting"), do: restartServices, resume: resumeRestart},
		{name: events.StepVerify, title: verifyTitle, do: verifyServices},
	},
	finish: recordRestart,
	failed: opFailure,
}

// RestartArgs are the arguments of restart.
type RestartArgs struct {
	// Services to restart; default: the services meant to keep running
	// (not the one-shots, nor a service whose container finished).
	Services []string `json:"services,omitempty"`
	// StartFirst replaces the containers of the services that declare
	// start-first with new ones started beside them (a rollout), instead
	// of restarting them: no downtime for those.
	StartFirst bool `json:"start_first,omitempty"`
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
	// StartFirst are the services rolled out instead of restarted (with
	// start_first), Refused those that asked for it but cannot.
	StartFirst []string            `json:"start_first,omitempty"`
	Refused    []StartFirstRefusal `json:"refused,omitempty"`
}

// RestartResult is the result data of a restart.
type RestartResult struct {
	Services []ServiceHealth `json:"services"`
	// DowntimeS is the measured time from the restart until every service
	// was up again.
	DowntimeS float64 `json:"downtime_s"`
	// Rollouts are the services rolled out start-first (with
	// start_first); the downtime is then the others', measured over the
	// whole step (an upper bound).
	Rollouts []RolloutResult `json:"rollouts,omitempty"`
}

// defaultRestartEstimate is the downtime stated before any restart of the
// project was measured.
const defaultRestartEstimate = 10 * time.Second

func (s *Service) planRestart(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a RestartArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return nil, err
	}
	model, services, err := s.serviceScope(ctx, p, a.Services, func(m *berth.ComposeModel) []string { return keptRunning(m, cs) })
	if err != nil {
		return nil, err
	}
	rp := &RestartPlan{Services: services, Steps: []string{events.StepLock, events.StepRestart, events.StepVerify}, Containers: []string{}}
	h := sha256.New()
	if a.StartFirst {
		roll, refused := startFirst(p, model)
		for _, svc := range services {
			if slices.Contains(roll, svc) {
				rp.StartFirst = append(rp.StartFirst, svc)
			}
		}
		for _, r := range refused {
			if slices.Contains(services, r.Service) {
				rp.Refused = append(rp.Refused, r)
			}
		}
		if len(rp.StartFirst) == 0 {
			return nil, events.Errorf(events.CodeBadRequest, "none of %s rolls out start-first", strings.Join(services, ", ")).
				With("refused", rp.Refused).
				WithHint("declare deploy.update_config.order: start-first on the services (see docs/zero-downtime.md), or restart without start_first")
		}
		fmt.Fprintf(h, "start-first %s\n", strings.Join(rp.StartFirst, ","))
	}
	for _, c := range cs {
		if slices.Contains(services, c.Service) {
			rp.Containers = append(rp.Containers, c.Name)
			fmt.Fprintf(h, "%s\x00%s\x00%s\n", c.Service, c.Name, c.ID)
		}
	}
	if len(rp.Containers) == 0 {
		return nil, events.Errorf(events.CodeNotFound, "no containers to restart for %s", strings.Join(services, ", ")).
			WithHint("the services are not created: send start (or deploy) to create them")
	}
	rp.DowntimeEstimateS, rp.EstimateSource = s.restartEstimate(ctx, p.Name)
	return &plan{Data: rp, Digest: hex.EncodeToString(h.Sum(nil)), state: services, rolling: rp.StartFirst}, nil
}

// restartServices restarts the run's services: those the journal names
// in Rolling roll out start-first, the others `docker compose restart`.
func restartServices(ctx context.Context, r *opRun) error {
	model, err := r.s.Engine.ComposeModel(ctx, r.spec())
	if err != nil {
		return err
	}
	r.model = model
	var others []string
	for _, svc := range r.j.Services {
		if !slices.Contains(r.j.Rolling, svc) {
			others = append(others, svc)
		}
	}
	if len(others) > 0 {
		if err := r.compose(ctx, events.StepRestart, events.CodeHealthFailed, append([]string{"restart"}, others...)...); err != nil {
			return err
		}
	}
	for _, svc := range dependencyOrder(model, r.j.Rolling) {
		if err := r.rollOut(ctx, events.StepRestart, model, svc); err != nil {
			return err
		}
	}
	return nil
}

// resumeRestart finishes a restart a stopped worker left: its rollouts
// end with one set of containers, then whatever is stopped starts.
func resumeRestart(ctx context.Context, r *opRun) error {
	if err := settleRollouts(ctx, r); err != nil {
		return err
	}
	return composeOnServices("start")(ctx, r)
}

// beginServices puts the services a restart, start or stop acts on in
// its journal.
func beginServices(r *opRun, pl *plan) error {
	r.j.Services = pl.state.([]string)
	r.j.Rolling = pl.rolling
	r.note("services", r.j.Services)
	return nil
}

func servicesTitle(verb string) func(*opRun) string {
	return func(r *opRun) string { return verb + " " + strings.Join(r.j.Services, ", ") }
}

// composeOnServices returns a step that runs `docker compose <verb>
// <services>`; it reads the compose model first, for verify.
func composeOnServices(verb string, flags ...string) func(context.Context, *opRun) error {
	return func(ctx context.Context, r *opRun) error {
		s := r.s
		model, err := s.Engine.ComposeModel(ctx, r.spec())
		if err != nil {
			return err
		}
		r.model = model
		args := append(append([]string{verb}, flags...), r.j.Services...)
		return r.compose(ctx, r.j.Current(), events.CodeHealthFailed, args...)
	}
}

// verifyServices waits until the run's services (a deploy's and a
// rollback's: all of them) are up, as verify judges them.
func verifyServices(ctx context.Context, r *opRun) error {
	health, fail, err := r.s.verify(ctx, r.project(), r.model, r.j.Services, events.StepVerify, r.rep)
	if err != nil {
		return err
	}
	if fail != nil {
		r.failure = fail
		return fail.Error()
	}
	r.health = health
	return nil
}

func recordRestart(ctx context.Context, r *opRun) (any, error) {
	if len(r.j.Rolling) == len(r.j.Services) {
		// Every service rolled out: nothing was down, and nothing was
		// measured for the estimate of the next restart.
		return &RestartResult{Services: r.health, Rollouts: r.rolledOut}, nil
	}
	down := time.Duration(r.j.StepsMS[events.StepRestart]+r.j.StepsMS[events.StepVerify]) * time.Millisecond
	r.note("downtime_s", down.Seconds())
	return &RestartResult{Services: r.health, DowntimeS: down.Seconds(), Rollouts: r.rolledOut}, nil
}

// serviceScope reads the compose model and checks the services a command
// names; none named means def(model).
func (s *Service) serviceScope(ctx context.Context, p *berth.Project, named []string, def func(*berth.ComposeModel) []string) (*berth.ComposeModel, []string, error) {
	model, err := s.Engine.ComposeModel(ctx, composeSpec(p))
	if err != nil {
		return nil, nil, err
	}
	services := slices.Clone(named)
	if len(services) == 0 {
		services = def(model)
	}
	for _, svc := range services {
		if _, ok := model.Services[svc]; !ok {
			return nil, nil, events.Errorf(events.CodeBadRequest, "service %q is not part of project %s", svc, p.Name).
				With("services", model.ServiceNames()).
				WithHint("pick from: " + strings.Join(model.ServiceNames(), ", "))
		}
	}
	slices.Sort(services)
	return model, slices.Compact(services), nil
}

// keptRunning are the services meant to keep running: those that must
// (a healthcheck, a restart policy), and those that may finish but run
// now. A one-shot (or any service whose container finished) is left out:
// a restart would run it again.
func keptRunning(m *berth.ComposeModel, cs []berth.Container) []string {
	var out []string
	for _, svc := range m.ServiceNames() {
		switch m.Completion(svc) {
		case berth.Runs:
			out = append(out, svc)
		case berth.MayFinish:
			if slices.ContainsFunc(containersOf(cs, svc), func(c berth.Container) bool { return c.State == "running" }) {
				out = append(out, svc)
			}
		}
	}
	return out
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

// composeOutput carries the output of a compose run to the requester: a
// few progress events per second (a chatty build does not flood the event
// stream), and every line, redacted, in log events of stream "compose".
type composeOutput struct {
	s       *Service
	p       *berth.Project
	rep     Reporter
	step    string
	last    time.Time
	skipped int
	batch   []events.LogLine
	flushed time.Time
}

func (o *composeOutput) line(line string) {
	line = strings.TrimSpace(line)
	if line == "" {
		return
	}
	line = o.s.redact(o.p, line)
	o.batch = append(o.batch, events.LogLine{Stream: events.StreamCompose, Line: line})
	if len(o.batch) >= 100 || time.Since(o.flushed) > time.Second {
		o.flush()
	}
	if time.Since(o.last) < 200*time.Millisecond {
		o.skipped++
		return
	}
	if o.skipped > 0 {
		line = fmt.Sprintf("%s (+%d lines)", line, o.skipped)
	}
	o.last, o.skipped = time.Now(), 0
	o.rep.Progress(o.step, line, -1, -1)
}

// flush sends the lines not sent yet.
func (o *composeOutput) flush() {
	if len(o.batch) > 0 {
		_ = o.rep.Log(o.batch)
		o.batch = nil
	}
	o.flushed = time.Now()
}

// compose runs `docker compose <args>` for the run's step, with the run's
// spec (and tag), its output carried to the requester.
func (r *opRun) compose(ctx context.Context, step string, failCode events.Code, args ...string) error {
	out := &composeOutput{s: r.s, p: r.project(), rep: r.rep, step: step, flushed: time.Now()}
	err := r.s.Composer.Compose(ctx, r.spec(), failCode, out.line, args...)
	out.flush()
	return err
}
