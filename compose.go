package berth

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// ComposeSpec names a compose project and where it runs from.
type ComposeSpec struct {
	// Dir is the production directory; Files are relative to it.
	Dir     string
	Files   []string
	Project string
	// Tag marks every process of the compose runs of one operation (its
	// environment carries BERTH_OP=<Tag>), so that a worker that takes over
	// after a crash can find and stop the ones its predecessor left. Empty
	// leaves the runs unmarked.
	Tag string
}

// ComposeModel is what a project's compose files declare, as
// `docker compose config` resolves them (interpolated, merged, with only
// the active profiles' services).
type ComposeModel struct {
	// Name is the compose project name.
	Name     string                    `json:"name"`
	Services map[string]ComposeService `json:"services"`
}

// ComposeService is one service of a ComposeModel: what Berth needs to
// plan, verify and judge it.
type ComposeService struct {
	Name string `json:"name"`
	// Image is the reference the service runs: its `image:`, or for a
	// service that only has `build:`, the name Compose gives the image it
	// builds ("<project>-<service>").
	Image string `json:"image"`
	// Build is set when the service has a `build:` section.
	Build bool `json:"build,omitempty"`
	// Healthcheck is set when the service has a healthcheck that is not
	// disabled.
	Healthcheck bool `json:"healthcheck,omitempty"`
	// HealthTimeout bounds the wait for a first healthy state, when the
	// healthcheck says: start_period + interval × retries (Docker's
	// defaults for what it leaves out: 30 s, 3 retries, no start period).
	HealthTimeout time.Duration `json:"health_timeout,omitempty"`
	// Restart is the restart policy as declared ("" when none: Docker's
	// default, "no").
	Restart string `json:"restart,omitempty"`
	// DependsOn maps each service this one depends on to the condition
	// (service_started, service_healthy, service_completed_successfully).
	DependsOn map[string]string `json:"depends_on,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// ContainerName is the fixed container name, when set.
	ContainerName string `json:"container_name,omitempty"`
	// Replicas is the number of containers the service runs (scale, or
	// deploy.replicas; 1 by default).
	Replicas int `json:"replicas"`
	// Ports are the published ports.
	Ports []ComposePort `json:"ports,omitempty"`
	// Volumes are the mounts: named volumes, bind mounts, tmpfs.
	Volumes []ComposeVolume `json:"volumes,omitempty"`
	// The settings that widen a container's reach beyond itself.
	Privileged  bool     `json:"privileged,omitempty"`
	NetworkMode string   `json:"network_mode,omitempty"`
	Pid         string   `json:"pid,omitempty"`
	Ipc         string   `json:"ipc,omitempty"`
	Devices     []string `json:"devices,omitempty"`
	CapAdd      []string `json:"cap_add,omitempty"`
	SecurityOpt []string `json:"security_opt,omitempty"`
	// UpdateOrder is deploy.update_config.order (start-first or
	// stop-first) as declared.
	UpdateOrder string `json:"update_order,omitempty"`
	// StopGracePeriod is stop_grace_period (0 when not set: Docker's 10 s).
	StopGracePeriod time.Duration `json:"stop_grace_period,omitempty"`
}

// ComposePort is one published port of a service.
type ComposePort struct {
	Target    uint32 `json:"target"`
	Published string `json:"published,omitempty"`
	HostIP    string `json:"host_ip,omitempty"`
	Protocol  string `json:"protocol,omitempty"`
}

// ComposeVolume is one mount of a service.
type ComposeVolume struct {
	// Type is volume, bind, tmpfs, npipe or cluster.
	Type     string `json:"type"`
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// ServiceNames returns the services, sorted.
func (m *ComposeModel) ServiceNames() []string {
	out := make([]string, 0, len(m.Services))
	for name := range m.Services {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Images returns each service's image reference.
func (m *ComposeModel) Images() map[string]string {
	out := make(map[string]string, len(m.Services))
	for name, s := range m.Services {
		out[name] = s.Image
	}
	return out
}

// LabelOneShot marks a service whose containers are meant to exit
// (migrations, seeders): `berth.one-shot: "true"` in the compose file.
const LabelOneShot = "berth.one-shot"

// Completion says whether a service's containers are meant to finish.
type Completion int

// The completions, from the strictest.
const (
	// Runs: the service must keep running (it has a healthcheck, or a
	// restart policy that restarts it after a clean exit). An exit fails it.
	Runs Completion = iota
	// MayFinish: either is fine; running and stable, or exited with code
	// 0 (no healthcheck, and a restart policy of no or on-failure).
	MayFinish
	// Finishes: the service is a one-shot job that must exit with code 0:
	// another service waits for it with service_completed_successfully,
	// or it carries the berth.one-shot label.
	Finishes
)

// String names a completion as the protocol documents it.
func (c Completion) String() string {
	switch c {
	case Finishes:
		return "one-shot"
	case MayFinish:
		return "may-finish"
	}
	return "long-running"
}

// Completion says how Berth judges service svc after `up`: see the
// Completion constants. An unknown service is Runs.
func (m *ComposeModel) Completion(svc string) Completion {
	s, ok := m.Services[svc]
	if !ok {
		return Runs
	}
	if v, _ := strconv.ParseBool(s.Labels[LabelOneShot]); v {
		return Finishes
	}
	for _, other := range m.Services {
		if other.DependsOn[svc] == "service_completed_successfully" {
			return Finishes
		}
	}
	if s.Healthcheck {
		return Runs
	}
	switch r := s.Restart; {
	case r == "" || r == "no" || strings.HasPrefix(r, "on-failure"):
		return MayFinish
	}
	return Runs
}
