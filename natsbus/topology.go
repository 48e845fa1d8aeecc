package natsbus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
)

// Topology names and sizes the streams and consumers.
type Topology struct {
	Subjects events.Subjects
	// CommandStream and EventStream are the stream names.
	CommandStream string
	EventStream   string
	AuditStream   string
	// RouteStream holds the commands routed to a host's worker
	// (<prefix>.host.<host>.cmd.<project>.<action>); FleetBucket is the
	// key-value bucket of the workers (fleet.go).
	RouteStream string
	FleetBucket string
	// FastConsumer and SlowConsumer are the durable consumer names.
	FastConsumer string
	SlowConsumer string
	// AckWait is how long the server waits for an ack (or InProgress)
	// before redelivering a command; MaxDeliver caps deliveries.
	AckWait    time.Duration
	MaxDeliver int
	// EventMaxAge and EventMaxBytes bound the event stream; AuditMaxAge
	// the audit stream.
	EventMaxAge   time.Duration
	EventMaxBytes int64
	AuditMaxAge   time.Duration
	// Replicas is how many servers keep each stream and consumer: 1 on a
	// single server; 3 (or 5) on a cluster, which then loses no command,
	// event or delivery state when one server (two) of them dies.
	Replicas int
}

// DefaultTopology is the topology of DESIGN: BERTH_CMD and BERTH_EVT with
// the berth-fast and berth-slow consumers.
func DefaultTopology(subjects events.Subjects) Topology {
	return Topology{
		Subjects:      subjects,
		CommandStream: "BERTH_CMD",
		EventStream:   "BERTH_EVT",
		AuditStream:   "BERTH_AUDIT",
		RouteStream:   "BERTH_ROUTE",
		FleetBucket:   "BERTH_FLEET",
		FastConsumer:  "berth-fast",
		SlowConsumer:  "berth-slow",
		AckWait:       30 * time.Second,
		MaxDeliver:    5,
		EventMaxAge:   7 * 24 * time.Hour,
		EventMaxBytes: 1 << 30,
		AuditMaxAge:   90 * 24 * time.Hour,
		Replicas:      1,
	}
}

// commandSubjects are the subjects the command stream captures: only the
// known actions, so a command for an unknown action is never kept unseen
// by a work queue that no consumer filters.
func (t Topology) commandSubjects(actions []string) []string {
	out := make([]string, 0, len(actions))
	for _, a := range actions {
		out = append(out, t.Subjects.CommandFilter(a))
	}
	return out
}

// Declare creates or updates the streams and consumers. It is idempotent.
func (t Topology) Declare(ctx context.Context, js jetstream.JetStream) (fast, slow jetstream.Consumer, err error) {
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        t.CommandStream,
		Description: "Berth commands (work queue)",
		Subjects:    t.commandSubjects(events.Actions()),
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
		MaxAge:      24 * time.Hour,
		MaxMsgSize:  1 << 20,
		Replicas:    t.Replicas,
	})
	if err != nil {
		return nil, nil, t.streamError(t.CommandStream, err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        t.EventStream,
		Description: "Berth events: accepted, progress, log, confirm, result",
		Subjects:    []string{t.Subjects.AllEvents()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      t.EventMaxAge,
		MaxBytes:    t.EventMaxBytes,
		Duplicates:  10 * time.Minute,
		Replicas:    t.Replicas,
	})
	if err != nil {
		return nil, nil, t.streamError(t.EventStream, err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        t.AuditStream,
		Description: "Berth audit: one record per command",
		Subjects:    []string{t.Subjects.Prefix + ".audit.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      t.AuditMaxAge,
		Duplicates:  10 * time.Minute,
		Replicas:    t.Replicas,
	})
	if err != nil {
		return nil, nil, t.streamError(t.AuditStream, err)
	}
	// Every stream before any consumer: a stream scaled up takes a while
	// (about ten seconds) to accept consumers of its new replica count,
	// and the streams converge at the same time.
	if err := t.routeStream(ctx, js); err != nil {
		return nil, nil, t.streamError(t.RouteStream, err)
	}
	fast, err = t.consumer(ctx, js, t.FastConsumer, "read-only commands: "+fmt.Sprint(events.FastActions()), events.FastActions(), 256)
	if err != nil {
		return nil, nil, err
	}
	slow, err = t.consumer(ctx, js, t.SlowConsumer, "mutations and config: "+fmt.Sprint(events.SlowActions()), events.SlowActions(), 64)
	if err != nil {
		return nil, nil, err
	}
	return fast, slow, nil
}

// HostConsumers are the durable names of host's two lanes on the route
// stream.
func (t Topology) HostConsumers(host string) (fast, slow string) {
	return "berth-host-" + host + "-fast", "berth-host-" + host + "-slow"
}

// DeclareHost creates or updates the route stream and host's two
// consumers on it, each filtered on host's own subjects: the filters of
// two hosts never overlap, as a work-queue stream requires. Commands
// routed to a host whose worker is down wait in the stream.
func (t Topology) DeclareHost(ctx context.Context, js jetstream.JetStream, host string) (fast, slow jetstream.Consumer, err error) {
	if err := t.routeStream(ctx, js); err != nil {
		return nil, nil, t.streamError(t.RouteStream, err)
	}
	fastName, slowName := t.HostConsumers(host)
	hostSubjects := func(actions []string) []string {
		out := make([]string, 0, len(actions))
		for _, a := range actions {
			out = append(out, t.Subjects.HostCommandFilter(host, a))
		}
		return out
	}
	fast, err = t.durable(ctx, js, t.RouteStream, fastName, "read-only commands routed to host "+host, hostSubjects(events.FastActions()), 256)
	if err != nil {
		return nil, nil, err
	}
	slow, err = t.durable(ctx, js, t.RouteStream, slowName, "mutations and config routed to host "+host, hostSubjects(events.SlowActions()), 64)
	if err != nil {
		return nil, nil, err
	}
	return fast, slow, nil
}

// routeStream creates or updates the stream of the commands routed to a
// host.
func (t Topology) routeStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        t.RouteStream,
		Description: "Berth commands routed to the worker of their project's host (work queue)",
		Subjects:    []string{t.Subjects.AllHostCommands()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
		MaxAge:      24 * time.Hour,
		MaxMsgSize:  1 << 20,
		Replicas:    t.Replicas,
	})
	return err
}

func (t Topology) consumer(ctx context.Context, js jetstream.JetStream, name, desc string, actions []string, maxAckPending int) (jetstream.Consumer, error) {
	return t.durable(ctx, js, t.CommandStream, name, desc, t.commandSubjects(actions), maxAckPending)
}

func (t Topology) durable(ctx context.Context, js jetstream.JetStream, stream, name, desc string, filters []string, maxAckPending int) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:        name,
		Description:    desc,
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        t.AckWait,
		MaxDeliver:     t.MaxDeliver,
		MaxAckPending:  maxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// A work-queue stream's consumers must have its replica count;
		// said here rather than inherited, so that a stream scaled up or
		// down takes its consumers along on the next start.
		Replicas: t.Replicas,
	}
	c, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	// A stream just scaled up accepts consumers of its new replica count
	// only once its new peers have joined (about ten seconds on
	// nats-server 2.15); until then the server answers 10126.
	for wait := 60 * time.Second; isAPIError(err, errCodeReplicasExceedStream) && wait > 0; wait -= 250 * time.Millisecond {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("declare consumer %s: %w", name, err)
		case <-time.After(250 * time.Millisecond):
		}
		c, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("declare consumer %s: %w", name, err)
	}
	return c, nil
}
