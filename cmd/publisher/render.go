package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/berth-ops/berth/events"
)

// ANSI colour codes.
const (
	ansiBold   = "1"
	ansiDim    = "2"
	ansiRed    = "31"
	ansiGreen  = "32"
	ansiYellow = "33"
)

// paint wraps s in an ANSI colour when on is set.
func paint(on bool, code, s string) string {
	if !on || code == "" || s == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// isTerminal reports whether f, a stream, is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// renderer prints the events of one request. Data (logs, tables, results)
// goes to out; chatter (accepted, progress) and errors go to errw.
type renderer struct {
	out, errw io.Writer
	color     bool // ANSI colours on out
	jsonMode  bool // every event as one JSON line on out, nothing else
	quiet     bool // only the result
	verbose   bool // every line of Compose's output (log events of stream compose)
	id        string
	action    string          // from the command line, when the event lacks it
	project   string          // idem
	args      json.RawMessage // the command's args, repeated in the confirm command line
	now       func() time.Time
	loc       *time.Location // times are shown in it; UTC when nil
	errColor  bool           // ANSI colours on errw
	live      *liveView      // progress on a terminal; nil: plain lines

	// autoConfirm says the publisher confirms a plan itself (--yes, or
	// after asking on a terminal): a plan is shown without the command
	// line that would confirm it.
	autoConfirm bool
	// interactive: the publisher asks on a terminal before it confirms.
	interactive bool

	// Per request (reset): the confirm event not shown yet, the plan the
	// request ended at, its result, and the step of the last progress
	// event.
	pending      *events.Event
	confirmation *confirmation
	result       *events.Event
	step         string
}

// confirmation is the plan a request ended at, waiting to be confirmed.
type confirmation struct {
	token     string // as received: it goes back to the worker
	expiresAt string
	confirmBy string // "the same user", "another user"
	plan      json.RawMessage
	// changed: the result was plan_changed (a confirmation that found a
	// new plan), not confirmation_required.
	changed bool
	// byOther: another user must confirm (require_second_approver).
	byOther bool
}

// reset prepares the renderer for another request, id.
func (r *renderer) reset(id string) {
	r.id = id
	r.pending, r.confirmation, r.result, r.step = nil, nil, nil, ""
}

// event prints one event; raw is its body as received. Every string of
// the event is sanitized (sanitize.go) before it is printed; in JSON mode
// the body stays JSON, with the characters a terminal would act on
// escaped.
func (r *renderer) event(ev *events.Event, raw []byte) {
	r.track(ev)
	if r.jsonMode {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return
		}
		line := append(terminalSafeJSON(buf.Bytes()), '\n')
		r.out.Write(line)
		return
	}
	if ev.Kind == events.KindProgress {
		ev = firstLine(ev)
	}
	ev = sanitizeEvent(ev)
	action, project := ev.Action, ev.Project
	if action == "" {
		action = r.action
	}
	if project == "" {
		project = r.project
	}
	if r.live != nil {
		switch ev.Kind {
		case events.KindProgress:
			if !r.quiet {
				r.live.progress(ev)
			}
			return
		case events.KindLog:
			if isComposeLog(ev) {
				if r.verbose && !r.quiet {
					r.live.composeLines(ev.Lines)
				}
				return
			}
			r.live.suspend()
			defer r.live.resume()
		case events.KindResult:
			r.live.stop(r.liveOK(ev, action))
		default:
			// Nothing else may land in the middle of the status line.
			r.live.suspend()
			defer r.live.resume()
		}
	}
	switch ev.Kind {
	case events.KindAccepted:
		if !r.quiet {
			id := ev.RequestID
			if id == "" {
				id = r.id
			}
			fmt.Fprintf(r.errw, "%s %s\n", paint(r.errColor, ansiDim, "accepted"), id)
		}
	case events.KindProgress:
		if !r.quiet {
			// With --verbose, Compose's lines come whole in log events:
			// the few a second that progress repeats are not printed again.
			repeat := r.verbose && ev.Step == r.step && ev.Done == nil && ev.Total == nil
			if !repeat {
				fmt.Fprintln(r.errw, formatProgress(ev))
			}
		}
		r.step = ev.Step
	case events.KindLog:
		switch {
		case r.quiet:
		case isComposeLog(ev):
			if r.verbose {
				renderComposeLines(r.errw, r.step, ev.Lines, r.errColor)
			}
		default:
			renderLogLines(r.out, ev.Lines, r.color)
		}
	case events.KindConfirm:
		// Shown with the result, which carries the plan, the token and
		// who may confirm; or alone if the result does not come.
	case events.KindResult:
		if c := r.confirmation; c != nil {
			r.renderConfirmation(ev, c, action, project)
			return
		}
		renderResult(r.out, r.errw, ev, action, r.resultStyle())
	default:
		if !r.quiet {
			fmt.Fprintf(r.errw, "event %s: %s\n", ev.Kind, sanitize(string(bytes.TrimSpace(raw)), multiLine))
		}
	}
}

// firstLine is a progress event with only the first line of its
// message: a message of several lines (an error ending with a command's
// output, as "rolling back: …" does) would fill the screen, and its
// lines come in the result.
func firstLine(ev *events.Event) *events.Event {
	i := strings.IndexAny(ev.Message, "\r\n")
	if i < 0 {
		return ev
	}
	c := *ev
	c.Message = strings.TrimRight(ev.Message[:i], " :") + " …"
	return &c
}

// track records what the run needs of ev, whatever is printed: the
// result, and the plan a request ended at.
func (r *renderer) track(ev *events.Event) {
	switch ev.Kind {
	case events.KindConfirm:
		c := *ev
		r.pending = &c
	case events.KindResult:
		r.result = ev
		r.confirmation = confirmationOf(ev, r.pending)
	}
}

// confirmationOf is the plan a result asks to confirm, or nil: the data
// of a confirmation_required or plan_changed result ({plan, token,
// expires_at, confirm_by}), completed from the confirm event before it.
func confirmationOf(ev *events.Event, pending *events.Event) *confirmation {
	if ev.Error == nil || (ev.Error.Code != events.CodeConfirmationRequired && ev.Error.Code != events.CodePlanChanged) {
		return nil
	}
	var d struct {
		Plan      json.RawMessage `json:"plan"`
		Token     string          `json:"token"`
		ExpiresAt string          `json:"expires_at"`
		ConfirmBy string          `json:"confirm_by"`
	}
	_ = json.Unmarshal(ev.Data, &d)
	c := &confirmation{token: d.Token, expiresAt: d.ExpiresAt, confirmBy: d.ConfirmBy, plan: d.Plan,
		changed: ev.Error.Code == events.CodePlanChanged}
	if pending != nil && (c.token == "" || c.token == pending.Token) {
		c.token = cmp.Or(c.token, pending.Token)
		c.expiresAt = cmp.Or(c.expiresAt, pending.ExpiresAt)
		if len(bytes.TrimSpace(c.plan)) == 0 || string(bytes.TrimSpace(c.plan)) == "null" {
			c.plan = pending.Plan
		}
	}
	if c.token == "" {
		return nil
	}
	c.byOther = c.confirmBy == "another user"
	return c
}

// pendingConfirmation shows the plan of a confirm event whose result
// did not come, as the request's end; false when there was none.
func (r *renderer) pendingConfirmation() bool {
	if r.pending == nil {
		return false
	}
	ev := sanitizeEvent(r.pending)
	r.confirmation = &confirmation{token: r.pending.Token, expiresAt: r.pending.ExpiresAt, plan: r.pending.Plan}
	if r.jsonMode {
		return true
	}
	res := &events.Event{Kind: events.KindResult, Action: ev.Action, Project: ev.Project, OK: new(bool),
		Error: &events.Error{Code: events.CodeConfirmationRequired, Message: "confirmation needed (its result did not come)"}}
	r.renderConfirmation(res, r.confirmation, cmp.Or(ev.Action, r.action), cmp.Or(ev.Project, r.project))
	return true
}

// liveOK says how the live view marks the step in progress when ev, a
// result, ends it: done for an ok result and for a plan to confirm;
// for a failed deploy whose rollback ran, the rollback step is done
// when the rollback succeeded.
func (r *renderer) liveOK(ev *events.Event, action string) bool {
	if exitCodeFor(ev) == exitOK || confirmationOf(ev, nil) != nil {
		return true
	}
	return r.live.currentStep() == events.StepRollback && action != events.ActionRollback && rolledBack(ev)
}

// rolledBack reports whether a failed result says its changes were undone.
func rolledBack(ev *events.Event) bool {
	var d struct {
		RolledBack bool `json:"rolled_back"`
	}
	if json.Unmarshal(ev.Data, &d) == nil && d.RolledBack {
		return true
	}
	if ev.Error != nil {
		if v, ok := ev.Error.Data["rolled_back"].(bool); ok {
			return v
		}
	}
	return false
}

// isComposeLog reports whether ev carries lines of Compose's output.
func isComposeLog(ev *events.Event) bool {
	return len(ev.Lines) > 0 && ev.Lines[0].Stream == events.StreamCompose
}

// renderComposeLines prints Compose's output lines under their step.
func renderComposeLines(w io.Writer, step string, lines []events.LogLine, color bool) {
	var b strings.Builder
	prefix := "  | "
	if step != "" {
		prefix = "[" + step + "] | "
	}
	for _, l := range lines {
		l = sanitizeLogLine(l)
		b.WriteString(paint(color, ansiDim, prefix) + l.Line + "\n")
	}
	io.WriteString(w, b.String())
}

// resultStyle is how results are printed.
func (r *renderer) resultStyle() style {
	loc := r.loc
	if loc == nil {
		loc = time.UTC
	}
	return style{quiet: r.quiet, color: r.color, errColor: r.errColor, loc: loc}
}

// stopLive ends the live view, if any, with the current step failed.
func (r *renderer) stopLive() {
	if r.live != nil {
		r.live.stop(false)
	}
}

// warnf prints a warning on errw, outside the live status line. The
// warning is sanitized: its arguments may come from the wire.
func (r *renderer) warnf(format string, a ...any) {
	if r.live != nil {
		r.live.suspend()
		defer r.live.resume()
	}
	io.WriteString(r.errw, sanitize(fmt.Sprintf(format, a...), multiLine))
}

// formatProgress formats a progress event as "[step] message (done/total)".
func formatProgress(ev *events.Event) string {
	var b strings.Builder
	if ev.Step != "" {
		b.WriteString("[" + ev.Step + "]")
	}
	if ev.Message != "" {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(ev.Message)
	}
	switch {
	case ev.Done != nil && ev.Total != nil:
		fmt.Fprintf(&b, " (%d/%d)", *ev.Done, *ev.Total)
	case ev.Done != nil:
		fmt.Fprintf(&b, " (%d)", *ev.Done)
	}
	return strings.TrimSpace(b.String())
}

// renderLogLines prints container log lines, one per line, with their
// timestamps when present. Lines from stderr are red on a terminal and
// prefixed "stderr | " otherwise. Each line is sanitized as one line: a
// carriage return or an escape sequence in it cannot rewrite what is on
// the screen.
func renderLogLines(w io.Writer, lines []events.LogLine, color bool) {
	var b strings.Builder
	for _, l := range lines {
		l = sanitizeLogLine(l)
		text := l.Line
		if l.TS != "" {
			b.WriteString(paint(color, ansiDim, l.TS))
			b.WriteByte(' ')
		}
		if l.Stream == "stderr" {
			if color {
				text = paint(true, ansiRed, text)
			} else {
				b.WriteString("stderr | ")
			}
		}
		b.WriteString(text)
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}

// confirmCommand is the command line that confirms a request with token.
// Every part is quoted for the shell when it needs it: the action, the
// project and the token come from the event, and the line is meant to be
// pasted.
func confirmCommand(action, project, token string, args json.RawMessage) string {
	s := progName + " " + shellQuote(action) + " " + shellQuote(project)
	if a := string(bytes.TrimSpace(args)); a != "" && a != "{}" && a != "null" {
		s += " --args " + shellQuote(a)
	}
	return s + " --confirm " + shellQuote(token)
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r == ':' || r == '/' || r == '=' ||
			r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// renderJSON prints data as indented JSON, or as it is when it is not
// JSON, sanitized: JSON may hold bidi or C1 characters as they are, and
// text that is not JSON anything.
func renderJSON(w io.Writer, data []byte) {
	var buf bytes.Buffer
	if json.Indent(&buf, data, "", "  ") != nil {
		buf.Reset()
		buf.Write(data)
	}
	io.WriteString(w, sanitize(buf.String(), multiLine)+"\n")
}

// statusReport is the data of a status result. Every field is optional.
type statusReport struct {
	Project  string          `json:"project"`
	Services []statusService `json:"services"`
	Summary  map[string]any  `json:"summary"`
	Cached   bool            `json:"cached"`
	CachedAt string          `json:"cached_at"`
	Release  *struct {
		ID         string `json:"id"`
		User       string `json:"user"`
		DeployedAt string `json:"deployed_at"`
	} `json:"release"`
	Behind *struct {
		Files    int `json:"files"`
		Added    int `json:"added"`
		Modified int `json:"modified"`
		Deleted  int `json:"deleted"`
	} `json:"behind"`
}

// statusService is one container of a status report.
type statusService struct {
	Service      string
	Container    string
	State        string
	Health       string
	UptimeS      *float64
	RestartCount *int64
	ExitCode     *int64
	Image        string
	Ports        []json.RawMessage
	// CPUPercent, MemBytes and MemLimit are the resource use the worker
	// last sampled; nil when it has none yet.
	CPUPercent *float64
	MemBytes   *float64
	MemLimit   *float64
}

// UnmarshalJSON decodes a service field by field, so a field that is
// missing or of an unexpected type is left empty instead of failing.
func (s *statusService) UnmarshalJSON(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	str := func(k string) string {
		var v string
		json.Unmarshal(m[k], &v)
		return v
	}
	num := func(k string) *float64 {
		var v *float64
		if json.Unmarshal(m[k], &v) != nil {
			return nil
		}
		return v
	}
	integer := func(k string) *int64 {
		if f := num(k); f != nil {
			n := int64(*f)
			return &n
		}
		return nil
	}
	*s = statusService{
		Service:      str("service"),
		Container:    str("container"),
		State:        str("state"),
		Health:       str("health"),
		UptimeS:      num("uptime_s"),
		RestartCount: integer("restart_count"),
		ExitCode:     integer("exit_code"),
		Image:        str("image"),
		CPUPercent:   num("cpu_percent"),
		MemBytes:     num("mem_bytes"),
		MemLimit:     num("mem_limit_bytes"),
	}
	json.Unmarshal(m["ports"], &s.Ports)
	return nil
}

// decodeTolerant decodes data into v, ignoring fields of an unexpected type.
func decodeTolerant(data []byte, v any) error {
	err := json.Unmarshal(data, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return nil
	}
	return err
}

// renderStatus prints the data of a status result as a table. It fails,
// printing nothing, when data is not a status report.
func renderStatus(w io.Writer, data []byte, color bool) error {
	return renderStatusIn(w, data, style{color: color, loc: time.UTC})
}

// renderStatusIn is renderStatus with times in st.loc.
func renderStatusIn(w io.Writer, data []byte, st style) error {
	color := st.color
	var rep statusReport
	if err := decodeTolerant(data, &rep); err != nil {
		return err
	}
	var b strings.Builder
	if rep.Project != "" {
		b.WriteString("project " + sanitize(rep.Project, oneLine))
		switch {
		case rep.Cached && rep.CachedAt != "":
			b.WriteString(" (cached at " + sanitize(rep.CachedAt, oneLine) + ")")
		case rep.Cached:
			b.WriteString(" (cached)")
		}
		b.WriteByte('\n')
	}
	if r := rep.Release; r != nil && r.ID != "" {
		line := "release " + clean(r.ID)
		if r.User != "" {
			line += " by " + clean(r.User)
		}
		if r.DeployedAt != "" {
			line += ", deployed " + timeText(r.DeployedAt, st.loc)
		}
		b.WriteString(line + "\n")
	}
	if bh := rep.Behind; bh != nil && bh.Files > 0 {
		fmt.Fprintf(&b, "behind the workspace by %s (%s): deploy brings them\n", plural(bh.Files, "file"), fileCounts(bh.Added, bh.Modified, bh.Deleted))
	}
	if len(rep.Services) == 0 {
		b.WriteString("no containers\n")
	} else {
		rows := [][]cell{{{text: "SERVICE"}, {text: "STATE"}, {text: "HEALTH"}, {text: "UPTIME"},
			{text: "RESTARTS"}, {text: "IMAGE"}, {text: "PORTS"}}}
		// Resource use is shown when the worker sampled any.
		usage := slices.ContainsFunc(rep.Services, func(s statusService) bool { return s.CPUPercent != nil || s.MemBytes != nil })
		if usage {
			rows[0] = append(rows[0], cell{text: "CPU"}, cell{text: "MEM"})
		}
		for _, s := range rep.Services {
			row := statusRow(s)
			if usage {
				row = append(row, usageCells(s)...)
			}
			rows = append(rows, row)
		}
		writeTable(&b, rows, color)
	}
	if len(rep.Summary) > 0 {
		b.WriteString("summary:")
		for _, k := range sortedKeys(rep.Summary) {
			b.WriteString(" " + sanitize(k, oneLine) + "=" + sanitize(scalarText(rep.Summary[k]), oneLine))
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// statusRow is the table row of one service.
func statusRow(s statusService) []cell {
	name := orDash(s.Service)
	if s.Service == "" && s.Container != "" {
		name = s.Container
	}
	state := orDash(s.State)
	if s.ExitCode != nil && (s.State == "exited" || s.State == "dead") {
		state = fmt.Sprintf("%s (%d)", s.State, *s.ExitCode)
	}
	uptime := "-"
	if s.UptimeS != nil && s.State == "running" {
		uptime = formatUptime(*s.UptimeS)
	}
	restarts := "-"
	if s.RestartCount != nil {
		restarts = strconv.FormatInt(*s.RestartCount, 10)
	}
	var ports []string
	for _, p := range s.Ports {
		if t := formatPort(p); t != "" {
			ports = append(ports, t)
		}
	}
	return []cell{
		{text: name},
		{text: state, color: stateColor(s.State)},
		{text: orDash(s.Health), color: healthColor(s.Health)},
		{text: uptime},
		{text: restarts},
		{text: orDash(s.Image)},
		{text: orDash(strings.Join(ports, ", "))},
	}
}

// usageCells are the CPU and MEM cells of a service: "12.5%" (100% is
// one CPU) and "31.2 MB" or "31.2 MB / 512.0 MB" under a memory limit.
func usageCells(s statusService) []cell {
	cpu, mem := "-", "-"
	if s.CPUPercent != nil {
		cpu = strconv.FormatFloat(*s.CPUPercent, 'f', 1, 64) + "%"
	}
	if s.MemBytes != nil {
		mem = formatBytes(int64(*s.MemBytes))
		if s.MemLimit != nil && *s.MemLimit > 0 {
			mem += " / " + formatBytes(int64(*s.MemLimit))
		}
	}
	return []cell{{text: cpu}, {text: mem}}
}

func stateColor(state string) string {
	switch state {
	case "running":
		return ansiGreen
	case "exited", "dead":
		return ansiRed
	case "":
		return ""
	}
	return ansiYellow
}

func healthColor(h string) string {
	switch h {
	case "healthy":
		return ansiGreen
	case "unhealthy":
		return ansiRed
	case "starting":
		return ansiYellow
	}
	return ""
}

// formatPort formats one port of a status report: a string as it is, or an
// object {host_ip, host_port, container_port, proto}.
func formatPort(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var p struct {
		HostIP        string `json:"host_ip"`
		HostPort      int    `json:"host_port"`
		ContainerPort int    `json:"container_port"`
		Proto         string `json:"proto"`
	}
	if json.Unmarshal(raw, &p) != nil || p.ContainerPort == 0 {
		return string(raw)
	}
	t := strconv.Itoa(p.ContainerPort)
	if p.Proto != "" {
		t += "/" + p.Proto
	}
	if p.HostPort != 0 {
		host := strconv.Itoa(p.HostPort)
		if p.HostIP != "" {
			host = p.HostIP + ":" + host
		}
		t = host + "->" + t
	}
	return t
}

// formatUptime formats seconds briefly: 45s, 12m, 3h12m, 2d3h.
func formatUptime(sec float64) string {
	s := int64(sec)
	switch {
	case s < 0:
		return "-"
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm", s/60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// scalarText prints a decoded JSON value: strings bare, the rest as JSON.
func scalarText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// cell is one table cell with an optional colour.
type cell struct{ text, color string }

// writeTable writes rows (the first is the header) as columns separated by
// two spaces. Widths are computed on the text without colours. Every
// cell is sanitized: its text comes from the wire.
func writeTable(b *strings.Builder, rows [][]cell, color bool) {
	writeTableRows(b, rows, color, true)
}

// writeTableRows is writeTable, whose first row is a header when header
// is set.
func writeTableRows(b *strings.Builder, rows [][]cell, color, header bool) {
	var widths []int
	for _, row := range rows {
		for i := range row {
			row[i].text = sanitize(row[i].text, oneLine)
			c := row[i]
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	for r, row := range rows {
		var line strings.Builder
		for i, c := range row {
			code := c.color
			if r == 0 && header {
				code = ansiBold
			}
			line.WriteString(paint(color, code, c.text))
			if i < len(row)-1 {
				line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text)+2))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
}

// logsResult is the data of a logs result.
type logsResult struct {
	Service   string           `json:"service"`
	Container string           `json:"container"`
	Lines     []events.LogLine `json:"lines"`
	Count     *int             `json:"count"`
	Truncated bool             `json:"truncated"`
	Note      string           `json:"note"`
}

// renderLogsResult prints the lines of a logs result on out, and a note on
// errw when they were truncated.
func renderLogsResult(out, errw io.Writer, data []byte, color bool) error {
	var res logsResult
	if err := decodeTolerant(data, &res); err != nil {
		return err
	}
	renderLogLines(out, res.Lines, color)
	if res.Truncated {
		// The worker stopped reading (its grep limits): it says why, and
		// where to go on from.
		fmt.Fprintf(errw, "(incomplete: %s)\n", sanitize(res.Note, oneLine))
	}
	return nil
}
