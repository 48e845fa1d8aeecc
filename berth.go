// Package berth holds Berth's domain types and the interfaces its adapters
// implement: the Store (Redis), the Engine (Docker Engine and Compose) and
// the Emitter (events on NATS). It imports no adapter; cmd/worker wires the
// adapters to the handlers.
package berth

import (
	"context"
	"encoding/json"
	"time"

	"github.com/berth-ops/berth/events"
)

// Project is the configuration of one managed Compose project.
type Project struct {
	// Name is the Berth project name, the subject token.
	Name string `json:"name"`
	// Workspace is the absolute directory where the code is edited.
	Workspace string `json:"workspace"`
	// Workspaces are the other directories a deploy may name as its
	// source (git worktrees of the project), set by a global admin.
	Workspaces []string `json:"workspaces,omitempty"`
	// Production is the absolute directory the compose project runs from,
	// with symbolic links resolved (but for strategy symlink, where it is
	// the link to the workspace).
	Production string `json:"production"`
	// ComposeProject is the compose project name (docker compose -p).
	ComposeProject string `json:"compose_project"`
	// ComposeFiles are the compose files, relative to Production.
	ComposeFiles []string `json:"compose_files"`
	// Services are the services the compose files declare.
	Services []string `json:"services"`
	// PrimaryService is the default service of logs.
	PrimaryService string `json:"primary_service"`
	// Strategy is how deploy brings the workspace to production: "copy"
	// (the default), "symlink" (production links to the workspace) or
	// "registry" (services use image references; deploy pulls).
	Strategy string `json:"strategy"`
	// RequireSecondApprover makes a different user confirm mutations.
	RequireSecondApprover bool `json:"require_second_approver"`
	// ComposePolicy says what a deploy does with compose changes that
	// widen a service's reach over the host: "warn" (the default: the plan
	// shows them first) or "refuse".
	ComposePolicy string `json:"compose_policy,omitempty"`
	// StabilizeS, when set, is how many seconds a service without a
	// healthcheck must run unchanged after a mutation to count as up; nil
	// means the worker's --stabilize.
	StabilizeS *int `json:"stabilize_s,omitempty"`
	// DrainS, when set, is how many seconds a start-first rollout waits
	// between taking old containers off the networks and stopping them
	// (default: the service's stop_grace_period, else 5 s).
	DrainS *int `json:"drain_s,omitempty"`
	// StartFirstWithVolumes are services that may roll out start-first
	// although they mount a writable named volume: the project says two
	// containers of theirs may share it for a moment.
	StartFirstWithVolumes []string `json:"start_first_with_volumes,omitempty"`
	// Roles maps users to their role in this project: viewer, operator
	// or admin. Global admins come from the worker's configuration.
	Roles map[string]string `json:"roles,omitempty"`
	// AnonymousViewers lets any user read the project (viewer actions).
	AnonymousViewers bool `json:"anonymous_viewers,omitempty"`
	// Host is the worker host whose Docker Engine runs the project: only
	// that host's worker executes its commands and answers its queries.
	// Empty in configurations stored before fleets: the worker that takes
	// the command runs it.
	Host string `json:"host,omitempty"`
	// CreatedAt and UpdatedAt are set by config.set.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// UpdatedBy is the user of the last config.set.
	UpdatedBy string `json:"updated_by"`
}

// Container is what the engine reports about one container of a project.
type Container struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Service      string            `json:"service"`
	Image        string            `json:"image"`
	ImageID      string            `json:"image_id"`
	State        string            `json:"state"`            // created, running, restarting, exited, paused, dead
	Health       string            `json:"health,omitempty"` // healthy, unhealthy, starting, or "" without a healthcheck
	HealthLog    []string          `json:"health_log,omitempty"`
	StartedAt    time.Time         `json:"started_at"`
	FinishedAt   time.Time         `json:"finished_at"`
	RestartCount int               `json:"restart_count"`
	ExitCode     int               `json:"exit_code"`
	Ports        []Port            `json:"ports,omitempty"`
	OneShot      bool              `json:"one_shot,omitempty"`
	Labels       map[string]string `json:"-"`
}

// ContainerStats is one sample of a container's resource use, as the
// engine's stats endpoint gives it.
type ContainerStats struct {
	// CPUTotal and SystemCPU are cumulative CPU times (ns) of the
	// container and of the host; two samples give a CPU percentage.
	CPUTotal   uint64
	SystemCPU  uint64
	OnlineCPUs int
	// MemUsage and MemLimit are in bytes (MemUsage without the page cache).
	MemUsage uint64
	MemLimit uint64
	Read     time.Time
}

// Port is one published port.
type Port struct {
	HostIP        string `json:"host_ip,omitempty"`
	HostPort      uint16 `json:"host_port,omitempty"`
	ContainerPort uint16 `json:"container_port"`
	Proto         string `json:"proto"`
}

// LogOptions selects the log lines of one container.
type LogOptions struct {
	Tail       int       // lines from the end; 0 means all
	Since      time.Time // zero means no lower bound
	Until      time.Time // zero means no upper bound
	Timestamps bool
	Follow     bool
}

// Engine is the Docker Engine and Compose, as Berth uses them.
//
// Every method returns a *events.Error with CodeDockerUnavailable when the
// engine cannot be reached.
type Engine interface {
	// Ping checks that the engine answers.
	Ping(ctx context.Context) error
	// Containers lists every container (running or not) of a compose
	// project, by its com.docker.compose.project label, inspected.
	Containers(ctx context.Context, composeProject string) ([]Container, error)
	// ComposeModel reads what the compose files of spec declare, as
	// `docker compose config` resolves them. A missing or broken compose
	// file, or one that declares no service, is a CodeBadRequest error
	// carrying Compose's message.
	ComposeModel(ctx context.Context, spec ComposeSpec) (*ComposeModel, error)
	// Stats samples a running container's resource use once.
	Stats(ctx context.Context, containerID string) (*ContainerStats, error)
	// Logs streams the log lines of a container to fn, demultiplexed, in
	// order. With opts.Follow it returns when ctx ends (nil error) or the
	// container stops. fn returning an error stops the stream with it.
	Logs(ctx context.Context, containerID string, opts LogOptions, fn func(events.LogLine) error) error
}

// RequestState is the state of a request record.
type RequestState string

// The request states.
const (
	RequestRunning RequestState = "running"
	RequestDone    RequestState = "done"
)

// RequestRecord is the idempotency record of one request.
type RequestRecord struct {
	ID        string       `json:"id"`
	Project   string       `json:"project"`
	Action    string       `json:"action"`
	User      string       `json:"user,omitempty"`
	State     RequestState `json:"state"`
	Worker    string       `json:"worker"`
	StartedAt time.Time    `json:"started_at"`
	// StreamSeq is the command message's stream sequence: a redelivery of
	// the same message means its previous worker stopped.
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// KeyID is the signing key the request came with (signed commands):
	// another key may not use the request's id.
	KeyID string `json:"key_id,omitempty"`
	// Result is the stored result event, re-published on redelivery.
	Result json.RawMessage `json:"result,omitempty"`
}

// HistoryEntry is one operation in a project's history.
type HistoryEntry struct {
	RequestID  string         `json:"request_id"`
	Action     string         `json:"action"`
	User       string         `json:"user"`
	Confirmer  string         `json:"confirmer,omitempty"`
	OK         bool           `json:"ok"`
	ErrorCode  events.Code    `json:"error_code,omitempty"`
	StartedAt  time.Time      `json:"started_at"`
	DurationMS int64          `json:"duration_ms"`
	Details    map[string]any `json:"details,omitempty"`
}

// CachedStatus is a status report with the time it was taken.
type CachedStatus struct {
	TakenAt time.Time       `json:"taken_at"`
	Report  json.RawMessage `json:"report"`
}

// Store keeps Berth's state in Redis.
//
// Every method returns a *events.Error with CodeStoreUnavailable when the
// store cannot be reached; lookups of missing keys return CodeNotFound.
type Store interface {
	Ping(ctx context.Context) error

	// GetProject returns a project's config, or CodeNotFound.
	GetProject(ctx context.Context, name string) (*Project, error)
	// GetProjects returns the configs of names in one round trip, in
	// their order; a project not (or no longer) configured, or whose
	// config cannot be decoded, is nil.
	GetProjects(ctx context.Context, names []string) ([]*Project, error)
	// PutProject creates or replaces a project's config.
	PutProject(ctx context.Context, p *Project) error
	// DeleteProject removes a project's config and status cache; its
	// history stays. Deleting a missing project returns CodeNotFound.
	DeleteProject(ctx context.Context, name string) error
	// ListProjects returns the configured project names, sorted.
	ListProjects(ctx context.Context) ([]string, error)

	// GetProjectStatus returns a project's config (or CodeNotFound) and its
	// cached status, nil when there is none or it cannot be read, at once.
	GetProjectStatus(ctx context.Context, name string) (*Project, *CachedStatus, error)
	// PutStatus caches a status for ttl.
	PutStatus(ctx context.Context, project string, s *CachedStatus, ttl time.Duration) error
	// InvalidateStatus drops the cached status.
	InvalidateStatus(ctx context.Context, project string) error

	// BeginRequest creates the record of a request in the running state
	// unless one exists. It returns the existing record and false when one
	// does, or the new record and true.
	BeginRequest(ctx context.Context, rec *RequestRecord, ttl time.Duration) (*RequestRecord, bool, error)
	// TakeOverRequest replaces a running record (of a worker that died) with rec.
	TakeOverRequest(ctx context.Context, rec *RequestRecord, ttl time.Duration) error
	// FinishRequest stores rec (the record the caller began or took over)
	// done, with its result event.
	FinishRequest(ctx context.Context, rec *RequestRecord, result json.RawMessage, ttl time.Duration) error
	// GetRequest returns the record of a user's request, or CodeNotFound.
	// Records are keyed by user and id: two users' requests with the same
	// id are two requests.
	GetRequest(ctx context.Context, user, id string) (*RequestRecord, error)

	// AppendHistory adds an entry at the head of a project's history,
	// keeping at most the store's cap.
	AppendHistory(ctx context.Context, project string, e *HistoryEntry) error
	// History returns the newest n entries, newest first.
	History(ctx context.Context, project string, n int) ([]HistoryEntry, error)
}

// WorkerInfo is what a worker of a fleet says of itself: it is refreshed
// every heartbeat, and kept when the worker stops, so the fleet can say
// when a host was last seen.
type WorkerInfo struct {
	// Host names the Docker host the worker runs on (its --host).
	Host string `json:"host"`
	// Worker is the worker process: host name and pid.
	Worker  string `json:"worker"`
	Version string `json:"version"`
	// StartedAt is when the worker started; LastSeen its latest heartbeat.
	StartedAt time.Time `json:"started_at"`
	LastSeen  time.Time `json:"last_seen"`
	// HeartbeatS is the heartbeat interval in seconds: a worker silent for
	// three of them counts as down.
	HeartbeatS int `json:"heartbeat_s"`
	// StoppedAt is set when the worker stopped cleanly.
	StoppedAt *time.Time `json:"stopped_at,omitempty"`
}

// Alive reports whether the worker was heard from within three heartbeats
// of now and has not stopped.
func (w WorkerInfo) Alive(now time.Time) bool {
	if w.StoppedAt != nil {
		return false
	}
	hb := time.Duration(max(w.HeartbeatS, 1)) * time.Second
	return now.Sub(w.LastSeen) <= 3*hb
}
