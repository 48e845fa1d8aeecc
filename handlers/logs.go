package handlers

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// LogsArgs are the arguments of logs.
type LogsArgs struct {
	// Service defaults to the project's primary service.
	Service string `json:"service,omitempty"`
	// Tail is how many lines from the end (default 50, at most 10 000).
	// With Grep, it counts matching lines.
	Tail *int `json:"tail,omitempty"`
	// Since and Until bound the lines by time: RFC 3339, a Unix time in
	// seconds, or a duration back from now ("10m", "2h").
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
	// Timestamps adds the engine's timestamp to each line.
	Timestamps bool `json:"timestamps,omitempty"`
	// Grep keeps only lines matching this regular expression (RE2 syntax).
	Grep string `json:"grep,omitempty"`
	// FollowS streams new lines as log events for this many seconds
	// (at most 300) before the result.
	FollowS int `json:"follow_s,omitempty"`
}

// LogsResult is the result data of logs.
type LogsResult struct {
	Service   string           `json:"service"`
	Container string           `json:"container"`
	Lines     []events.LogLine `json:"lines"`
	Count     int              `json:"count"`
	// InEvents is true when the lines were sent as log events instead of
	// in the result: when following, or when they exceed the result's
	// size budget.
	InEvents bool `json:"in_events,omitempty"`
	// FollowedS is how long new lines were followed.
	FollowedS float64 `json:"followed_s,omitempty"`
	// ConfigReadAt is set when the store was unavailable: the project's
	// configuration is the one this worker last read from it, at that time.
	ConfigReadAt *time.Time `json:"config_read_at,omitempty"`
}

// maxResultLogBytes is the most log text a result carries inline; more
// goes out as log events, keeping every message under NATS's payload limit.
const maxResultLogBytes = 512 * 1024

// maxGrepLen bounds the regular expression a user may send.
const maxGrepLen = 512

// Logs returns the last lines of a service's container, or follows it.
func (s *Service) Logs(ctx context.Context, req *Request, rep Reporter) (any, error) {
	var a LogsArgs
	if err := events.DecodeArgs(req.Args, &a); err != nil {
		return nil, err
	}
	now := s.Now()
	opts, grep, err := s.logOptions(a, now)
	if err != nil {
		return nil, err
	}
	p, configAt, err := s.projectForRead(ctx, req.Project)
	if err != nil {
		return nil, err
	}
	svc := a.Service
	if svc == "" {
		svc = p.PrimaryService
	}
	if !slices.Contains(p.Services, svc) {
		return nil, events.Errorf(events.CodeNotFound, "service %q is not part of project %s", svc, p.Name).
			With("services", p.Services).WithHint("pick one of: " + strings.Join(p.Services, ", "))
	}
	containers, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return nil, err
	}
	c := pickContainer(containers, svc)
	if c == nil {
		return nil, events.Errorf(events.CodeNotFound, "service %q of project %s has no container", svc, p.Name).
			WithHint("start the project (deploy or restart), then ask again")
	}
	tail := opts.Tail
	if grep != nil {
		// The engine cannot filter, so read up to the cap and keep the
		// last tail matches.
		opts.Tail = s.Config.MaxTail
	}
	res := &LogsResult{Service: svc, Container: c.Name, Lines: []events.LogLine{}, ConfigReadAt: configAt}
	var lines []events.LogLine
	size := 0
	// Without grep the engine's tail is exact, so once the lines are known
	// to go out as log events (when following, or past the result's
	// budget) they go out while the rest is read.
	var out *logStream
	err = s.Engine.Logs(ctx, c.ID, opts, func(l events.LogLine) error {
		if grep != nil && !grep.MatchString(l.Line) {
			return nil
		}
		// Redaction comes when the lines go out: on the stream's goroutine,
		// or after the tail is cut.
		lines = append(lines, l)
		size += lineBytes(l)
		if out == nil && grep == nil && (a.FollowS > 0 || size > maxResultLogBytes) {
			out = newLogStream(rep, func(ls []events.LogLine) { s.redactLines(p, ls) })
		}
		if out != nil && size >= logStreamChunk {
			if err := out.send(lines); err != nil {
				return err
			}
			lines, size = nil, 0
		}
		return nil
	})
	if out != nil {
		if err == nil && len(lines) > 0 {
			err = out.send(lines)
		}
		n, serr := out.close()
		if err == nil {
			err = serr
		}
		res.Count, res.InEvents = n, true
	}
	if err != nil {
		return nil, err
	}
	if out == nil {
		if tail > 0 && len(lines) > tail {
			lines = lines[len(lines)-tail:]
		}
		s.redactLines(p, lines)
		res.Count = len(lines)
		if a.FollowS == 0 && logBytes(lines) <= maxResultLogBytes {
			res.Lines = lines
			return res, nil
		}
		res.InEvents = true
		if err := rep.Log(lines); err != nil {
			return nil, err
		}
	}
	if a.FollowS == 0 {
		return res, nil
	}
	n, followed, err := s.follow(ctx, p, c.ID, opts, grep, time.Duration(a.FollowS)*time.Second, rep)
	res.Count += n
	res.FollowedS = followed.Seconds()
	return res, err
}

// follow streams new lines for d, batching them into log events.
func (s *Service) follow(ctx context.Context, p *berth.Project, id string, opts berth.LogOptions, grep *regexp.Regexp, d time.Duration, rep Reporter) (int, time.Duration, error) {
	start := s.Now()
	fctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	opts.Follow, opts.Tail, opts.Since = true, 0, start
	b := newLogBatcher(rep, 200*time.Millisecond)
	defer b.stop()
	err := s.Engine.Logs(fctx, id, opts, func(l events.LogLine) error {
		if grep == nil || grep.MatchString(l.Line) {
			l.Line = s.redact(p, l.Line)
			return b.add(l)
		}
		return nil
	})
	n, ferr := b.flush()
	if err == nil || errors.Is(err, context.DeadlineExceeded) || (fctx.Err() != nil && ctx.Err() == nil) {
		err = ferr
	}
	return n, s.Now().Sub(start), err
}

func (s *Service) logOptions(a LogsArgs, now time.Time) (berth.LogOptions, *regexp.Regexp, error) {
	var o berth.LogOptions
	o.Tail = 50
	if a.Tail != nil {
		o.Tail = *a.Tail
	}
	if o.Tail < 1 || o.Tail > s.Config.MaxTail {
		return o, nil, events.Errorf(events.CodeBadRequest, "tail must be between 1 and %d", s.Config.MaxTail).
			WithHint("ask for fewer lines, or narrow them with since, until or grep")
	}
	maxF := int(s.Config.MaxFollow / time.Second)
	if a.FollowS < 0 || a.FollowS > maxF {
		return o, nil, events.Errorf(events.CodeBadRequest, "follow_s must be between 0 and %d", maxF).
			WithHint("follow for a shorter time and ask again")
	}
	var err error
	if o.Since, err = parseLogTime("since", a.Since, now); err != nil {
		return o, nil, err
	}
	if o.Until, err = parseLogTime("until", a.Until, now); err != nil {
		return o, nil, err
	}
	if a.FollowS > 0 && !o.Until.IsZero() {
		return o, nil, events.Errorf(events.CodeBadRequest, "until cannot be combined with follow_s").
			WithHint("drop until to follow new lines, or drop follow_s")
	}
	if !o.Since.IsZero() && !o.Until.IsZero() && o.Until.Before(o.Since) {
		return o, nil, events.Errorf(events.CodeBadRequest, "until is before since").WithHint("swap them")
	}
	o.Timestamps = a.Timestamps
	var re *regexp.Regexp
	if a.Grep != "" {
		if len(a.Grep) > maxGrepLen {
			return o, nil, events.Errorf(events.CodeBadRequest, "grep is longer than %d characters", maxGrepLen).
				WithHint("use a shorter pattern")
		}
		if re, err = regexp.Compile(a.Grep); err != nil {
			return o, nil, events.Errorf(events.CodeBadRequest, "grep is not a valid regular expression: %v", err).
				WithHint(`use RE2 syntax, for example "error|warn"`)
		}
	}
	return o, re, nil
}

// parseLogTime accepts RFC 3339, Unix seconds, or a duration back from now.
func parseLogTime(field, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if sec, err := strconv.ParseInt(v, 10, 64); err == nil && sec >= 0 {
		return time.Unix(sec, 0), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, events.Errorf(events.CodeBadRequest, "%s %q is not a time", field, v).
		WithHint(fmt.Sprintf(`give %s as RFC 3339 ("2026-01-02T15:04:05Z"), Unix seconds, or a duration back from now ("10m")`, field))
}

// pickContainer prefers a running container of svc, then the newest one.
func pickContainer(cs []berth.Container, svc string) *berth.Container {
	var best *berth.Container
	for i := range cs {
		c := &cs[i]
		if c.Service != svc {
			continue
		}
		switch {
		case best == nil:
			best = c
		case c.State == "running" && best.State != "running":
			best = c
		case (c.State == "running") == (best.State == "running") && c.StartedAt.After(best.StartedAt):
			best = c
		}
	}
	return best
}

func logBytes(lines []events.LogLine) int {
	n := 0
	for _, l := range lines {
		n += lineBytes(l)
	}
	return n
}

// lineBytes is what a log line counts for in the result's and the log
// events' budgets: its text, its timestamp and room for the JSON around.
func lineBytes(l events.LogLine) int { return len(l.Line) + len(l.TS) + 32 }
