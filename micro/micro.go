// Package micro serves Berth's read-only queries as a NATS micro service
// (github.com/nats-io/nats.go/micro): request-reply on
// berth.q.<project>.status|logs|config|history|releases and berth.q.projects, with
// the same strict body decoding, signature check, roles and handlers as
// the command subjects, but no JetStream, no request record and no events:
// the reply is the answer. `nats micro ls`, `nats micro info berth` and
// `nats micro stats berth` show the service.
package micro

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	natsmicro "github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
)

// Version is the query service's version, as `nats micro info` shows it.
const Version = "1.0.0"

// The endpoint names, as `nats micro info` lists them.
const (
	EndpointStatus   = events.EndpointStatus
	EndpointLogs     = events.EndpointLogs
	EndpointConfig   = events.EndpointConfig
	EndpointHistory  = events.EndpointHistory
	EndpointProjects = events.EndpointProjects
)

// DefaultTimeout bounds the work of one query.
const DefaultTimeout = 30 * time.Second

// Config configures the query service.
type Config struct {
	// Subjects gives the prefix: the service is named after it (berth) and
	// its endpoints live under <prefix>.q.
	Subjects events.Subjects
	// Service holds the handlers and the roles.
	Service *handlers.Service
	// Admission checks a query as it checks a command (signature, key,
	// replay, decoding, subject, role); it is required.
	Admission *handlers.Admission
	// Observer, when set, is told of every query answered.
	Observer handlers.Observer
	Log      zerolog.Logger
	// Timeout bounds one query (DefaultTimeout when zero).
	Timeout time.Duration
	// QueueGroup shares the queries among workers; "<prefix>-queries"
	// when empty.
	QueueGroup string
	// Metadata is added to the service's metadata (the worker's id).
	Metadata map[string]string
	// Host, in a fleet, is this worker's host: a query of a project that
	// lives on another host is forwarded to that host's worker
	// (<prefix>.hq.<host>.<project>.<endpoint>), and this worker answers
	// the queries forwarded to Host. Fleet lists the workers (for the
	// fleet endpoint, and to say when a silent host was last seen).
	Host  string
	Fleet handlers.Fleet
}

// Server is the running query service.
type Server struct {
	cfg Config
	nc  *nats.Conn
	svc natsmicro.Service
}

// ProjectsResult is the answer of berth.q.projects.
type ProjectsResult struct {
	Projects []string `json:"projects"`
	Count    int      `json:"count"`
}

// endpoint is one query endpoint.
type endpoint struct {
	name    string
	action  string // the command action it serves; "" for projects
	handler handlers.HandlerFunc
}

// Start registers the service and its endpoints on nc.
func Start(nc *nats.Conn, cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.Admission == nil {
		return nil, errors.New("micro: a handlers.Service and a handlers.Admission are required")
	}
	if cfg.Subjects.Prefix == "" {
		cfg.Subjects = events.NewSubjects("")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.QueueGroup == "" {
		cfg.QueueGroup = cfg.Subjects.Prefix + "-queries"
	}
	s := &Server{cfg: cfg, nc: nc}
	md := map[string]string{"prefix": cfg.Subjects.Prefix, "signed": fmt.Sprint(cfg.Admission.Verifier.Enabled())}
	for k, v := range cfg.Metadata {
		md[k] = v
	}
	svc, err := natsmicro.AddService(nc, natsmicro.Config{
		Name:        cfg.Subjects.Prefix,
		Version:     Version,
		Description: "Berth read-only queries: status, logs, config, history and releases of a project, and the projects a user may view",
		Metadata:    md,
		QueueGroup:  cfg.QueueGroup,
		ErrorHandler: func(_ natsmicro.Service, e *natsmicro.NATSError) {
			cfg.Log.Error().Str("subject", e.Subject).Str("error", e.Description).Msg("query service error")
		},
	})
	if err != nil {
		return nil, fmt.Errorf("query service: %w", err)
	}
	s.svc = svc
	for _, ep := range s.projectEndpoints() {
		subject := s.Subject("*", ep.name)
		err := svc.AddEndpoint(ep.name, natsmicro.HandlerFunc(func(r natsmicro.Request) { s.serve(r, ep) }),
			natsmicro.WithEndpointSubject(subject),
			natsmicro.WithEndpointMetadata(map[string]string{"action": ep.action, "role": handlers.RequiredRole(ep.action),
				"subject": s.Subject("<project>", ep.name)}))
		if err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("query endpoint %s: %w", ep.name, err)
		}
	}
	err = svc.AddEndpoint(EndpointProjects, natsmicro.HandlerFunc(func(r natsmicro.Request) {
		s.serve(r, endpoint{name: EndpointProjects})
	}), natsmicro.WithEndpointSubject(s.ProjectsSubject()),
		natsmicro.WithEndpointMetadata(map[string]string{"role": "any: lists the projects the user may view"}))
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("query endpoint %s: %w", EndpointProjects, err)
	}
	if err := s.addFleetEndpoints(svc); err != nil {
		_ = svc.Stop()
		return nil, err
	}
	// The subscriptions reach the server asynchronously: make sure it has
	// them before the worker says it is ready. While disconnected they are
	// sent on reconnection, so a failed flush is not an error.
	_ = nc.FlushTimeout(5 * time.Second)
	return s, nil
}

// projectEndpoints are the endpoints of one project's queries.
func (s *Server) projectEndpoints() []endpoint {
	svcs := s.cfg.Service
	return []endpoint{
		{EndpointStatus, events.ActionStatus, svcs.Status},
		{EndpointLogs, events.ActionLogs, svcs.Logs},
		{EndpointConfig, events.ActionConfigGet, svcs.ConfigGet},
		{EndpointHistory, events.ActionHistory, svcs.History},
		{events.EndpointReleases, events.ActionReleases, svcs.Releases},
	}
}

// Subject is the subject of a project's query endpoint.
func (s *Server) Subject(project, endpoint string) string {
	return s.cfg.Subjects.Prefix + ".q." + project + "." + endpoint
}

// ProjectsSubject is the subject of the projects endpoint.
func (s *Server) ProjectsSubject() string { return s.cfg.Subjects.Prefix + ".q.projects" }

// Info returns the service's description, as $SRV.INFO answers it.
func (s *Server) Info() natsmicro.Info { return s.svc.Info() }

// Stop drains the endpoints: queries being answered finish, new ones go
// to other workers of the queue group.
func (s *Server) Stop() error {
	if s == nil || s.svc == nil || s.svc.Stopped() {
		return nil
	}
	return s.svc.Stop()
}

// serve answers one query. It runs on the endpoint's subscription, so an
// endpoint answers one query at a time per worker; more workers in the
// queue group answer more at once. Answering on other goroutines would
// make $SRV.STATS wrong: the micro library counts requests, errors and
// processing time around this call.
func (s *Server) serve(r natsmicro.Request, ep endpoint) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	log := s.cfg.Log.With().Str("query", ep.name).Str("subject", r.Subject()).Logger()
	ctx = log.WithContext(ctx)

	if s.forward(ctx, r, ep, start, &log) {
		return
	}
	data, err := s.answer(ctx, r, ep, &log)
	var body []byte
	if err == nil {
		if body, err = json.Marshal(data); err != nil {
			err = events.AsError(fmt.Errorf("encode answer: %w", err))
		} else if max := s.nc.MaxPayload(); max > 0 && int64(len(body)) > max {
			err = events.Errorf(events.CodeBadRequest, "the answer is %d bytes, more than a NATS message may carry (%d)", len(body), max).
				WithHint("ask for less (tail, limit), or use the command subject, whose events carry any size")
		}
	}
	var code events.Code
	if err != nil {
		e := events.AsError(err)
		code = e.Code
		if code == events.CodeInternal {
			log.Error().Err(err).Msg("query failed")
		} else {
			log.Debug().Str("code", string(code)).Str("error", e.Message).Msg("query refused")
		}
		errBody, _ := json.Marshal(e)
		if rerr := r.Error(string(e.Code), headerValue(e.Message), errBody); rerr != nil {
			log.Warn().Err(rerr).Msg("cannot send the query's error")
		}
	} else if rerr := r.Respond(body); rerr != nil {
		log.Warn().Err(rerr).Msg("cannot send the query's answer")
	}
	if o := s.cfg.Observer; o != nil {
		o.QueryDone(ep.name, code, time.Since(start))
		if ep.action != "" {
			handlers.ObserveResult(o, ep.action, data, err)
		}
	}
}

// answer admits and runs one query; its error is an *events.Error.
func (s *Server) answer(ctx context.Context, r natsmicro.Request, ep endpoint, log *zerolog.Logger) (any, error) {
	project := ""
	if ep.action != "" {
		project = s.projectOf(r.Subject())
	}
	// Sequence 0: a query is never redelivered, so any second use of a
	// signature is a replay.
	t, err := s.cfg.Admission.Admit(ctx, &handlers.Inbound{Subject: s.clientSubject(r.Subject()), Project: project, Action: ep.action,
		Body: r.Data(), Header: r.Headers(), Query: true}, time.Now())
	if t.Trusted {
		*log = log.With().Str("user", t.User).Logger()
		ctx = log.WithContext(ctx)
	}
	if err != nil {
		return nil, err
	}
	if ep.name == EndpointFleet {
		return s.fleet(ctx, t.Cmd)
	}
	if ep.action == "" {
		return s.projects(ctx, t.Cmd)
	}
	req := t.Req
	req.Delivery = 1
	if ep.action == events.ActionLogs {
		var a handlers.LogsArgs
		if err := events.DecodeArgs(req.Args, &a); err != nil {
			return nil, err
		}
		if a.FollowS != 0 {
			return nil, events.Errorf(events.CodeBadRequest, "follow is only available on the command subject").
				WithHint(fmt.Sprintf("publish the logs command on %s.cmd.%s.logs and subscribe to its events, or leave follow_s out", s.cfg.Subjects.Prefix, project))
		}
	}
	return handlers.SafeHandle(ctx, ep.handler, req, dropReporter{})
}

// projects lists the projects the user may view: all of them for a
// global admin, else those where the user has a role or that allow
// anonymous viewers.
func (s *Server) projects(ctx context.Context, q *events.Command) (any, error) {
	if err := events.DecodeArgs(q.Args, &struct{}{}); err != nil {
		return nil, err
	}
	names, err := s.cfg.Service.Store.ListProjects(ctx)
	if err != nil {
		return nil, err
	}
	res := &ProjectsResult{Projects: []string{}}
	for _, p := range names {
		err := s.cfg.Service.Authorize(ctx, &handlers.Request{Project: p, Action: events.ActionStatus, User: q.User})
		switch {
		case err == nil:
			res.Projects = append(res.Projects, p)
		case events.ErrorCode(err) == events.CodeForbidden:
		default:
			return nil, err
		}
	}
	res.Count = len(res.Projects)
	return res, nil
}

// clientSubject is the subject the client sent a query on, which its
// signature covers: <prefix>.q.<project>.<endpoint> for a query forwarded
// on <prefix>.hq.<host>.<project>.<endpoint> (only workers may publish
// there, and the subject is derived, not taken from the message).
func (s *Server) clientSubject(subject string) string {
	rest, ok := strings.CutPrefix(subject, s.cfg.Subjects.Prefix+".hq.")
	if !ok {
		return subject
	}
	_, rest, _ = strings.Cut(rest, ".")
	return s.cfg.Subjects.Prefix + ".q." + rest
}

// projectOf returns the project token of <prefix>.q.<project>.<endpoint>
// or <prefix>.hq.<host>.<project>.<endpoint>.
func (s *Server) projectOf(subject string) string {
	if rest, ok := strings.CutPrefix(subject, s.cfg.Subjects.Prefix+".hq."); ok {
		_, rest, _ = strings.Cut(rest, ".")
		project, _, _ := strings.Cut(rest, ".")
		return project
	}
	rest, _ := strings.CutPrefix(subject, s.cfg.Subjects.Prefix+".q.")
	project, _, _ := strings.Cut(rest, ".")
	return project
}

// dropReporter is the Reporter of a query: a query has no events, so
// progress is dropped, and log lines that do not fit in the answer are an
// error rather than lost.
type dropReporter struct{}

func (dropReporter) Progress(string, string, int, int) {}

func (dropReporter) Log([]events.LogLine) error {
	return events.Errorf(events.CodeBadRequest, "the log lines are too many for a query's answer").
		WithHint("ask for fewer lines (tail, since, grep), or use the command subject, whose log events carry any amount")
}

func (dropReporter) Confirm(string, time.Time, any) error {
	return events.Errorf(events.CodeBadRequest, "a query cannot ask for confirmation").
		WithHint("use the command subject")
}

// headerValue makes s fit a NATS header value: one line, not empty, and
// bounded (the whole message is in the body as well).
func headerValue(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "error"
	}
	const maxLen = 1024
	if len(s) > maxLen {
		n := maxLen
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return s
}
