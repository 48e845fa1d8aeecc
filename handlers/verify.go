package handlers

import (
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
	// ReadyAfterMS is the time from the start of verification until the
	// service counted as up (healthy, or stable without a healthcheck).
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

// verify waits until every service in scope is up: healthy when it has a
// healthcheck; otherwise running with an unchanged restart count for the
// stabilisation window; a one-shot service that exited 0 is up too.
// baseline holds restart counts taken before the operation (per
// container name); services with no entry are taken at first sight.
func (s *Service) verify(ctx context.Context, p *berth.Project, scope []string, rep Reporter) ([]ServiceHealth, *FailureDetails, error) {
	if len(scope) == 0 {
		scope = p.Services
	}
	start := s.Now()
	deadline := start.Add(s.Config.VerifyTimeout)
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
			mine := containersOf(cs, svc)
			if len(mine) == 0 {
				pending++
				if now.After(deadline) {
					return nil, &FailureDetails{Service: svc, State: "missing", Reason: "no container was created"}, nil
				}
				continue
			}
			allUp := true
			for _, c := range mine {
				up, fail := containerUp(c, now, window, firstSeen, stableSince)
				if fail != "" {
					return nil, s.failure(ctx, p, c, fail), nil
				}
				allUp = allUp && up
				if since, ok := stableSince[c.Name]; ok && !up {
					if d := since.Add(window).Sub(now); d > 0 && d < next {
						next = max(d, 5*time.Millisecond)
					}
				}
			}
			if allUp {
				c := mine[0]
				ready[svc] = ServiceHealth{Service: svc, Container: c.Name, State: c.State, Health: c.Health,
					ReadyAfterMS: now.Sub(start).Milliseconds()}
				rep.Progress(events.StepVerify, fmt.Sprintf("%s is up (%s)", svc, describe(c)), len(ready), len(scope))
				continue
			}
			pending++
			if now.After(deadline) {
				c := mine[0]
				return nil, s.failure(ctx, p, c, fmt.Sprintf("not up after %s (%s)", s.Config.VerifyTimeout, describe(c))), nil
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

// containerUp says whether c counts as up, or why it failed; window is the
// time it must have run unchanged when it has no healthcheck.
func containerUp(c berth.Container, now time.Time, window time.Duration, firstSeen map[string]int, stableSince map[string]time.Time) (bool, string) {
	if _, ok := firstSeen[c.Name]; !ok {
		firstSeen[c.Name] = c.RestartCount
	}
	switch {
	case c.Health == "unhealthy":
		return false, "health check failing"
	case c.Health == "healthy":
		return true, ""
	case c.Health == "starting":
		return false, ""
	case c.State == "exited" && c.ExitCode == 0 && (c.OneShot || c.RestartCount == firstSeen[c.Name]):
		return true, ""
	case c.State == "exited" || c.State == "dead":
		return false, fmt.Sprintf("exited with code %d", c.ExitCode)
	case c.State != "running":
		return false, ""
	case c.RestartCount != firstSeen[c.Name]:
		return false, fmt.Sprintf("restarted %d times while being verified", c.RestartCount-firstSeen[c.Name])
	}
	since, ok := stableSince[c.Name]
	if !ok {
		since = c.StartedAt
		if since.IsZero() || since.After(now) {
			since = now
		}
		stableSince[c.Name] = since
	}
	return now.Sub(since) >= window, ""
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

// diagnose finds the first service that is not up and says why.
func (s *Service) diagnose(ctx context.Context, p *berth.Project) *FailureDetails {
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return nil
	}
	for _, want := range []func(berth.Container) bool{
		func(c berth.Container) bool { return c.Health == "unhealthy" },
		func(c berth.Container) bool { return c.State == "exited" && c.ExitCode != 0 },
		func(c berth.Container) bool { return c.State == "restarting" || c.Health == "starting" },
	} {
		for _, c := range cs {
			if want(c) {
				return s.failure(ctx, p, c, describe(c))
			}
		}
	}
	return nil
}
