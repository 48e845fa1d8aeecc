package handlers

import (
	"context"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth/events"
)

// ContainerWatcher is the Docker Engine's stream of container events, as
// WatchEngine uses it; docker.Engine implements it.
type ContainerWatcher interface {
	// WatchContainers calls fn, from the calling goroutine and one at a
	// time, for each event of a compose container: its compose project,
	// the action and the engine's time of the event. A non-zero since
	// replays the events the engine still holds from then on first. It
	// uses one connection, and returns when ctx ends (nil) or the stream
	// cannot be opened or ends (an error).
	WatchContainers(ctx context.Context, since time.Time, fn func(composeProject, action string, at time.Time)) error
}

// The timings of WatchEngine.
const (
	// watchBackoffMin and watchBackoffMax bound the wait between two
	// connections to the engine's event stream; it doubles while they fail.
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
	// watchMapEvery is how often the compose project → project map is
	// read again from the store, besides when an event names a compose
	// project it does not know.
	watchMapEvery = 30 * time.Second
	// watchMissEvery is how often, at most, an event of an unknown compose
	// project makes the whole map be read again while the set of project
	// names is unchanged (events of compose projects Berth does not manage
	// would otherwise read every project at every event). A new project
	// name always makes the map be read again.
	watchMissEvery = time.Second
	// watchStoreTimeout bounds each store call of the watch: the engine
	// drops the events of a subscriber that does not read them in time.
	watchStoreTimeout = 2 * time.Second
)

// WatchEngine keeps the status cache fresh: it follows the engine's
// container events and drops the cached status of the project(s) whose
// compose project an event names, so a cached status is stale at most by
// the event's latency; the cache's TTL remains the safety net. When the
// event stream ends (the engine stops or restarts, the connection breaks)
// it reconnects, waiting 100 ms, doubling to 5 s while it fails, asking
// for the events since the last one it saw; before every connection,
// the first included, it drops every project's cached status, as events
// may have been missed. It returns when ctx ends. It logs to
// zerolog.Ctx(ctx).
func (s *Service) WatchEngine(ctx context.Context, w ContainerWatcher) {
	(&engineWatch{s: s, w: w, backoffMin: watchBackoffMin, backoffMax: watchBackoffMax,
		mapEvery: watchMapEvery, missEvery: watchMissEvery}).run(ctx)
}

// engineWatch is the state of one WatchEngine. Its fields are used by one
// goroutine: fn is called from the goroutine that calls WatchContainers.
type engineWatch struct {
	s                      *Service
	w                      ContainerWatcher
	backoffMin, backoffMax time.Duration
	mapEvery, missEvery    time.Duration

	// byCompose maps a compose project to the projects that run it, as
	// read from the store at mappedAt; names are the projects it was read
	// from.
	byCompose map[string][]string
	names     []string
	mappedAt  time.Time
	// last is the engine's time of the last event seen.
	last time.Time
}

func (ew *engineWatch) run(ctx context.Context) {
	log := zerolog.Ctx(ctx)
	backoff := ew.backoffMin
	// The first connection asks for the events since the watch began, so
	// none falls between dropping the cache and the stream's start.
	since := ew.s.Now()
	failures := 0
	for {
		reason := "engine watch starting"
		if failures > 0 || !ew.last.IsZero() {
			reason = "engine event stream reconnecting"
		}
		ew.invalidateAll(ctx, reason)
		began, seen, prev := time.Now(), 0, ew.last
		err := ew.w.WatchContainers(ctx, since, func(cp, action string, at time.Time) {
			if at.After(prev) {
				seen++ // not one replayed from before the connection
			}
			if at.After(ew.last) {
				ew.last = at
			}
			ew.event(ctx, cp, action, at)
		})
		if ctx.Err() != nil {
			return
		}
		if !ew.last.IsZero() {
			since = ew.last
		}
		if seen > 0 || time.Since(began) >= ew.backoffMax {
			// The stream worked for a while: this is a new outage.
			backoff, failures = ew.backoffMin, 0
		}
		failures++
		ev := log.Debug()
		if failures == 1 {
			ev = log.Warn()
		}
		if err == nil {
			err = events.Errorf(events.CodeDockerUnavailable, "the event stream ended")
		}
		ev.Err(err).Int("failures", failures).Dur("retry_in", backoff).Time("since", since).
			Msg("docker event stream ended; cached statuses may be stale until it is back")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, ew.backoffMax)
	}
}

// event drops the cached status of the projects that run compose project cp.
func (ew *engineWatch) event(ctx context.Context, cp, action string, at time.Time) {
	log := zerolog.Ctx(ctx)
	if time.Since(ew.mappedAt) >= ew.mapEvery {
		ew.remapOrWarn(ctx, nil)
	}
	names, ok := ew.byCompose[cp]
	if !ok {
		// A project configured since the map was read (a new name, or a
		// compose project changed by config.set), or a compose project
		// Berth does not manage.
		sctx, cancel := context.WithTimeout(ctx, watchStoreTimeout)
		all, err := ew.s.Store.ListProjects(sctx)
		cancel()
		switch {
		case err != nil:
			log.Warn().Err(err).Str("compose_project", cp).Str("action", action).
				Msg("cannot list the projects to find the one of a container event; its cached status may be stale until its TTL")
		case !slices.Equal(all, ew.names) || time.Since(ew.mappedAt) >= ew.missEvery:
			ew.remapOrWarn(ctx, all)
			names = ew.byCompose[cp]
		}
	}
	for _, name := range names {
		ew.s.gens.bump(name)
		sctx, cancel := context.WithTimeout(ctx, watchStoreTimeout)
		err := ew.s.Store.InvalidateStatus(sctx, name)
		cancel()
		if err != nil {
			log.Warn().Err(err).Str("project", name).Str("compose_project", cp).Str("action", action).
				Msg("cannot drop the cached status after a container event; it may be stale until its TTL")
			continue
		}
		log.Debug().Str("project", name).Str("compose_project", cp).Str("action", action).
			Time("event_at", at).Dur("latency", time.Since(at)).Msg("status cache invalidated by a container event")
	}
}

// remap reads the compose project → projects map from the store, of the
// projects names (nil: of every configured project, listed), and returns
// those; when the store fails, the map read before stays.
func (ew *engineWatch) remap(ctx context.Context, names []string) ([]string, error) {
	sctx, cancel := context.WithTimeout(ctx, watchStoreTimeout)
	defer cancel()
	now := time.Now()
	if names == nil {
		var err error
		if names, err = ew.s.Store.ListProjects(sctx); err != nil {
			return nil, err
		}
	}
	m := make(map[string][]string, len(names))
	for _, name := range names {
		p, err := ew.s.Store.GetProject(sctx, name)
		if events.ErrorCode(err) == events.CodeNotFound {
			continue // deleted since the list
		}
		if err != nil {
			return names, err
		}
		if p.ComposeProject != "" {
			m[p.ComposeProject] = append(m[p.ComposeProject], name)
		}
	}
	ew.byCompose, ew.names, ew.mappedAt = m, names, now
	return names, nil
}

// remapOrWarn is remap for event: a failure is logged, the old map kept.
func (ew *engineWatch) remapOrWarn(ctx context.Context, names []string) {
	if _, err := ew.remap(ctx, names); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot read the projects' compose project names; container events of projects configured since are not followed")
	}
}

// invalidateAll drops the cached status of every project, and reads the map
// again.
func (ew *engineWatch) invalidateAll(ctx context.Context, reason string) {
	log := zerolog.Ctx(ctx)
	ew.s.gens.bump("")
	names, err := ew.remap(ctx, nil)
	if err != nil {
		log.Warn().Err(err).Str("reason", reason).Msg("cannot read the projects from the store; cached statuses may be stale until their TTL")
	}
	failed := 0
	for _, name := range names {
		sctx, cancel := context.WithTimeout(ctx, watchStoreTimeout)
		if err := ew.s.Store.InvalidateStatus(sctx, name); err != nil {
			failed++
			log.Debug().Err(err).Str("project", name).Msg("cannot drop a cached status")
		}
		cancel()
	}
	ev := log.Debug()
	if failed > 0 {
		ev = log.Warn()
	}
	ev.Str("reason", reason).Int("projects", len(names)).Int("failed", failed).
		Msg("cached statuses dropped: container events may have been missed")
}
