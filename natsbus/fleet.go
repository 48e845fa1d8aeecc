package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
)

// Fleet is the registry of the workers that share a NATS system: a
// JetStream key-value bucket with one key per host, which each worker
// refreshes every heartbeat. An entry outlives its worker, so a host that
// went down is listed with the time it was last seen.
type Fleet struct {
	kv       jetstream.KeyValue
	self     berth.WorkerInfo
	interval time.Duration
	log      zerolog.Logger
	now      func() time.Time

	mu      sync.Mutex
	workers []berth.WorkerInfo // as of the last refresh
	fetched time.Time
}

// OpenFleet creates (or updates) the fleet bucket and returns the
// registry for the worker self. Run keeps its entry fresh.
func OpenFleet(ctx context.Context, js jetstream.JetStream, topo Topology, self berth.WorkerInfo, interval time.Duration, log zerolog.Logger) (*Fleet, error) {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      topo.FleetBucket,
		Description: "Berth workers: one entry per host, refreshed every heartbeat",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    topo.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("declare fleet bucket %s: %w", topo.FleetBucket, err)
	}
	self.HeartbeatS = max(int(interval/time.Second), 1)
	return &Fleet{kv: kv, self: self, interval: interval, log: log, now: time.Now}, nil
}

// Self is the host this worker runs on.
func (f *Fleet) Self() string { return f.self.Host }

// Run announces the worker now and then every heartbeat until ctx ends;
// then it records that the worker stopped.
func (f *Fleet) Run(ctx context.Context) {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		f.beat(ctx, nil)
		select {
		case <-ctx.Done():
			stopped := f.now().UTC()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			f.beat(sctx, &stopped)
			cancel()
			return
		case <-t.C:
		}
	}
}

// Announce writes the worker's entry once (before it takes commands).
func (f *Fleet) Announce(ctx context.Context) error { return f.put(ctx, nil) }

func (f *Fleet) beat(ctx context.Context, stopped *time.Time) {
	if err := f.put(ctx, stopped); err != nil && ctx.Err() == nil {
		f.log.Warn().Err(err).Msg("cannot refresh this worker's fleet entry")
	}
	if stopped == nil {
		if _, err := f.refresh(ctx); err != nil && ctx.Err() == nil {
			f.log.Debug().Err(err).Msg("cannot read the fleet")
		}
	}
}

func (f *Fleet) put(ctx context.Context, stopped *time.Time) error {
	w := f.self
	w.LastSeen = f.now().UTC()
	w.StoppedAt = stopped
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	// On a cluster a put sent while the bucket's leader changes (a node
	// lost, the bucket scaled) is never answered: each attempt gets a
	// short deadline and a transient failure is retried until ctx ends.
	// A put is idempotent.
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = f.kv.Put(pctx, w.Host, b)
		cancel()
		if err == nil || ctx.Err() != nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Workers lists every worker the fleet has heard of, by host, read
// afresh.
func (f *Fleet) Workers(ctx context.Context) ([]berth.WorkerInfo, error) {
	return f.refresh(ctx)
}

func (f *Fleet) refresh(ctx context.Context) ([]berth.WorkerInfo, error) {
	lister, err := f.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []berth.WorkerInfo
	for k := range lister.Keys() {
		e, err := f.kv.Get(ctx, k)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return nil, err
		}
		var w berth.WorkerInfo
		if json.Unmarshal(e.Value(), &w) == nil {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b berth.WorkerInfo) int {
		switch {
		case a.Host < b.Host:
			return -1
		case a.Host > b.Host:
			return 1
		}
		return 0
	})
	f.mu.Lock()
	f.workers, f.fetched = out, f.now()
	f.mu.Unlock()
	return out, nil
}

// Worker returns the entry of host, read afresh; ok is false when the
// fleet never heard of it.
func (f *Fleet) Worker(ctx context.Context, host string) (w berth.WorkerInfo, ok bool, err error) {
	e, err := f.kv.Get(ctx, host)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return w, false, nil
	case err != nil:
		return w, false, err
	}
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		return w, false, err
	}
	return w, true, nil
}

// Alone reports whether, as of the last refresh, no other worker is alive:
// a worker alone may run a command whose owner it cannot look up.
func (f *Fleet) Alone() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	for _, w := range f.workers {
		if w.Host != f.self.Host && w.Alive(now) {
			return false
		}
	}
	return true
}
