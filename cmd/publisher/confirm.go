package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/berth-ops/berth/events"
)

// renderConfirmation prints the plan a request ended at (ev, its result,
// is confirmation_required or plan_changed): the plan as text, the token
// with its expiry and who may confirm, and the command line that
// confirms; then, on errw, that a confirmation is required (or that the
// plan changed). When the publisher confirms itself (autoConfirm), the
// token and the command line are left out.
func (r *renderer) renderConfirmation(ev *events.Event, c *confirmation, action, project string) {
	st := r.resultStyle()
	w := r.out
	token := sanitize(c.token, oneLine)
	if c.changed {
		fmt.Fprintf(w, "%s %s: the plan changed; the new plan:\n", action, project)
	} else {
		fmt.Fprintf(w, "%s %s needs confirmation\n", action, project)
	}
	if p := trimJSON(c.plan); len(p) > 0 {
		renderPlan(w, action, p, st)
	}
	// The publisher confirms this plan itself: asking on a terminal, or
	// with --yes (but for a plan that changed, which --yes does not
	// confirm blindly).
	auto := r.autoConfirm && !c.byOther && (!c.changed || r.interactive)
	if !auto {
		fmt.Fprintf(w, "token:     %s\n", paint(r.color, ansiBold, token))
	}
	if c.expiresAt != "" {
		exp := sanitize(c.expiresAt, oneLine)
		if t, err := time.Parse(time.RFC3339Nano, c.expiresAt); err == nil {
			now := time.Now()
			if r.now != nil {
				now = r.now()
			}
			exp = formatTime(t, st.loc)
			if d := t.Sub(now); d > 0 {
				exp += " (in " + formatDuration(d.Round(time.Second)) + ")"
			} else {
				exp += " (expired)"
			}
		}
		fmt.Fprintf(w, "expires:   %s\n", exp)
	}
	switch {
	case c.byOther:
		fmt.Fprintf(w, "confirm:   %s\n", paint(r.color, ansiBold, "another user (a second approver), with the token; not you"))
	case c.confirmBy != "":
		fmt.Fprintf(w, "confirm:   %s\n", sanitize(c.confirmBy, oneLine))
	}
	if !auto {
		verb := "to confirm, run"
		if c.byOther {
			verb = "the second approver runs"
		}
		fmt.Fprintf(w, "%s:\n  %s\n", verb, paint(r.color, ansiBold, confirmCommand(action, project, token, r.args)))
	}
	msg := ""
	if ev.Error != nil {
		msg = ev.Error.Message
	}
	switch {
	case c.changed:
		fmt.Fprintf(r.errw, "%s %s\n", paint(r.errColor, ansiYellow+";"+ansiBold, "plan changed:"), orDefault(msg, "the plan changed since it was confirmed; nothing was done"))
	case !auto:
		fmt.Fprintf(r.errw, "%s %s\n", paint(r.errColor, ansiYellow+";"+ansiBold, "confirmation required:"), orDefault(msg, action+" of "+project+" needs confirmation"))
	}
}

func orDefault(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}

// confirmQuestion is the question asked on a terminal before confirming
// action on project.
func confirmQuestion(action, project string, changed bool) string {
	var q string
	switch action {
	case events.ActionDeploy:
		q = "Deploy to " + project + "?"
	case events.ActionRestart:
		q = "Restart " + project + "?"
	case events.ActionRollback:
		q = "Roll back " + project + "?"
	case events.ActionStop:
		q = "Stop " + project + "?"
	case events.ActionConfigDelete:
		q = "Delete the configuration of " + project + "?"
	default:
		q = "Run " + action + " on " + project + "?"
	}
	if changed {
		q = "The plan changed. " + q
	}
	return q + " [y/N] "
}

// ask writes question to out and reads one line from in: true for y or
// yes (in any case). An empty answer, any other, or the end of the input
// is no. It returns ctx's error when ctx ends first (an interrupt).
func ask(ctx context.Context, in io.Reader, out io.Writer, question string) (bool, error) {
	io.WriteString(out, question)
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := readLine(in)
		ch <- answer{line, err}
	}()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case a := <-ch:
		if a.err != nil && a.line == "" {
			io.WriteString(out, "\n")
			return false, nil
		}
		switch strings.ToLower(strings.TrimSpace(a.line)) {
		case "y", "yes":
			return true, nil
		}
		return false, nil
	}
}

// readLine reads up to a newline, a byte at a time, so nothing after the
// line is taken from in.
func readLine(in io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 4096 {
		n, err := in.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				return b.String(), nil
			}
			b.WriteByte(buf[0])
		}
		if err != nil {
			return b.String(), err
		}
	}
	return b.String(), nil
}
