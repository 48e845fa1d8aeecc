// Package metrics exports the worker's measurements to Prometheus and
// serves its HTTP endpoints: /metrics, /healthz and /readyz.
//
// Metrics implements handlers.Observer, so the handlers and natsbus
// packages report what they do without importing Prometheus. Every
// collector lives in the Metrics' own registry: nothing is registered
// globally, so several workers (tests) can run in one process.
package metrics

import (
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
)

// Namespace prefixes every metric name.
const Namespace = "berth"

// OutcomeOK is the outcome label of a command that succeeded; any other
// outcome is its error code.
const OutcomeOK = "ok"

// unknownLabel replaces a label value outside its closed set (an action
// nobody handles, sent by a client), so clients cannot grow the label
// space without bound.
const unknownLabel = "unknown"

// The lanes of the intake: the shared ones, and those of the commands
// routed to this worker's host.
var lanes = []string{"fast", "slow", "host-fast", "host-slow"}

// durationBuckets span a cached status (milliseconds) to a long deploy
// (minutes).
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// stepBuckets span the steps of a deploy: a backup of a few files to a
// long build.
var stepBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200}

// Metrics holds the worker's collectors in their own registry.
type Metrics struct {
	// Registry holds every collector of the worker, the Go runtime's and
	// the process's included.
	Registry *prometheus.Registry

	commands       *prometheus.CounterVec
	commandSeconds *prometheus.HistogramVec
	queries        *prometheus.CounterVec
	querySeconds   *prometheus.HistogramVec
	deploySteps    *prometheus.HistogramVec
	inflight       *prometheus.GaugeVec
	statusCache    *prometheus.CounterVec
	lockConflicts  prometheus.Counter
	redeliveries   prometheus.Counter
}

var _ handlers.Observer = (*Metrics)(nil)

// New returns Metrics with every collector registered in a new registry.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "commands_total",
		Help: `Commands answered, by action and outcome ("ok" or the error code). A stored result re-published for a duplicate is not counted again.`,
	}, []string{"action", "outcome"})
	m.commandSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "command_duration_seconds",
		Help:    "Time from taking a command to its result, by action.",
		Buckets: durationBuckets,
	}, []string{"action"})
	m.queries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "queries_total",
		Help: `Read-only queries answered on the query service (berth.q.>), by endpoint and outcome ("ok" or the error code).`,
	}, []string{"endpoint", "outcome"})
	m.querySeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "query_duration_seconds",
		Help:    "Time to answer a query on the query service, by endpoint.",
		Buckets: durationBuckets,
	}, []string{"endpoint"})
	m.deploySteps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "deploy_step_duration_seconds",
		Help:    "Duration of each step a deploy ran (backup, sync, build, up, verify, …).",
		Buckets: stepBuckets,
	}, []string{"step"})
	m.inflight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "inflight_commands",
		Help: "Commands being worked on now, by intake lane (fast: read-only, slow: mutations).",
	}, []string{"lane"})
	m.statusCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "status_cache_total",
		Help: `Status answers by source: "hit" from the cache, "miss" from Docker (refresh included).`,
	}, []string{"result"})
	m.lockConflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "lock_conflicts_total",
		Help: "Mutations refused because another operation held the project's lock.",
	})
	m.redeliveries = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "redeliveries_total",
		Help: "Command messages delivered again by JetStream (a worker stopped or the ack was lost).",
	})
	m.Registry.MustRegister(m.commands, m.commandSeconds, m.queries, m.querySeconds, m.deploySteps,
		m.inflight, m.statusCache, m.lockConflicts, m.redeliveries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Series whose label values are known up front are exported from the
	// start, at zero, so rate() and alerts work before the first event.
	for _, l := range lanes {
		m.inflight.WithLabelValues(l)
	}
	m.statusCache.WithLabelValues("hit")
	m.statusCache.WithLabelValues("miss")
	return m
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// CommandDone implements handlers.Observer.
func (m *Metrics) CommandDone(action string, code events.Code, d time.Duration) {
	action = actionLabel(action)
	m.commands.WithLabelValues(action, outcome(code)).Inc()
	m.commandSeconds.WithLabelValues(action).Observe(d.Seconds())
}

// QueryDone implements handlers.Observer.
func (m *Metrics) QueryDone(endpoint string, code events.Code, d time.Duration) {
	m.queries.WithLabelValues(endpoint, outcome(code)).Inc()
	m.querySeconds.WithLabelValues(endpoint).Observe(d.Seconds())
}

// DeployStep implements handlers.Observer.
func (m *Metrics) DeployStep(step string, d time.Duration) {
	m.deploySteps.WithLabelValues(step).Observe(d.Seconds())
}

// StatusCache implements handlers.Observer.
func (m *Metrics) StatusCache(hit bool) {
	if hit {
		m.statusCache.WithLabelValues("hit").Inc()
	} else {
		m.statusCache.WithLabelValues("miss").Inc()
	}
}

// LockConflict implements handlers.Observer.
func (m *Metrics) LockConflict() { m.lockConflicts.Inc() }

// Redelivery implements handlers.Observer.
func (m *Metrics) Redelivery() { m.redeliveries.Inc() }

// Inflight implements handlers.Observer.
func (m *Metrics) Inflight(lane string, delta int) {
	if !slices.Contains(lanes, lane) {
		lane = unknownLabel
	}
	m.inflight.WithLabelValues(lane).Add(float64(delta))
}

func actionLabel(a string) string {
	if events.IsKnownAction(a) {
		return a
	}
	return unknownLabel
}

func outcome(code events.Code) string {
	switch {
	case code == "":
		return OutcomeOK
	case slices.Contains(events.Codes(), code):
		return string(code)
	default:
		return string(events.CodeInternal)
	}
}
