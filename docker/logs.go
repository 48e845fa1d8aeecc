package docker

import (
	"bufio"
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// Logs streams the log lines of a container to fn, in order, split by
// stream (see Demux). With opts.Follow it returns nil when ctx ends or when
// the container stops; without, an expired ctx is a CodeTimeout error. A
// missing container is CodeNotFound; fn's error is returned as it is.
func (e *Engine) Logs(ctx context.Context, containerID string, opts berth.LogOptions, fn func(events.LogLine) error) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	if containerID == "" {
		return events.Errorf(events.CodeBadRequest, "no container id")
	}
	if opts.Tail < 0 {
		return events.Errorf(events.CodeBadRequest, "negative tail %d", opts.Tail)
	}
	what := "logs of container " + shortID(containerID)
	insp, err := e.cli.ContainerInspect(ctx, containerID)
	if err != nil {
		return e.logsErr(ctx, opts, e.mapErr(err, what))
	}
	tty := insp.Config != nil && insp.Config.Tty

	lo := container.LogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Timestamps: opts.Timestamps,
		Follow:     opts.Follow,
		Tail:       "all",
	}
	if opts.Tail > 0 {
		lo.Tail = strconv.Itoa(opts.Tail)
	}
	if !opts.Since.IsZero() {
		lo.Since = unixTimestamp(opts.Since)
	}
	if !opts.Until.IsZero() {
		lo.Until = unixTimestamp(opts.Until)
	}
	rc, err := e.cli.ContainerLogs(ctx, insp.ID, lo)
	if err != nil {
		return e.logsErr(ctx, opts, e.mapErr(err, what))
	}
	defer rc.Close()

	var fnErr error
	pass := func(l events.LogLine) error {
		if err := fn(l); err != nil {
			fnErr = err
			return err
		}
		return nil
	}
	// The engine writes a frame per line: reading them through a large
	// buffer takes one trip through the HTTP body's layers per buffer
	// instead of two per line. A read returns what has come, so a followed
	// stream is not delayed.
	br := bufio.NewReaderSize(rc, 64<<10)
	if tty {
		err = rawLines(br, opts.Timestamps, pass)
	} else {
		err = Demux(br, opts.Timestamps, pass)
	}
	switch {
	case err == nil:
		return nil
	case fnErr != nil && errors.Is(err, fnErr):
		return fnErr
	}
	return e.logsErr(ctx, opts, e.mapErr(err, what))
}

// logsErr makes the end of ctx the normal end of a followed stream.
func (e *Engine) logsErr(ctx context.Context, opts berth.LogOptions, err error) error {
	if opts.Follow && ctx.Err() != nil {
		return nil
	}
	if ctx.Err() == context.DeadlineExceeded && !isCode(err, events.CodeTimeout) {
		return events.Errorf(events.CodeTimeout, "reading logs did not finish in time: %v", err)
	}
	return err
}

// unixTimestamp formats t as the engine's "seconds.nanoseconds".
func unixTimestamp(t time.Time) string {
	frac := strconv.Itoa(t.Nanosecond() + 1e9)[1:] // zero-padded to 9 digits
	return strconv.FormatInt(t.Unix(), 10) + "." + frac
}
