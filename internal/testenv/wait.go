package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"
)

// readyPoll is the interval between two looks at the containers.
const readyPoll = 250 * time.Millisecond

// WaitReady waits, up to 60 seconds, until the project is ready: every
// service of its compose files (`docker compose config`) has containers,
// and each of them is healthy when it has a healthcheck, running when it
// has none, or, for a one-shot service, exited with code 0. The one-shots
// are the fixture's (Fixture.OneShots) and any service another depends on
// with condition service_completed_successfully. It fails t, with the
// containers' states and their logs, when the time is up or as soon as a
// container exits non-zero, a long-running one exits or restarts, or a
// healthcheck reports unhealthy.
//
// Unlike `docker compose up --wait`, it accepts a one-shot that exited 0.
func (s *Sample) WaitReady(t testing.TB) {
	t.Helper()
	if err := s.waitReady(t.Context(), readyTimeout); err != nil {
		t.Fatalf("%s project %s is not ready: %v\n%s", s.Fixture, s.Project, err, s.diagnostics(t))
	}
}

func (s *Sample) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	services, oneShots, err := s.plan(ctx)
	if err != nil {
		return err
	}
	var last string
	for {
		out, err := s.output(ctx, "ps", "-a", "--format", "json")
		if err == nil {
			var ps []psEntry
			if ps, err = parsePS(out); err == nil {
				pending, err := readiness(services, oneShots, ps)
				if err != nil {
					return err
				}
				if len(pending) == 0 {
					return nil
				}
				last = strings.Join(pending, "; ")
			}
		}
		if err != nil && ctx.Err() == nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not ready within %v: %s", timeout, last)
			}
			return ctx.Err()
		case <-time.After(readyPoll):
		}
	}
}

// plan returns the services of the compose files and which of them are
// one-shots.
func (s *Sample) plan(ctx context.Context) (services []string, oneShots map[string]bool, err error) {
	out, err := s.output(ctx, "config", "--format", "json")
	if err != nil {
		return nil, nil, err
	}
	var cfg composeConfig
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		return nil, nil, fmt.Errorf("docker compose config --format json: %v", err)
	}
	oneShots = map[string]bool{}
	for _, name := range s.Fixture.OneShots() {
		oneShots[name] = true
	}
	for name, svc := range cfg.Services {
		services = append(services, name)
		for dep, d := range svc.DependsOn {
			if d.Condition == "service_completed_successfully" {
				oneShots[dep] = true
			}
		}
	}
	sort.Strings(services)
	if len(services) == 0 {
		return nil, nil, errors.New("docker compose config: no services")
	}
	return services, oneShots, nil
}

// composeConfig is what plan reads of `docker compose config --format json`.
type composeConfig struct {
	Services map[string]struct {
		DependsOn map[string]struct {
			Condition string `json:"condition"`
		} `json:"depends_on"`
	} `json:"services"`
}

// psEntry is a container in `docker compose ps --format json`.
type psEntry struct {
	Name     string `json:"Name"`
	Service  string `json:"Service"`
	State    string `json:"State"`  // created, running, restarting, exited, paused, dead
	Health   string `json:"Health"` // "" without healthcheck, starting, healthy, unhealthy
	ExitCode int    `json:"ExitCode"`
	Status   string `json:"Status"`
}

// parsePS parses the output of `docker compose ps --format json`: one
// object per line in Compose 2.21 and later (2.26 here), a JSON array
// before.
func parsePS(out string) ([]psEntry, error) {
	out = strings.TrimSpace(out)
	if strings.HasPrefix(out, "[") {
		var ps []psEntry
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			return nil, fmt.Errorf("docker compose ps --format json: %v", err)
		}
		return ps, nil
	}
	var ps []psEntry
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var e psEntry
		err := dec.Decode(&e)
		if err == io.EOF {
			return ps, nil
		}
		if err != nil {
			return nil, fmt.Errorf("docker compose ps --format json: %v", err)
		}
		ps = append(ps, e)
	}
}

// readiness checks the containers ps against services (oneShots among
// them). It returns what is still pending, none when all is ready, or an
// error when a container has failed for good. Containers of other services
// (orphans) are ignored.
func readiness(services []string, oneShots map[string]bool, ps []psEntry) (pending []string, err error) {
	for _, svc := range services {
		var found bool
		for _, c := range ps {
			if c.Service != svc {
				continue
			}
			found = true
			p, err := containerReadiness(c, oneShots[svc])
			if err != nil {
				return nil, err
			}
			if p != "" {
				pending = append(pending, p)
			}
		}
		if !found {
			pending = append(pending, "service "+svc+": no container yet")
		}
	}
	return pending, nil
}

// containerReadiness returns "" when c is ready, what it waits for when it
// is not yet, or an error when it has failed.
func containerReadiness(c psEntry, oneShot bool) (string, error) {
	what := fmt.Sprintf("container %s (service %s)", c.Name, c.Service)
	switch {
	case c.State == "dead":
		return "", fmt.Errorf("%s is dead: %s", what, c.Status)
	case c.State == "exited" && c.ExitCode != 0:
		return "", fmt.Errorf("%s exited with code %d: %s", what, c.ExitCode, c.Status)
	case oneShot && c.State == "exited":
		return "", nil
	case oneShot:
		return fmt.Sprintf("%s is %s, not exited yet", what, c.State), nil
	case c.State == "exited":
		return "", fmt.Errorf("%s exited (code 0), but it is not a one-shot: %s", what, c.Status)
	case c.State == "restarting":
		return "", fmt.Errorf("%s is restarting (exit code %d): %s", what, c.ExitCode, c.Status)
	case c.State != "running":
		return fmt.Sprintf("%s is %s", what, c.State), nil
	case c.Health == "unhealthy":
		return "", fmt.Errorf("%s is unhealthy: %s", what, c.Status)
	case c.Health != "" && c.Health != "healthy":
		return fmt.Sprintf("%s is %s", what, c.Health), nil
	}
	return "", nil
}

// diagnostics returns the project's containers and their last log lines,
// for a failure message.
func (s *Sample) diagnostics(t testing.TB) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
	defer cancel()
	ps, err := s.run(ctx, "ps", "-a", "--format", "table {{.Service}}\t{{.Name}}\t{{.State}}\t{{.Health}}\t{{.Status}}")
	if err != nil {
		ps += err.Error()
	}
	logs, err := s.run(ctx, "logs", "--no-color", "--tail", "50")
	if err != nil {
		logs += err.Error()
	}
	return "containers:\n" + ps + "\nlogs:\n" + logs
}
