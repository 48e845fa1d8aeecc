package handlers

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
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
	// Grep keeps only lines matching this regular expression (RE2 syntax),
	// matched against the line as the user sees it: after redaction. It
	// may compile to at most maxGrepInsts instructions, and scans at most
	// maxGrepScanBytes of log text (less for a complex pattern, see
	// grepScanLimit) per request.
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
	// Truncated is true when grep stopped reading before the end of the
	// lines: it had scanned as much log text as one request may. The
	// lines are the matches found until then; Note says more.
	Truncated bool `json:"truncated,omitempty"`
	// Note explains an incomplete answer (Truncated) and what to do.
	Note string `json:"note,omitempty"`
}

// maxResultLogBytes is the most log text a result carries inline; more
// goes out as log events, keeping every message under NATS's payload limit.
const maxResultLogBytes = 512 * 1024

// maxGrepLen bounds the regular expression a user may send.
const maxGrepLen = 512

// maxGrepInsts bounds the size of grep's compiled program. RE2 matching
// is linear in the input, but the factor is the program's size (the
// threads the matcher may have to step for each byte), and a short
// pattern with repetition counts compiles to thousands of instructions
// ("(?:a?){1000}a{1000}": 3002). Ordinary patterns take a few dozen
// ("error|warn": 12, "(?i)(error|warn|fatal|panic)": 26). (The parser
// itself refuses nested repetitions whose counts multiply past 1000, such
// as "(a{1,100}){1,100}".)
const maxGrepInsts = 2000

// maxGrepScanBytes is the most log text (the lines' text after redaction)
// grep scans for one request: the lines read for the tail and those
// followed, together. Past it, reading stops and the result carries the
// matches so far, truncated, with a note.
const maxGrepScanBytes = 64 << 20

// grepWorkBudget bounds bytes scanned × program instructions, what a
// grep's worst case costs: about 5 to 15 ns per unit on a pathological
// pattern (measured on a 1000-instruction "[\s\S]{1000}x" over long
// lines), so the budget caps a request at some 15 s of CPU instead of the
// minutes 64 MiB would take. A pattern of up to 16 instructions scans the
// full maxGrepScanBytes; one of 2000, 512 KiB. See grepScanLimit.
const grepWorkBudget = 1 << 30

// grepScanLimit is the most log text a pattern of insts instructions
// may scan for one request.
func grepScanLimit(insts int) int64 {
	return min(maxGrepScanBytes, grepWorkBudget/int64(max(insts, 1)))
}

// errGrepLimit ends reading lines once grep has scanned its limit.
var errGrepLimit = errors.New("grep scanned as much log text as a request may")

// grepFilter applies grep to what the user is allowed to see: each line is
// redacted first and matched after, so that the matches (and their count)
// tell nothing about the hidden text. It counts the bytes it scans.
type grepFilter struct {
	re      *regexp.Regexp
	insts   int    // the size of its program
	limit   int64  // bytes it may scan
	scanned int64  // bytes scanned
	lines   int    // lines scanned
	lastTS  string // the timestamp of the last line scanned, if any
	hit     bool   // the limit was reached
}

// match redacts l in place and reports whether it matches; once the limit
// would be passed it returns errGrepLimit, without scanning l.
func (g *grepFilter) match(s *Service, p *berth.Project, l *events.LogLine) (bool, error) {
	line := s.redact(p, l.Line)
	if g.scanned+int64(len(line)) > g.limit {
		g.hit = true
		return false, errGrepLimit
	}
	g.scanned += int64(len(line))
	g.lines++
	g.lastTS = l.TS
	l.Line = line
	return g.re.MatchString(line), nil
}

// note says that grep stopped, where, and what to do.
func (g *grepFilter) note() string {
	n := fmt.Sprintf("grep stopped reading after %d lines: it had scanned %s of log text, the most one request may scan",
		g.lines, formatBytes(g.limit))
	if g.limit < maxGrepScanBytes {
		n += fmt.Sprintf(" with a pattern this complex (%d instructions; a simple one may scan %s)", g.insts, formatBytes(maxGrepScanBytes))
	}
	n += ". The lines are the matches until then; later lines were not searched. "
	if g.lastTS != "" {
		n += fmt.Sprintf("Ask again with since=%s for the lines after, or narrow the time range with since and until", g.lastTS)
	} else {
		n += "Narrow the time range with since and until"
	}
	return n + ", or use a simpler pattern."
}

// formatBytes writes n as MiB when it is a whole number of them, else KiB.
func formatBytes(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

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
		if grep != nil {
			// grep sees the line redacted, as the user will.
			ok, err := grep.match(s, p, &l)
			if err != nil || !ok {
				return err
			}
			lines = append(lines, l)
			if tail > 0 && len(lines) >= 2*tail {
				// Only the last tail matches are kept.
				lines = append(lines[:0], lines[len(lines)-tail:]...)
			}
			return nil
		}
		// Redaction comes when the lines go out: on the stream's goroutine,
		// or after the tail is cut.
		lines = append(lines, l)
		size += lineBytes(l)
		if out == nil && (a.FollowS > 0 || size > maxResultLogBytes) {
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
	if errors.Is(err, errGrepLimit) {
		err = nil // the matches so far are the answer
	}
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
	if grep != nil && grep.hit {
		res.Truncated, res.Note = true, grep.note()
	}
	if out == nil {
		if tail > 0 && len(lines) > tail {
			lines = lines[len(lines)-tail:]
		}
		if grep == nil {
			s.redactLines(p, lines)
		}
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
	if a.FollowS == 0 || res.Truncated {
		// A grep that reached its limit follows no further.
		return res, nil
	}
	n, followed, err := s.follow(ctx, p, c.ID, opts, grep, time.Duration(a.FollowS)*time.Second, rep)
	res.Count += n
	res.FollowedS = followed.Seconds()
	if grep != nil && grep.hit {
		res.Truncated, res.Note = true, grep.note()
	}
	return res, err
}

// follow streams new lines for d, batching them into log events. With
// grep, it stops early when grep reaches its limit.
func (s *Service) follow(ctx context.Context, p *berth.Project, id string, opts berth.LogOptions, grep *grepFilter, d time.Duration, rep Reporter) (int, time.Duration, error) {
	start := s.Now()
	fctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	opts.Follow, opts.Tail, opts.Since = true, 0, start
	b := newLogBatcher(rep, 200*time.Millisecond)
	defer b.stop()
	err := s.Engine.Logs(fctx, id, opts, func(l events.LogLine) error {
		if grep == nil {
			l.Line = s.redact(p, l.Line)
			return b.add(l)
		}
		// grep sees the line redacted, as the user will.
		ok, err := grep.match(s, p, &l)
		if err != nil || !ok {
			return err
		}
		return b.add(l)
	})
	n, ferr := b.flush()
	if err == nil || errors.Is(err, errGrepLimit) || errors.Is(err, context.DeadlineExceeded) || (fctx.Err() != nil && ctx.Err() == nil) {
		err = ferr
	}
	return n, s.Now().Sub(start), err
}

func (s *Service) logOptions(a LogsArgs, now time.Time) (berth.LogOptions, *grepFilter, error) {
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
	var g *grepFilter
	if a.Grep != "" {
		if g, err = compileGrep(a.Grep); err != nil {
			return o, nil, err
		}
	}
	return o, g, nil
}

// compileGrep compiles a grep pattern, refusing one that is too long or
// whose program is larger than maxGrepInsts.
func compileGrep(pattern string) (*grepFilter, error) {
	if len(pattern) > maxGrepLen {
		return nil, events.Errorf(events.CodeBadRequest, "grep is longer than %d characters", maxGrepLen).
			WithHint("use a shorter pattern")
	}
	invalid := func(err error) error {
		return events.Errorf(events.CodeBadRequest, "grep is not a valid regular expression: %v", err).
			WithHint(`use RE2 syntax, for example "error|warn"`)
	}
	// The program regexp.Compile builds: parse (Perl flags), simplify,
	// compile.
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, invalid(err)
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, invalid(err)
	}
	if n := len(prog.Inst); n > maxGrepInsts {
		return nil, events.Errorf(events.CodeBadRequest, "grep is too complex: it compiles to %d instructions, more than the %d allowed", n, maxGrepInsts).
			With("instructions", n).
			WithHint("use a simpler pattern: smaller or fewer repetition counts ({n,m}, above all nested ones) and fewer alternatives; " +
				"grep for a plain word and narrow the lines with since and until")
	}
	rx, err := regexp.Compile(pattern)
	if err != nil {
		return nil, invalid(err)
	}
	return &grepFilter{re: rx, insts: len(prog.Inst), limit: grepScanLimit(len(prog.Inst))}, nil
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
