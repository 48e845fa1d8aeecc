package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/berth-ops/berth/events"
)

// style is how data is printed: colours, the time zone of times.
type style struct {
	quiet           bool
	color, errColor bool
	loc             *time.Location
}

// pathsShown is how many paths of each kind a plan lists.
const pathsShown = 5

// trimJSON is raw without surrounding space, or nil for null.
func trimJSON(raw json.RawMessage) []byte {
	p := bytes.TrimSpace(raw)
	if string(p) == "null" {
		return nil
	}
	return p
}

// isObject reports whether data is a JSON object.
func isObject(data []byte) bool {
	d := bytes.TrimSpace(data)
	return len(d) > 0 && d[0] == '{' && json.Valid(d)
}

// hasAnyKey reports whether data, a JSON object, has one of keys: data
// of another shape is printed as JSON rather than as empty text.
func hasAnyKey(data []byte, keys ...string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return false
	}
	for _, k := range keys {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// renderPlan prints the plan of action as text; a plan it does not know
// is printed as indented JSON.
func renderPlan(w io.Writer, action string, plan []byte, st style) {
	var b strings.Builder
	var err error
	if !isObject(plan) {
		err = fmt.Errorf("not an object")
	} else {
		switch action {
		case events.ActionDeploy:
			if !hasAnyKey(plan, "files", "strategy", "steps", "needs_build") {
				err = fmt.Errorf("not a deploy plan")
				break
			}
			err = deployPlanText(&b, plan, st)
		case events.ActionRestart:
			if !hasAnyKey(plan, "containers", "downtime_estimate_s") {
				err = fmt.Errorf("not a restart plan")
				break
			}
			err = restartPlanText(&b, plan, st)
		case events.ActionRollback:
			if !hasAnyKey(plan, "undo", "target", "files_restored") {
				err = fmt.Errorf("not a rollback plan")
				break
			}
			err = rollbackPlanText(&b, plan, st)
		case events.ActionStop, events.ActionStart:
			if !hasAnyKey(plan, "services", "containers") {
				err = fmt.Errorf("not a %s plan", action)
				break
			}
			err = servicesPlanText(&b, action, plan, st)
		case events.ActionConfigDelete:
			err = configDeletePlanText(&b, plan, st)
		default:
			err = fmt.Errorf("no text for %s", action)
		}
	}
	if err != nil {
		io.WriteString(w, "plan:\n")
		var buf bytes.Buffer
		if json.Indent(&buf, plan, "  ", "  ") != nil {
			buf.Reset()
			buf.Write(plan)
		}
		io.WriteString(w, "  "+sanitize(buf.String(), multiLine)+"\n")
		return
	}
	io.WriteString(w, b.String())
}

// widening is one setting of a release that gives a service more reach
// over the host (handlers.Widening).
type widening struct {
	Service string `json:"service"`
	Setting string `json:"setting"`
	Value   string `json:"value"`
	New     bool   `json:"new"`
}

// composeDiff is the change of one compose file, a unified diff's lines
// ("+", "-", " ") without headers (handlers.ComposeDiff).
type composeDiff struct {
	File      string   `json:"file"`
	Lines     []string `json:"lines"`
	Truncated bool     `json:"truncated"`
}

// fileSummary is a file plan in brief (filesync.PlanSummary).
type fileSummary struct {
	Added          int        `json:"added"`
	Modified       int        `json:"modified"`
	Deleted        int        `json:"deleted"`
	AddedPaths     []string   `json:"added_paths"`
	ModifiedPaths  []string   `json:"modified_paths"`
	DeletedPaths   []string   `json:"deleted_paths"`
	Kept           []string   `json:"kept"`
	KeptCount      int        `json:"kept_count"`
	Refused        []struct{} `json:"refused"`
	Protected      []string   `json:"protected"`
	ProtectedCount int        `json:"protected_count"`
	Bytes          int64      `json:"bytes"`
}

// deployPlan is the plan of a deploy (handlers.DeployPlan, with the
// images of a registry deploy).
type deployPlan struct {
	PrivilegeWidening []widening        `json:"privilege_widening"`
	ComposeDiff       []composeDiff     `json:"compose_diff"`
	Strategy          string            `json:"strategy"`
	Workspace         string            `json:"workspace"`
	Production        string            `json:"production"`
	Files             fileSummary       `json:"files"`
	NeedsBuild        bool              `json:"needs_build"`
	Steps             []string          `json:"steps"`
	Images            map[string]string `json:"images"`
	Rollout           *rolloutPlan      `json:"rollout"`
}

// rolloutPlan is handlers.RolloutPlan.
type rolloutPlan struct {
	StartFirst []string `json:"start_first"`
	Recreate   []string `json:"recreate"`
	Refused    []struct {
		Service string `json:"service"`
		Reason  string `json:"reason"`
	} `json:"refused"`
	OneShots []string `json:"one_shots"`
}

// writeRollout prints how the services are replaced.
func writeRollout(b *strings.Builder, r *rolloutPlan, color bool) {
	if r == nil {
		return
	}
	list := func(names []string) string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = clean(n)
		}
		return strings.Join(out, ", ")
	}
	if len(r.StartFirst) > 0 {
		fmt.Fprintf(b, "start-first: %s (new containers start beside the old; no downtime)\n", list(r.StartFirst))
	}
	if len(r.Recreate) > 0 {
		fmt.Fprintf(b, "recreate:  %s (stopped, then started, when changed)\n", list(r.Recreate))
	}
	for _, x := range r.Refused {
		b.WriteString(paint(color, ansiYellow, fmt.Sprintf("! %s is recreated, not start-first: %s", clean(x.Service), clean(x.Reason))) + "\n")
	}
	if len(r.OneShots) > 0 {
		fmt.Fprintf(b, "one-shots: %s run once, before the switch; a rollback does not undo them\n", list(r.OneShots))
	}
}

func deployPlanText(b *strings.Builder, data []byte, st style) error {
	var p deployPlan
	if err := decodeTolerant(data, &p); err != nil {
		return err
	}
	c := st.color
	// What widens a service's reach over the host comes first.
	for _, wd := range p.PrivilegeWidening {
		line := fmt.Sprintf("! widens reach: service %s: %s %s", wd.Service, wd.Setting, wd.Value)
		if wd.New {
			line += " (a new service)"
		}
		b.WriteString(paint(c, ansiRed+";"+ansiBold, clean(line)) + "\n")
	}
	switch p.Strategy {
	case "symlink":
		fmt.Fprintf(b, "strategy symlink: production %s links to the workspace; nothing to copy\n", clean(p.Production))
	case "registry":
		fmt.Fprintf(b, "strategy registry: pull the images of %s\n", clean(p.Production))
		for _, svc := range sortedKeys(p.Images) {
			fmt.Fprintf(b, "  %s: %s\n", clean(svc), clean(p.Images[svc]))
		}
	default:
		if p.Workspace != "" || p.Production != "" {
			fmt.Fprintf(b, "from %s\n  to %s\n", clean(p.Workspace), clean(p.Production))
		}
	}
	for _, d := range p.ComposeDiff {
		writeComposeDiff(b, d, c)
	}
	if p.Strategy == "" || p.Strategy == "copy" {
		writeFiles(b, p.Files, c)
	}
	if p.NeedsBuild {
		b.WriteString("build:     yes, the images are built\n")
	} else {
		b.WriteString("build:     no\n")
	}
	writeRollout(b, p.Rollout, c)
	writeSteps(b, p.Steps)
	return nil
}

// clean is a string from the wire, safe on one line.
func clean(s string) string { return sanitize(s, oneLine) }

// writeFiles prints a file plan: the counts, the first paths of each
// kind, what is kept and what is protected.
func writeFiles(b *strings.Builder, f fileSummary, color bool) {
	parts := []string{
		fmt.Sprintf("%d added", f.Added), fmt.Sprintf("%d modified", f.Modified), fmt.Sprintf("%d deleted", f.Deleted),
	}
	kept := max(f.KeptCount, len(f.Kept))
	protected := max(f.ProtectedCount, len(f.Protected))
	if kept > 0 {
		parts = append(parts, fmt.Sprintf("%d kept", kept))
	}
	if protected > 0 {
		parts = append(parts, fmt.Sprintf("%d protected", protected))
	}
	line := "files:     " + strings.Join(parts, ", ")
	if f.Bytes > 0 {
		line += " (" + formatBytes(f.Bytes) + " to copy)"
	}
	b.WriteString(line + "\n")
	list := func(mark, code, kind string, paths []string, total int) {
		for i, p := range paths {
			if i == pathsShown {
				break
			}
			b.WriteString("  " + paint(color, code, mark+" "+clean(p)) + "\n")
		}
		if more := total - min(len(paths), pathsShown); more > 0 {
			fmt.Fprintf(b, "    and %d more %s\n", more, kind)
		}
	}
	list("+", ansiGreen, "added", f.AddedPaths, f.Added)
	list("~", ansiYellow, "modified", f.ModifiedPaths, f.Modified)
	list("-", ansiRed, "deleted", f.DeletedPaths, f.Deleted)
	names := func(paths []string, total int) string {
		shown := paths[:min(len(paths), pathsShown)]
		s := make([]string, len(shown))
		for i, p := range shown {
			s[i] = clean(p)
		}
		out := strings.Join(s, ", ")
		if more := total - len(shown); more > 0 {
			out += fmt.Sprintf(" and %d more", more)
		}
		return out
	}
	if kept > 0 {
		fmt.Fprintf(b, "  kept (production's own, left alone): %s\n", names(f.Kept, kept))
	}
	if protected > 0 {
		fmt.Fprintf(b, "  protected (production's secrets, never deployed over): %s\n", names(f.Protected, protected))
	}
	if len(f.Refused) > 0 {
		fmt.Fprintf(b, "  refused: %d paths cannot be deployed\n", len(f.Refused))
	}
}

// formatBytes prints n briefly: 512 B, 4.2 kB, 6.1 MB.
func formatBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// writeSteps prints the steps of a plan.
func writeSteps(b *strings.Builder, steps []string) {
	if len(steps) == 0 {
		return
	}
	s := make([]string, len(steps))
	for i, st := range steps {
		s[i] = clean(st)
	}
	b.WriteString("steps:     " + strings.Join(s, " → ") + "\n")
}

// riskyLine matches a compose line that grants reach over the host.
var riskyLine = regexp.MustCompile(`\bprivileged\s*:|\b(network_mode|pid|ipc)\s*:\s*["']?host\b|\bdevices\s*:|\bcap_add\s*:|docker\.sock`)

// listKey matches a compose line that opens a list or map ("cap_add:").
var listKey = regexp.MustCompile(`^(\s*)([A-Za-z0-9_.-]+)\s*:\s*$`)

// writeComposeDiff prints the change of a compose file, marking with
// "!" the lines that add reach over the host: privileged, host network,
// pid or ipc, devices, added capabilities, the Docker socket (and the
// items of a devices or cap_add list).
func writeComposeDiff(b *strings.Builder, d composeDiff, color bool) {
	fmt.Fprintf(b, "%s:\n", clean(d.File))
	riskyList, listIndent := false, -1
	for _, raw := range d.Lines {
		line := clean(raw)
		op, text := byte(' '), line
		if line != "" {
			op, text = line[0], line[1:]
		}
		indent := len(text) - len(strings.TrimLeft(text, " "))
		if m := listKey.FindStringSubmatch(text); m != nil {
			riskyList, listIndent = m[2] == "devices" || m[2] == "cap_add", indent
		} else if listIndent >= 0 && indent <= listIndent && strings.TrimSpace(text) != "" && strings.TrimSpace(text) != "…" {
			riskyList, listIndent = false, -1
		}
		risky := riskyLine.MatchString(text) ||
			(riskyList && indent > listIndent && strings.HasPrefix(strings.TrimSpace(text), "-"))
		mark := "  "
		if risky && op != '-' {
			mark = paint(color, ansiRed+";"+ansiBold, "!") + " "
		}
		code := ""
		switch op {
		case '+':
			code = ansiGreen
		case '-':
			code = ansiRed
		}
		b.WriteString(mark + paint(color, code, line) + "\n")
	}
	if d.Truncated {
		b.WriteString("  (cut: the diff is longer)\n")
	}
}

// restartPlan is the plan of a restart (handlers.RestartPlan).
type restartPlan struct {
	Services          []string `json:"services"`
	Containers        []string `json:"containers"`
	DowntimeEstimateS float64  `json:"downtime_estimate_s"`
	EstimateSource    string   `json:"estimate_source"`
	Steps             []string `json:"steps"`
	StartFirst        []string `json:"start_first"`
}

func restartPlanText(b *strings.Builder, data []byte, st style) error {
	var p restartPlan
	if err := decodeTolerant(data, &p); err != nil {
		return err
	}
	fmt.Fprintf(b, "restarts:  %s\n", joinClean(p.Services))
	fmt.Fprintf(b, "containers: %s\n", joinClean(p.Containers))
	d := formatDuration(time.Duration(p.DowntimeEstimateS * float64(time.Second)).Round(100 * time.Millisecond))
	src := clean(p.EstimateSource)
	if strings.HasPrefix(src, "the restart") {
		src = "as " + src
	}
	if src != "" {
		src = " (" + src + ")"
	}
	if len(p.StartFirst) > 0 {
		fmt.Fprintf(b, "start-first: %s (new containers replace the running ones; no downtime)\n", joinClean(p.StartFirst))
		if len(p.StartFirst) < len(p.Services) {
			fmt.Fprintf(b, "downtime:  about %s%s for the others\n", d, src)
		}
	} else {
		fmt.Fprintf(b, "downtime:  about %s%s\n", d, src)
	}
	writeSteps(b, p.Steps)
	return nil
}

// joinClean joins strings from the wire with ", "; "-" for none.
func joinClean(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = clean(v)
	}
	return strings.Join(out, ", ")
}

// releaseSummary is one kept release (handlers.ReleaseSummary).
type releaseSummary struct {
	ID         string            `json:"id"`
	RequestID  string            `json:"request_id"`
	User       string            `json:"user"`
	Confirmer  string            `json:"confirmer"`
	Status     string            `json:"status"`
	CreatedAt  string            `json:"created_at"`
	FinishedAt string            `json:"finished_at"`
	Added      int               `json:"added"`
	Modified   int               `json:"modified"`
	Deleted    int               `json:"deleted"`
	Images     map[string]string `json:"images"`
	Error      string            `json:"error"`
	Live       bool              `json:"live"`
}

// releaseInfo is a release a rollback undoes (handlers.ReleaseInfo).
type releaseInfo struct {
	ID        string `json:"id"`
	User      string `json:"user"`
	CreatedAt string `json:"created_at"`
	Added     int    `json:"added"`
	Modified  int    `json:"modified"`
	Deleted   int    `json:"deleted"`
}

// rollbackPlan is the plan of a rollback (handlers.RollbackPlan).
type rollbackPlan struct {
	Undo          []releaseInfo     `json:"undo"`
	Target        string            `json:"target"`
	TargetRelease *releaseSummary   `json:"target_release"`
	TargetNote    string            `json:"target_note"`
	FilesRestored int               `json:"files_restored"`
	FilesRemoved  int               `json:"files_removed"`
	Images        map[string]string `json:"images"`
	Steps         []string          `json:"steps"`
}

func rollbackPlanText(b *strings.Builder, data []byte, st style) error {
	var p rollbackPlan
	if err := decodeTolerant(data, &p); err != nil {
		return err
	}
	switch t := p.TargetRelease; {
	case t != nil:
		fmt.Fprintf(b, "returns to release %s\n", paint(st.color, ansiBold, clean(t.ID)))
		by := clean(t.User)
		if t.Confirmer != "" && t.Confirmer != t.User {
			by += ", confirmed by " + clean(t.Confirmer)
		}
		fmt.Fprintf(b, "  deployed %s by %s; files %s\n", timeText(t.CreatedAt, st.loc), by, fileCounts(t.Added, t.Modified, t.Deleted))
	case p.Target != "":
		fmt.Fprintf(b, "returns to release %s\n", paint(st.color, ansiBold, clean(p.Target)))
	default:
		note := clean(p.TargetNote)
		if note == "" {
			note = "the state before the oldest kept release"
		}
		fmt.Fprintf(b, "returns to %s\n", note)
	}
	if len(p.Undo) > 0 {
		fmt.Fprintf(b, "undoes %s:\n", plural(len(p.Undo), "release"))
		rows := make([][]cell, 0, len(p.Undo))
		for _, u := range p.Undo {
			rows = append(rows, []cell{{text: "  " + u.ID}, {text: timeText(u.CreatedAt, st.loc)}, {text: u.User},
				{text: fileCounts(u.Added, u.Modified, u.Deleted)}})
		}
		writeRows(b, rows, st.color)
	}
	fmt.Fprintf(b, "files:     %d restored, %d removed\n", p.FilesRestored, p.FilesRemoved)
	if len(p.Images) > 0 {
		b.WriteString("images:\n")
		for _, svc := range sortedKeys(p.Images) {
			fmt.Fprintf(b, "  %s: %s\n", clean(svc), clean(p.Images[svc]))
		}
	}
	writeSteps(b, p.Steps)
	return nil
}

// fileCounts is "+a ~m -d".
func fileCounts(a, m, d int) string { return fmt.Sprintf("+%d ~%d -%d", a, m, d) }

// plural is "1 release", "2 releases".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// servicesPlan is the plan of stop or start (handlers.StopPlan,
// handlers.StartPlan).
type servicesPlan struct {
	Services   []string `json:"services"`
	Containers []string `json:"containers"`
	NotUp      []string `json:"not_up"`
	Steps      []string `json:"steps"`
}

func servicesPlanText(b *strings.Builder, action string, data []byte, st style) error {
	var p servicesPlan
	if err := decodeTolerant(data, &p); err != nil {
		return err
	}
	verb := "stops"
	if action == events.ActionStart {
		verb = "starts"
	}
	fmt.Fprintf(b, "%-11s%s\n", verb+":", joinClean(p.Services))
	if p.Containers != nil || action == events.ActionStop {
		fmt.Fprintf(b, "containers: %s\n", joinClean(p.Containers))
	}
	if len(p.NotUp) > 0 {
		fmt.Fprintf(b, "not up now: %s\n", joinClean(p.NotUp))
	}
	writeSteps(b, p.Steps)
	return nil
}

func configDeletePlanText(b *strings.Builder, data []byte, st style) error {
	var p struct {
		Delete json.RawMessage `json:"delete"`
		Kept   string          `json:"kept"`
	}
	if err := decodeTolerant(data, &p); err != nil || !isObject(p.Delete) {
		return fmt.Errorf("not a config.delete plan")
	}
	b.WriteString("deletes the configuration:\n")
	if err := writeKeyValues(b, p.Delete, "  "); err != nil {
		return err
	}
	if p.Kept != "" {
		fmt.Fprintf(b, "kept: %s\n", clean(p.Kept))
	}
	return nil
}

// timeText prints an RFC 3339 time from the wire in loc, or as it is
// when it is not one.
func timeText(s string, loc *time.Location) string {
	if s == "" {
		return "-"
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return clean(s)
	}
	return formatTime(t, loc)
}

// formatTime prints t in loc (UTC when nil), to the second, with its
// zone: Z for UTC.
func formatTime(t time.Time, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	s := t.Format("2006-01-02 15:04:05")
	if name, off := t.Zone(); off == 0 && (name == "UTC" || name == "") {
		return s + "Z"
	}
	return s + t.Format(" MST")
}
