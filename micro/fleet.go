package micro

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	natsmicro "github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
)

// EndpointFleet lists the fleet's workers: berth.q.fleet.
const EndpointFleet = "fleet"

// FleetWorker is one worker in the answer of berth.q.fleet.
type FleetWorker struct {
	berth.WorkerInfo
	// State is up, down (silent for three heartbeats) or stopped.
	State   string  `json:"state"`
	UptimeS float64 `json:"uptime_s,omitempty"`
	// Projects are the projects on the host that the user may view.
	Projects []string `json:"projects"`
}

// FleetResult is the answer of berth.q.fleet.
type FleetResult struct {
	Workers []FleetWorker `json:"workers"`
	Count   int           `json:"count"`
	// Unplaced are projects stored without a host (configured before the
	// fleet): whichever worker takes their commands runs them.
	Unplaced []string `json:"unplaced,omitempty"`
}

// addFleetEndpoints adds berth.q.fleet and, in a fleet, the endpoints
// answering the queries forwarded to this host.
func (s *Server) addFleetEndpoints(svc natsmicro.Service) error {
	err := svc.AddEndpoint(EndpointFleet, natsmicro.HandlerFunc(func(r natsmicro.Request) {
		s.serve(r, endpoint{name: EndpointFleet})
	}), natsmicro.WithEndpointSubject(s.cfg.Subjects.Prefix+".q."+EndpointFleet),
		natsmicro.WithEndpointMetadata(map[string]string{"role": "any: the workers, and the projects on each the user may view"}))
	if err != nil {
		return fmt.Errorf("query endpoint %s: %w", EndpointFleet, err)
	}
	if s.cfg.Host == "" {
		return nil
	}
	for _, ep := range s.projectEndpoints() {
		// Every worker of the host answers; one host normally has one.
		err := svc.AddEndpoint("host-"+ep.name, natsmicro.HandlerFunc(func(r natsmicro.Request) { s.serve(r, ep) }),
			natsmicro.WithEndpointSubject(s.cfg.Subjects.HostQuery(s.cfg.Host, "*", ep.name)),
			natsmicro.WithEndpointMetadata(map[string]string{"action": ep.action, "forwarded": "queries of this host's projects, from the other workers"}))
		if err != nil {
			return fmt.Errorf("query endpoint host-%s: %w", ep.name, err)
		}
	}
	return nil
}

// forwardTimeout bounds the wait for the owner's answer to a forwarded
// query (as long as `nats req` waits by default).
const forwardTimeout = 5 * time.Second

// forward answers a query of a project on another host with that host's
// answer, relayed unchanged (it was admitted there, under the same rules);
// it reports false when this worker answers the query itself. A host with
// no worker answering gets unavailable, with when it was last seen.
func (s *Server) forward(ctx context.Context, r natsmicro.Request, ep endpoint, start time.Time, log *zerolog.Logger) bool {
	if s.cfg.Host == "" || ep.action == "" || strings.HasPrefix(r.Subject(), s.cfg.Subjects.Prefix+".hq.") {
		return false
	}
	project := s.projectOf(r.Subject())
	host, err := s.cfg.Service.Route(ctx, project, ep.action, nil)
	if err != nil || host == "" {
		return false // answered here: from the store's last-known config if it is down
	}
	msg := &nats.Msg{Subject: s.cfg.Subjects.HostQuery(host, project, ep.name), Header: nats.Header{}, Data: r.Data()}
	for k, v := range r.Headers() {
		msg.Header[k] = v
	}
	// The endpoint answers one query at a time: a forwarded query that
	// reached a worker as it died must not hold the ones behind it for
	// the whole query timeout.
	fctx, cancel := context.WithTimeout(ctx, min(forwardTimeout, s.cfg.Timeout))
	reply, err := s.nc.RequestMsgWithContext(fctx, msg)
	cancel()
	if err != nil {
		e := s.unavailable(ctx, project, host, err)
		body, _ := json.Marshal(e)
		if rerr := r.Error(string(e.Code), headerValue(e.Message), body); rerr != nil {
			log.Warn().Err(rerr).Msg("cannot send the query's error")
		}
		if o := s.cfg.Observer; o != nil {
			o.QueryDone(ep.name, e.Code, time.Since(start))
		}
		return true
	}
	if rerr := r.Respond(reply.Data, natsmicro.WithHeaders(natsmicro.Headers(reply.Header))); rerr != nil {
		log.Warn().Err(rerr).Msg("cannot relay the query's answer")
	}
	if o := s.cfg.Observer; o != nil {
		o.QueryDone(ep.name, events.Code(reply.Header.Get(natsmicro.ErrorCodeHeader)), time.Since(start))
	}
	return true
}

// unavailable is the error of a query whose host does not answer.
func (s *Server) unavailable(ctx context.Context, project, host string, cause error) *events.Error {
	e := events.Errorf(events.CodeUnavailable, "project %s runs on host %s, whose worker does not answer", project, host).With("host", host)
	if errors.Is(cause, context.DeadlineExceeded) {
		e.Message = fmt.Sprintf("project %s runs on host %s, whose worker did not answer in time", project, host)
	}
	e.Hint = fmt.Sprintf("start the worker of host %s (commands for %s wait for it in the stream), or move the project to another host", host, project)
	if s.cfg.Fleet != nil {
		if w, ok, err := s.cfg.Fleet.Worker(ctx, host); err == nil && ok {
			e = e.With("last_seen", w.LastSeen)
			e.Message += fmt.Sprintf(" (last seen %s ago, at %s)", time.Since(w.LastSeen).Round(time.Second), w.LastSeen.UTC().Format(time.RFC3339))
		} else if err == nil {
			e.Message += " (never seen)"
		}
	}
	return e
}

// fleet answers berth.q.fleet.
func (s *Server) fleet(ctx context.Context, q *events.Command) (any, error) {
	if err := events.DecodeArgs(q.Args, &struct{}{}); err != nil {
		return nil, err
	}
	res := &FleetResult{Workers: []FleetWorker{}}
	var workers []berth.WorkerInfo
	if s.cfg.Fleet != nil {
		var err error
		if workers, err = s.cfg.Fleet.Workers(ctx); err != nil {
			return nil, events.Errorf(events.CodeStoreUnavailable, "cannot read the fleet: %v", err).WithHint("try again when NATS answers")
		}
	}
	byHost := map[string]int{}
	now := time.Now()
	for i, w := range workers {
		fw := FleetWorker{WorkerInfo: w, Projects: []string{}, State: "up"}
		switch {
		case w.StoppedAt != nil:
			fw.State = "stopped"
		case !w.Alive(now):
			fw.State = "down"
		default:
			fw.UptimeS = now.Sub(w.StartedAt).Round(time.Second).Seconds()
		}
		res.Workers = append(res.Workers, fw)
		byHost[w.Host] = i
	}
	names, err := s.cfg.Service.Store.ListProjects(ctx)
	if err != nil {
		return nil, err
	}
	cfgs, err := s.cfg.Service.Store.GetProjects(ctx, names)
	if err != nil {
		return nil, err
	}
	for i, p := range names {
		cfg := cfgs[i]
		if cfg == nil || s.cfg.Service.AuthorizeOn(cfg, &handlers.Request{Project: p, Action: events.ActionStatus, User: q.User}) != nil {
			continue
		}
		if i, ok := byHost[cfg.Host]; ok {
			res.Workers[i].Projects = append(res.Workers[i].Projects, p)
		} else if cfg.Host == "" {
			res.Unplaced = append(res.Unplaced, p)
		} else {
			res.Workers = append(res.Workers, FleetWorker{WorkerInfo: berth.WorkerInfo{Host: cfg.Host}, State: "never seen", Projects: []string{p}})
			byHost[cfg.Host] = len(res.Workers) - 1
		}
	}
	res.Count = len(res.Workers)
	return res, nil
}
