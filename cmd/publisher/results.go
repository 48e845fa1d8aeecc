package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-ops/berth/events"
)

// renderResult prints a result event: its data as text (a table, key:
// value lines, a deploy's release and steps; indented JSON for data it
// does not know) on out, or its error and hint on errw. A failed
// mutation's data is printed around its error: the failing service with
// its health output and last log lines first, then the error, the
// rollback, the steps and Compose's last lines.
func renderResult(out, errw io.Writer, ev *events.Event, action string, st style) {
	data := trimJSON(ev.Data)
	if exitCodeFor(ev) != exitOK {
		renderFailure(out, errw, ev, action, data, st)
		return
	}
	if len(data) > 0 {
		var err error
		switch action {
		case events.ActionStatus:
			err = renderStatusIn(out, data, st) // prints nothing when it fails
		case events.ActionLogs:
			err = renderLogsResult(out, errw, data, st.color) // idem
		default:
			var b strings.Builder
			if err = resultText(&b, action, data, st); err == nil {
				io.WriteString(out, b.String())
			}
		}
		if err != nil {
			renderJSON(out, data)
		}
	}
	if !st.quiet {
		msg := paint(st.errColor, ansiGreen, "ok")
		if ev.DurationMS != nil {
			msg += " in " + formatDuration(time.Duration(*ev.DurationMS)*time.Millisecond)
		}
		fmt.Fprintln(errw, msg)
	}
}

// resultText writes the data of an ok result of action as text; it
// fails, for JSON instead, on data it does not know.
func resultText(b *strings.Builder, action string, data []byte, st style) error {
	if !isObject(data) {
		return fmt.Errorf("not an object")
	}
	keys := map[string][]string{
		events.ActionHistory:  {"entries"},
		events.ActionReleases: {"releases"},
		events.ActionDeploy:   {"release", "changed", "message"},
		events.ActionRestart:  {"services", "downtime_s"},
		events.ActionRollback: {"reverted", "target"},
		events.ActionStart:    {"started", "services"},
		events.ActionStop:     {"stopped", "services"},
	}
	if k, ok := keys[action]; ok && !hasAnyKey(data, k...) {
		return fmt.Errorf("not a %s result", action)
	}
	switch action {
	case events.ActionConfigGet, events.ActionConfigSet, events.ActionConfigDelete:
		return writeKeyValues(b, data, "")
	case events.ActionHistory:
		return historyText(b, data, st)
	case events.ActionReleases:
		return releasesText(b, data, st)
	case events.ActionDeploy:
		return deployResultText(b, data, st)
	case events.ActionRestart:
		return restartResultText(b, data, st)
	case events.ActionRollback:
		return rollbackResultText(b, data, st)
	case events.ActionStart:
		return startResultText(b, data, st)
	case events.ActionStop:
		return stopResultText(b, data, st)
	}
	return fmt.Errorf("no text for %s", action)
}

// serviceHealth is how a service came up (handlers.ServiceHealth).
type serviceHealth struct {
	Service      string `json:"service"`
	Container    string `json:"container"`
	State        string `json:"state"`
	Health       string `json:"health"`
	ReadyBy      string `json:"ready_by"`
	ReadyAfterMS int64  `json:"ready_after_ms"`
}

// rolloutResult is a start-first rollout (handlers.RolloutResult).
type rolloutResult struct {
	Service      string `json:"service"`
	Replaced     int    `json:"replaced"`
	ReadyAfterMS int64  `json:"ready_after_ms"`
	TotalMS      int64  `json:"total_ms"`
}

// writeRollouts prints the start-first rollouts of a result.
func writeRollouts(b *strings.Builder, rs []rolloutResult) {
	for _, r := range rs {
		fmt.Fprintf(b, "start-first: %s, %d replaced, new ready after %s, old removed after %s\n", clean(r.Service), r.Replaced,
			formatDuration(time.Duration(r.ReadyAfterMS)*time.Millisecond), formatDuration(time.Duration(r.TotalMS)*time.Millisecond))
	}
}

// failureDetails say why a service failed (handlers.FailureDetails).
type failureDetails struct {
	Service   string   `json:"service"`
	Container string   `json:"container"`
	State     string   `json:"state"`
	Health    string   `json:"health"`
	ExitCode  int      `json:"exit_code"`
	Reason    string   `json:"reason"`
	HealthLog []string `json:"health_log"`
	LastLogs  []string `json:"last_logs"`
}

// mutationData is the data of a deploy (handlers.DeployResult) and of a
// failed restart, start, stop or rollback (handlers.OpFailure).
type mutationData struct {
	Release         string           `json:"release"`
	Changed         bool             `json:"changed"`
	Message         string           `json:"message"`
	Files           *fileSummary     `json:"files"`
	Services        []serviceHealth  `json:"services"`
	Rollouts        []rolloutResult  `json:"rollouts"`
	NotUp           []string         `json:"not_up"`
	StepsMS         map[string]int64 `json:"steps_ms"`
	RolledBack      bool             `json:"rolled_back"`
	RollbackPending bool             `json:"rollback_pending"`
	Failure         *failureDetails  `json:"failure"`
	Output          []string         `json:"output"`
}

func deployResultText(b *strings.Builder, data []byte, st style) error {
	var d mutationData
	if err := decodeTolerant(data, &d); err != nil {
		return err
	}
	if d.Release == "" && !d.Changed {
		// Nothing deployed: the worker says why.
		msg := clean(d.Message)
		if msg == "" {
			msg = "nothing to deploy"
		}
		b.WriteString(msg + "\n")
		if len(d.NotUp) > 0 {
			fmt.Fprintf(b, "not up:    %s\n", joinClean(d.NotUp))
		}
		return nil
	}
	fmt.Fprintf(b, "deployed release %s\n", paint(st.color, ansiBold, clean(d.Release)))
	if f := d.Files; f != nil {
		fmt.Fprintf(b, "files:     %d added, %d modified, %d deleted\n", f.Added, f.Modified, f.Deleted)
	}
	writeStepTimes(b, events.ActionDeploy, d.StepsMS, "", st)
	writeRollouts(b, d.Rollouts)
	writeServices(b, d.Services, st)
	return nil
}

// stepOrder is the order of each mutation's steps.
var stepOrder = map[string][]string{
	events.ActionDeploy: {events.StepPlan, events.StepLock, events.StepBackup, events.StepSync, events.StepPull,
		events.StepBuild, events.StepUp, events.StepVerify, events.StepRollback},
	events.ActionRollback: {events.StepPlan, events.StepLock, events.StepRollback, events.StepUp, events.StepVerify},
	events.ActionRestart:  {events.StepPlan, events.StepLock, events.StepRestart, events.StepVerify},
	events.ActionStart:    {events.StepPlan, events.StepLock, events.StepUp, events.StepVerify},
	events.ActionStop:     {events.StepPlan, events.StepLock, events.StepStop},
}

// orderedSteps lists the steps of steps in action's order, unknown ones
// after, by name.
func orderedSteps(action string, steps map[string]int64) []string {
	var out []string
	for _, s := range stepOrder[action] {
		if _, ok := steps[s]; ok {
			out = append(out, s)
		}
	}
	for _, s := range sortedKeys(steps) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// writeStepTimes prints the time of each step, in order; failed names
// the step that failed, marked ✗.
func writeStepTimes(b *strings.Builder, action string, steps map[string]int64, failed string, st style) {
	if len(steps) == 0 {
		return
	}
	var parts []string
	for _, s := range orderedSteps(action, steps) {
		t := clean(s) + " " + formatDuration(time.Duration(steps[s])*time.Millisecond)
		if s == failed {
			t = paint(st.color, ansiRed, "✗ "+t)
		}
		parts = append(parts, t)
	}
	b.WriteString("steps:     " + strings.Join(parts, ", ") + "\n")
}

// writeServices prints how each service came up.
func writeServices(b *strings.Builder, services []serviceHealth, st style) {
	if len(services) == 0 {
		return
	}
	rows := [][]cell{{{text: "SERVICE"}, {text: "STATE"}, {text: "HEALTH"}, {text: "READY BY"}, {text: "AFTER"}}}
	for _, s := range services {
		rows = append(rows, []cell{
			{text: orDash(s.Service)},
			{text: orDash(s.State), color: stateColor(s.State)},
			{text: orDash(s.Health), color: healthColor(s.Health)},
			{text: orDash(s.ReadyBy)},
			{text: formatDuration(time.Duration(s.ReadyAfterMS) * time.Millisecond)},
		})
	}
	writeTable(b, rows, st.color)
}

// renderFailure prints a failed result. The data of a failed mutation
// is printed as text around the error: what failed first (the failing
// service, its reason, health output and last log lines; Compose's last
// lines, once, though the error's message may end with them too), then
// the error and its hint, then the rest (rolled back or rollback
// pending, the release, the steps' times).
func renderFailure(out, errw io.Writer, ev *events.Event, action string, data []byte, st style) {
	var d mutationData
	structured := isObject(data) && decodeTolerant(data, &d) == nil &&
		(d.Failure != nil || len(d.Output) > 0 || len(d.StepsMS) > 0 || d.Release != "" || d.RolledBack || d.RollbackPending)
	var b strings.Builder
	if structured {
		if d.Failure != nil {
			writeFailure(&b, d.Failure, st)
		}
		if len(d.Output) > 0 {
			fmt.Fprintf(&b, "compose output (its last %s):\n", plural(len(d.Output), "line"))
			for _, l := range d.Output {
				b.WriteString(paint(st.color, ansiDim, "  | ") + clean(l) + "\n")
			}
		}
		io.WriteString(out, b.String())
	}

	label := paint(st.errColor, ansiRed+";"+ansiBold, "error:")
	if e := ev.Error; e != nil {
		msg := e.Message
		if structured {
			msg = withoutOutput(msg, d.Output)
		}
		fmt.Fprintf(errw, "%s %s: %s\n", label, e.Code, msg)
		if e.Hint != "" {
			fmt.Fprintf(errw, "%s %s\n", paint(st.errColor, ansiBold, "hint:"), e.Hint)
		}
		details := e.Data
		if structured {
			// What the data shows already.
			details = map[string]any{}
			for k, v := range e.Data {
				switch k {
				case "service", "rolled_back", "rollback_pending", "exit_code", "pending":
				default:
					details[k] = v
				}
			}
		}
		if len(details) > 0 {
			js, _ := json.Marshal(details)
			fmt.Fprintf(errw, "details: %s\n", sanitize(string(js), oneLine))
		}
	} else {
		fmt.Fprintf(errw, "%s the request failed without saying why\n", label)
	}
	if !structured {
		if len(data) > 0 {
			var jb strings.Builder
			renderJSON(&jb, data)
			io.WriteString(out, jb.String())
		}
		return
	}

	b.Reset()
	switch {
	case d.RolledBack:
		b.WriteString(paint(st.color, ansiYellow, "rolled back: production runs the previous release again") + "\n")
	case d.RollbackPending:
		b.WriteString(paint(st.color, ansiRed+";"+ansiBold, "rollback pending: the worker keeps undoing the deploy, and holds the project until it is done") + "\n")
	}
	if d.Release != "" {
		fmt.Fprintf(&b, "release:   %s (not live)\n", clean(d.Release))
	}
	failed := ""
	if steps := orderedSteps(action, d.StepsMS); len(steps) > 0 {
		failed = steps[len(steps)-1] // the step that failed is the last that ran
	}
	writeStepTimes(&b, action, d.StepsMS, failed, st)
	io.WriteString(out, b.String())
}

// writeFailure prints why a service failed: the service, the reason,
// its state, its health check's output and its last log lines.
func writeFailure(b *strings.Builder, f *failureDetails, st style) {
	head := fmt.Sprintf("✗ service %s failed: %s", clean(f.Service), clean(f.Reason))
	b.WriteString(paint(st.color, ansiRed+";"+ansiBold, head) + "\n")
	state := []string{}
	if f.Container != "" {
		state = append(state, "container "+clean(f.Container))
	}
	if f.State != "" {
		state = append(state, clean(f.State))
	}
	if f.Health != "" {
		state = append(state, clean(f.Health))
	}
	if f.State == "exited" || f.State == "dead" || f.ExitCode != 0 {
		state = append(state, "exit code "+strconv.Itoa(f.ExitCode))
	}
	if len(state) > 0 {
		b.WriteString("  " + strings.Join(state, ", ") + "\n")
	}
	if len(f.HealthLog) > 0 {
		b.WriteString("  health check output:\n")
		for _, l := range f.HealthLog {
			for _, part := range strings.Split(strings.TrimRight(l, "\n"), "\n") {
				b.WriteString(paint(st.color, ansiDim, "    | ") + clean(part) + "\n")
			}
		}
	}
	if len(f.LastLogs) > 0 {
		fmt.Fprintf(b, "  last log lines of %s:\n", clean(f.Service))
		for _, l := range f.LastLogs {
			b.WriteString(paint(st.color, ansiDim, "    | ") + clean(l) + "\n")
		}
	}
}

// withoutOutput is an error message without the tail of Compose's output
// it ends with (docker compose … failed (exit code N): <the last lines>),
// when output, the same lines, is printed apart. A message that does not
// end with them is kept whole.
func withoutOutput(msg string, output []string) string {
	if len(output) == 0 {
		return msg
	}
	joined := strings.Join(output, "\n")
	for i := 0; i < len(msg); {
		j := strings.Index(msg[i:], ": ")
		if j < 0 {
			break
		}
		cut := i + j
		rest := strings.TrimPrefix(strings.TrimSpace(msg[cut+2:]), "…")
		// The tail may be followed by what the worker added after it
		// ("; production was rolled back, …"): match up to the last line.
		if rest != "" && len(rest) >= 8 {
			if strings.HasSuffix(joined, rest) {
				return msg[:cut] + " (its output above)"
			}
			last := output[len(output)-1]
			if k := strings.Index(rest, last); k >= 0 && strings.HasSuffix(joined, rest[:k+len(last)]) {
				return msg[:cut] + " (its output above)" + rest[k+len(last):]
			}
		}
		i = cut + 2
	}
	return msg
}

func restartResultText(b *strings.Builder, data []byte, st style) error {
	var d struct {
		Services  []serviceHealth `json:"services"`
		DowntimeS float64         `json:"downtime_s"`
		Rollouts  []rolloutResult `json:"rollouts"`
	}
	if err := decodeTolerant(data, &d); err != nil {
		return err
	}
	var names []string
	for _, s := range d.Services {
		if !slices.ContainsFunc(d.Rollouts, func(r rolloutResult) bool { return r.Service == s.Service }) {
			names = append(names, s.Service)
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(b, "restarted %s; down for %s\n", joinClean(names),
			formatDuration(time.Duration(d.DowntimeS*float64(time.Second)).Round(10*time.Millisecond)))
	}
	writeRollouts(b, d.Rollouts)
	writeServices(b, d.Services, st)
	return nil
}

func rollbackResultText(b *strings.Builder, data []byte, st style) error {
	var d struct {
		Reverted []string        `json:"reverted"`
		Target   string          `json:"target"`
		Services []serviceHealth `json:"services"`
		Rollouts []rolloutResult `json:"rollouts"`
	}
	if err := decodeTolerant(data, &d); err != nil {
		return err
	}
	fmt.Fprintf(b, "reverted:  %s\n", joinClean(d.Reverted))
	if d.Target != "" {
		fmt.Fprintf(b, "live:      release %s\n", paint(st.color, ansiBold, clean(d.Target)))
	} else {
		b.WriteString("live:      the state before the oldest kept release\n")
	}
	writeRollouts(b, d.Rollouts)
	writeServices(b, d.Services, st)
	return nil
}

func startResultText(b *strings.Builder, data []byte, st style) error {
	var d struct {
		Services []serviceHealth `json:"services"`
		Started  []string        `json:"started"`
	}
	if err := decodeTolerant(data, &d); err != nil {
		return err
	}
	if len(d.Started) > 0 {
		fmt.Fprintf(b, "started:   %s\n", joinClean(d.Started))
	} else {
		b.WriteString("started:   none, every service was up\n")
	}
	writeServices(b, d.Services, st)
	return nil
}

func stopResultText(b *strings.Builder, data []byte, st style) error {
	var d struct {
		Services  []string `json:"services"`
		Stopped   []string `json:"stopped"`
		DurationS float64  `json:"duration_s"`
	}
	if err := decodeTolerant(data, &d); err != nil {
		return err
	}
	fmt.Fprintf(b, "stopped:   %s (in %s)\n", joinClean(d.Stopped),
		formatDuration(time.Duration(d.DurationS*float64(time.Second)).Round(10*time.Millisecond)))
	return nil
}

// historyEntry is one entry of a history result (berth.HistoryEntry).
type historyEntry struct {
	RequestID  string         `json:"request_id"`
	Action     string         `json:"action"`
	User       string         `json:"user"`
	Confirmer  string         `json:"confirmer"`
	OK         bool           `json:"ok"`
	ErrorCode  string         `json:"error_code"`
	StartedAt  string         `json:"started_at"`
	DurationMS int64          `json:"duration_ms"`
	Details    map[string]any `json:"details"`
}

func historyText(b *strings.Builder, data []byte, st style) error {
	var d struct {
		Project string         `json:"project"`
		Entries []historyEntry `json:"entries"`
	}
	if err := decodeTolerant(data, &d); err != nil {
		return err
	}
	if len(d.Entries) == 0 {
		b.WriteString("no history\n")
		return nil
	}
	rows := [][]cell{{{text: "TIME"}, {text: "ACTION"}, {text: "USER"}, {text: "CONFIRMER"}, {text: "OUTCOME"}, {text: "DURATION"}}}
	for _, e := range d.Entries {
		outcome, color := "ok", ansiGreen
		if !e.OK {
			outcome, color = orDash(e.ErrorCode), ansiRed
			if e.ErrorCode == string(events.CodeConfirmationRequired) {
				color = ansiYellow
			}
		}
		if v, _ := e.Details["rolled_back"].(bool); v {
			outcome += ", rolled back"
		}
		confirmer := e.Confirmer
		if confirmer == e.User && confirmer != "" {
			confirmer = "(same)"
		}
		rows = append(rows, []cell{{text: timeText(e.StartedAt, st.loc)}, {text: orDash(e.Action)}, {text: orDash(e.User)},
			{text: orDash(confirmer)}, {text: outcome, color: color},
			{text: formatDuration(time.Duration(e.DurationMS) * time.Millisecond)}})
	}
	writeTable(b, rows, st.color)
	return nil
}

func releasesText(b *strings.Builder, data []byte, st style) error {
	var d struct {
		Project        string           `json:"project"`
		Releases       []releaseSummary `json:"releases"`
		Live           string           `json:"live"`
		RollbackTarget *string          `json:"rollback_target"`
	}
	if err := decodeTolerant(data, &d); err != nil {
		return err
	}
	if len(d.Releases) == 0 {
		b.WriteString("no releases kept\n")
		return nil
	}
	rows := [][]cell{{{text: "RELEASE"}, {text: "TIME"}, {text: "USER"}, {text: "STATUS"}, {text: "FILES"}, {text: ""}}}
	for _, r := range d.Releases {
		live := ""
		if r.Live || (d.Live != "" && r.ID == d.Live) {
			live = "← live"
		}
		color := ""
		switch r.Status {
		case "ok":
			color = ansiGreen
		case "rolled_back", "failed":
			color = ansiRed
		case "reverted":
			color = ansiYellow
		}
		rows = append(rows, []cell{{text: r.ID}, {text: timeText(r.CreatedAt, st.loc)}, {text: orDash(r.User)},
			{text: orDash(r.Status), color: color}, {text: fileCounts(r.Added, r.Modified, r.Deleted)},
			{text: live, color: ansiBold}})
	}
	writeTable(b, rows, st.color)
	if d.RollbackTarget != nil {
		if *d.RollbackTarget != "" {
			fmt.Fprintf(b, "next rollback returns to %s\n", clean(*d.RollbackTarget))
		} else if d.Live != "" {
			b.WriteString("next rollback returns to the state before the oldest kept release\n")
		}
	}
	return nil
}

// writeKeyValues writes a JSON object as "key: value" lines, in its own
// order, each line prefixed with indent: strings bare, lists joined with
// ", ", objects as k=v pairs, nested values as JSON.
func writeKeyValues(b *strings.Builder, data []byte, indent string) error {
	kvs, err := orderedObject(data)
	if err != nil {
		return err
	}
	width := 0
	for _, kv := range kvs {
		width = max(width, len([]rune(clean(kv.key))))
	}
	for _, kv := range kvs {
		k := clean(kv.key)
		fmt.Fprintf(b, "%s%s:%s %s\n", indent, k, strings.Repeat(" ", width-len([]rune(k))), valueText(kv.value))
	}
	return nil
}

// keyValue is one member of a JSON object.
type keyValue struct {
	key   string
	value json.RawMessage
}

// orderedObject decodes a JSON object's members in their order.
func orderedObject(data []byte) ([]keyValue, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	var out []keyValue
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, keyValue{key, v})
	}
	return out, nil
}

// valueText prints one JSON value on one line.
func valueText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "-"
	}
	switch raw[0] {
	case '"':
		var s string
		json.Unmarshal(raw, &s)
		if s == "" {
			return `""`
		}
		return clean(s)
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			break
		}
		if len(items) == 0 {
			return "-"
		}
		parts := make([]string, len(items))
		for i, it := range items {
			parts[i] = valueText(it)
		}
		return strings.Join(parts, ", ")
	case '{':
		kvs, err := orderedObject(raw)
		if err != nil {
			break
		}
		if len(kvs) == 0 {
			return "-"
		}
		parts := make([]string, len(kvs))
		for i, kv := range kvs {
			parts[i] = clean(kv.key) + "=" + valueText(kv.value)
		}
		return strings.Join(parts, ", ")
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return clean(buf.String())
	}
	return clean(string(raw))
}

// writeRows writes rows as columns separated by two spaces, without a
// header.
func writeRows(b *strings.Builder, rows [][]cell, color bool) {
	writeTableRows(b, rows, color, false)
}
