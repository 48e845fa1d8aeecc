package handlers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// ServiceHealth is how one service came up after a mutation.
type ServiceHealth struct {
	Service   string `json:"service"`
	Container string `json:"container,omitempty"`
	State     string `json:"state"`
	Health    string `json:"health,omitempty"`
	// ReadyBy says how the service counted as up: "healthy" (its
	// healthcheck passed), "stable" (running unchanged for the
	// stabilisation window), "completed" (a one-shot that exited 0) or
	// "scaled to 0".
	ReadyBy string `json:"ready_by"`
	// ReadyAfterMS is the time from the start of verification until the
	// service counted as up.
	ReadyAfterMS int64 `json:"ready_after_ms"`
}

// FailureDetails say why a service failed verification.
type FailureDetails struct {
	Service   string   `json:"service"`
	Container string   `json:"container,omitempty"`
	State     string   `json:"state"`
	Health    string   `json:"health,omitempty"`
	ExitCode  int      `json:"exit_code"`
	Reason    string   `json:"reason"`
	HealthLog []string `json:"health_log,omitempty"`
	LastLogs  []string `json:"last_logs,omitempty"`
}

// verify waits until every service of model in scope (default: all of
// them) is up, judged by what the compose files declare of it (see
// berth.Completion):
//   - a service with a healthcheck must be healthy;
//   - a one-shot (the target of a service_completed_successfully, or
//     labelled berth.one-shot) must have exited 0;
//   - any other service must run with an unchanged restart count for the
//     stabilisation window, and may instead have exited 0 when its restart
//     policy lets it (no, on-failure).
//
// A container that exits non-zero, turns unhealthy or restarts fails it
// at once, with its health-check output and last log lines. The deadline
// is the worker's verify timeout, or longer when a healthcheck needs
// more (start_period + interval × retries). Progress events go out under
// step (verify, or rollback when an undo verifies).
func (s *Service) verify(ctx context.Context, p *berth.Project, model *berth.ComposeModel, scope []string, step string, rep Reporter) ([]ServiceHealth, *FailureDetails, error) {
	if len(scope) == 0 {
		scope = model.ServiceNames()
	}
	start := s.Now()
	timeout := s.Config.VerifyTimeout
	for _, svc := range scope {
		timeout = max(timeout, model.Services[svc].HealthTimeout+10*time.Second)
	}
	deadline := start.Add(timeout)
	ready := map[string]ServiceHealth{}
	firstSeen := map[string]int{} // restart count per container at first sight
	stableSince := map[string]time.Time{}
	window := s.stabilize(p)
	for {
		cs, err := s.Engine.Containers(ctx, p.ComposeProject)
		if err != nil {
			return nil, nil, err
		}
		now := s.Now()
		pending := 0
		// The next look: in verifyPoll, or as a stabilisation window ends.
		next := verifyPoll
		for _, svc := range scope {
			if _, ok := ready[svc]; ok {
				continue
			}
			completion := model.Completion(svc)
			mine := containersOf(cs, svc)
			if len(mine) == 0 {
				if sd, ok := model.Services[svc]; ok && sd.Replicas == 0 {
					ready[svc] = ServiceHealth{Service: svc, State: "none", ReadyBy: "scaled to 0", ReadyAfterMS: now.Sub(start).Milliseconds()}
					continue
				}
				pending++
				if now.After(deadline) {
					return nil, &FailureDetails{Service: svc, State: "missing", Reason: "no container was created"}, nil
				}
				continue
			}
			allUp := true
			readyBy := ""
			for _, c := range mine {
				by, fail := containerUp(c, completion, now, window, firstSeen, stableSince)
				if fail != "" {
					return nil, s.failure(ctx, p, c, fail), nil
				}
				allUp = allUp && by != ""
				readyBy = cmp.Or(readyBy, by)
				if since, ok := stableSince[c.Name]; ok && by == "" {
					if d := since.Add(window).Sub(now); d > 0 && d < next {
						next = max(d, 5*time.Millisecond)
					}
				}
			}
			if allUp {
				c := mine[0]
				ready[svc] = ServiceHealth{Service: svc, Container: c.Name, State: c.State, Health: c.Health, ReadyBy: readyBy,
					ReadyAfterMS: now.Sub(start).Milliseconds()}
				rep.Progress(step, fmt.Sprintf("%s is up (%s)", svc, describeReady(c, readyBy)), len(ready), len(scope))
				continue
			}
			pending++
			if now.After(deadline) {
				c := mine[0]
				why := fmt.Sprintf("not up after %s (%s)", timeout, describe(c))
				if completion == berth.Finishes && c.State == "running" {
					why = fmt.Sprintf("a one-shot service still running after %s: it must finish (exit 0)", timeout)
				}
				return nil, s.failure(ctx, p, c, why), nil
			}
		}
		if pending == 0 {
			out := make([]ServiceHealth, 0, len(scope))
			for _, svc := range scope {
				out = append(out, ready[svc])
			}
			return out, nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(next):
		}
	}
}

// verifyPoll is how often verify looks at the containers while none of
// them is about to end its stabilisation window.
const verifyPoll = 250 * time.Millisecond

// stabilize is the stabilisation window of a project's services.
func (s *Service) stabilize(p *berth.Project) time.Duration {
	if p.StabilizeS != nil {
		return time.Duration(*p.StabilizeS) * time.Second
	}
	return s.Config.Stabilize
}

// containerUp says how c counts as up ("" while it does not yet), or why
// it failed; completion is what its service is expected to do, window the
// time it must run unchanged without a healthcheck.
func containerUp(c berth.Container, completion berth.Completion, now time.Time, window time.Duration, firstSeen map[string]int, stableSince map[string]time.Time) (string, string) {
	if _, ok := firstSeen[c.Name]; !ok {
		firstSeen[c.Name] = c.RestartCount
	}
	switch {
	case c.Health == "unhealthy":
		return "", "health check failing"
	case c.Health == "healthy":
		return "healthy", ""
	case c.State == "exited" && c.ExitCode == 0 && (completion != berth.Runs || c.OneShot):
		return "completed", ""
	case c.State == "exited" && c.ExitCode == 0:
		return "", "exited with code 0, but it is a long-running service (it has a healthcheck or a restart policy that keeps it running)"
	case c.State == "exited" || c.State == "dead":
		return "", fmt.Sprintf("exited with code %d", c.ExitCode)
	case c.Health == "starting":
		return "", ""
	case c.State != "running":
		return "", ""
	case c.RestartCount != firstSeen[c.Name]:
		return "", fmt.Sprintf("restarted %d times while being verified", c.RestartCount-firstSeen[c.Name])
	case completion == berth.Finishes:
		return "", "" // a one-shot counts once it has exited 0
	}
	since, ok := stableSince[c.Name]
	if !ok {
		since = c.StartedAt
		if since.IsZero() || since.After(now) {
			since = now
		}
		stableSince[c.Name] = since
	}
	if now.Sub(since) >= window {
		return "stable", ""
	}
	return "", ""
}

func describeReady(c berth.Container, by string) string {
	switch by {
	case "completed":
		return "one-shot, exited 0"
	case "stable":
		return "running, stable"
	}
	return describe(c)
}

// failure gathers what a user needs to see why c failed: its health-check
// outputs and its last 30 log lines.
func (s *Service) failure(ctx context.Context, p *berth.Project, c berth.Container, reason string) *FailureDetails {
	f := &FailureDetails{Service: c.Service, Container: c.Name, State: c.State, Health: c.Health,
		ExitCode: c.ExitCode, Reason: reason, HealthLog: c.HealthLog}
	var lines []string
	_ = s.Engine.Logs(ctx, c.ID, berth.LogOptions{Tail: 30}, func(l events.LogLine) error {
		lines = append(lines, l.Stream+": "+l.Line)
		return nil
	})
	f.LastLogs = s.redactAll(p, lines)
	f.HealthLog = s.redactAll(p, append([]string(nil), f.HealthLog...))
	return f
}

// Error turns a verification failure into a health_failed error.
func (f *FailureDetails) Error() *events.Error {
	msg := fmt.Sprintf("service %s failed: %s", f.Service, f.Reason)
	if len(f.HealthLog) > 0 {
		msg += "; last health check: " + strings.TrimSpace(f.HealthLog[len(f.HealthLog)-1])
	}
	return events.Errorf(events.CodeHealthFailed, "%s", msg).
		With("service", f.Service).
		WithHint("see health_log and last_logs in the result data, fix the service, and try again")
}

func containersOf(cs []berth.Container, svc string) []berth.Container {
	var out []berth.Container
	for _, c := range cs {
		if c.Service == svc {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b berth.Container) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func describe(c berth.Container) string {
	if c.Health != "" {
		return c.State + ", " + c.Health
	}
	return c.State
}

// diagnose finds the first service that is not up and says why: an
// unhealthy container, one that exited non-zero, one still starting.
func (s *Service) diagnose(ctx context.Context, p *berth.Project, model *berth.ComposeModel) *FailureDetails {
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return nil
	}
	for _, want := range []func(berth.Container) bool{
		func(c berth.Container) bool { return c.Health == "unhealthy" },
		func(c berth.Container) bool { return c.State == "exited" && c.ExitCode != 0 },
		func(c berth.Container) bool { return c.State == "restarting" || c.Health == "starting" },
		func(c berth.Container) bool { return c.State == "created" },
	} {
		for _, c := range cs {
			if model != nil {
				if _, ok := model.Services[c.Service]; !ok {
					continue // an orphan the up did not get to remove
				}
			}
			if want(c) {
				return s.failure(ctx, p, c, describe(c))
			}
		}
	}
	return nil
}
