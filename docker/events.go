package docker

import (
	"context"
	"errors"
	"io"
	"time"

	dockerevents "github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/berth-ops/berth/events"
)

// WatchedActions are the container events WatchContainers reports: the
// ones that change what status shows (state, health, restart count,
// the container itself). exec_* events, which every health check makes,
// are not among them.
var WatchedActions = []string{
	"create", "start", "restart", "die", "stop", "kill", "oom",
	"pause", "unpause", "destroy", "health_status",
}

// WatchContainers streams the engine's events of compose containers (those
// with a com.docker.compose.project label) to fn: the container's compose
// project, the action as the engine names it ("die", "health_status:
// healthy", …) and the engine's time of the event. A non-zero since asks the
// engine to replay first the events it still holds from that time on
// (inclusive: the event at since comes again); the engine keeps only its
// last few hundred events, and none across its restarts.
//
// It uses one connection and calls fn from the calling goroutine, one event
// at a time, in the engine's order. It returns nil when ctx ends, and an
// error when the stream cannot be opened or ends: CodeDockerUnavailable when
// the engine cannot be reached or closes the stream (it stops or
// restarts). The caller reconnects.
func (e *Engine) WatchContainers(ctx context.Context, since time.Time, fn func(composeProject, action string, at time.Time)) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	args := filters.NewArgs(
		filters.Arg("type", string(dockerevents.ContainerEventType)),
		filters.Arg("label", LabelProject),
	)
	for _, a := range WatchedActions {
		args.Add("event", a)
	}
	opts := dockerevents.ListOptions{Filters: args}
	if !since.IsZero() {
		opts.Since = unixTimestamp(since)
	}
	// Cancelling sctx on return ends the client's reading goroutine.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, errs := e.cli.Events(sctx, opts)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			if !ok || err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return events.Errorf(events.CodeDockerUnavailable,
					"the Docker Engine at %s closed its event stream (it may be stopping or restarting)", e.cli.DaemonHost())
			}
			return e.mapErr(err, "watch container events")
		case m := <-msgs:
			cp := m.Actor.Attributes[LabelProject]
			if cp == "" {
				continue
			}
			at := time.Unix(0, m.TimeNano)
			if m.TimeNano == 0 {
				at = time.Unix(m.Time, 0)
			}
			fn(cp, string(m.Action), at)
		}
	}
}

// WatchImageTags calls fn with the reference ("repo:tag") of each image the
// engine tags from since on, until ctx ends; then it returns nil. Errors
// are those of WatchContainers.
func (e *Engine) WatchImageTags(ctx context.Context, since time.Time, fn func(ref string)) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	args := filters.NewArgs(
		filters.Arg("type", string(dockerevents.ImageEventType)),
		filters.Arg("event", string(dockerevents.ActionTag)),
	)
	opts := dockerevents.ListOptions{Filters: args, Since: unixTimestamp(since)}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, errs := e.cli.Events(sctx, opts)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			if !ok || err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return events.Errorf(events.CodeDockerUnavailable,
					"the Docker Engine at %s closed its event stream (it may be stopping or restarting)", e.cli.DaemonHost())
			}
			return e.mapErr(err, "watch image events")
		case m := <-msgs:
			if ref := m.Actor.Attributes["name"]; ref != "" {
				fn(ref)
			}
		}
	}
}
