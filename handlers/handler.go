// Package handlers executes Berth's commands: one file per action, a Mux
// that routes an action to its Handler, and the Dispatcher that takes a
// delivered command from decoding to its single result event.
package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/berth-ops/berth/events"
)

// Request is one decoded command, as a handler sees it.
type Request struct {
	ID      string
	Project string
	Action  string
	User    string
	Args    json.RawMessage
	Confirm string
	// Received is when the worker took the command.
	Received time.Time
	// Delivery counts deliveries of the command, from 1.
	Delivery int
	// Resumed is set when this delivery takes over the request from a
	// worker that stopped while running it.
	Resumed bool

	// Confirmer and Details are filled in by a handler for the history
	// record: who confirmed, and what the operation did.
	Confirmer string
	Details   map[string]any
}

// Note adds a detail to the request's history record.
func (r *Request) Note(key string, v any) {
	if r.Details == nil {
		r.Details = map[string]any{}
	}
	r.Details[key] = v
}

// Reporter carries a handler's progress and log output to the requester
// while the handler runs.
type Reporter interface {
	// Progress reports a step; done and total are omitted when negative.
	Progress(step, message string, done, total int)
	// Log sends container log lines, chunked into log events.
	Log(lines []events.LogLine) error
	// Confirm publishes the confirm event of a plan awaiting confirmation.
	Confirm(token string, expiresAt time.Time, plan any) error
}

// Handler executes one action. It returns the result data, or an error;
// errors should be *events.Error so the requester learns what to do. Data
// returned with an error goes into the result as well (the plan of a
// confirmation_required result, the details of a rolled-back deploy).
type Handler interface {
	Handle(ctx context.Context, req *Request, rep Reporter) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request, rep Reporter) (any, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req *Request, rep Reporter) (any, error) {
	return f(ctx, req, rep)
}

// Mux routes an action to its handler.
type Mux struct{ m map[string]Handler }

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{m: map[string]Handler{}} }

// Handle registers h for action. It panics when action is not a known
// action or already has a handler: both are programming errors.
func (m *Mux) Handle(action string, h Handler) {
	if !events.IsKnownAction(action) {
		panic(fmt.Sprintf("handlers: unknown action %q", action))
	}
	if _, dup := m.m[action]; dup {
		panic(fmt.Sprintf("handlers: duplicate handler for %q", action))
	}
	m.m[action] = h
}

// Handler returns the handler of action, or nil.
func (m *Mux) Handler(action string) Handler { return m.m[action] }

// Actions returns the actions with a handler, sorted.
func (m *Mux) Actions() []string {
	out := make([]string, 0, len(m.m))
	for a := range m.m {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}
