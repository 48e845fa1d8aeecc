package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// Docker's defaults for what a healthcheck leaves out.
const (
	defaultHealthInterval = 30 * time.Second
	defaultHealthRetries  = 3
)

// ComposeModel reads what the compose files of spec declare, as
// `docker compose -p P -f F... config --format json` run in spec.Dir
// resolves them (interpolated with the project directory's .env, merged,
// with the active profiles' services). A service that only has `build:`
// runs the image Compose v2 names "<project>-<service>" (no tag: the
// engine reads it as :latest).
//
// A compose file that is missing or does not load is a CodeBadRequest
// error carrying Compose's message, and so are compose files that declare
// no service or a service with neither an image nor a build. Running
// Compose fails as Compose does (CodeDockerUnavailable, CodeTimeout).
func (e *Engine) ComposeModel(ctx context.Context, spec berth.ComposeSpec) (*berth.ComposeModel, error) {
	out := &limitBuffer{max: maxCapture}
	err := e.runCompose(ctx, spec, out, nil, "config", "--format", "json")
	var exit *composeExit
	if errors.As(err, &exit) {
		return nil, events.Errorf(events.CodeBadRequest, "the compose files do not load: %s", exit.output()).
			WithHint(fmt.Sprintf("fix the compose files; `docker compose %s config` in %s shows the same error",
				fileFlags(spec.Files), spec.Dir)).
			With("exit_code", exit.code)
	}
	if err != nil {
		return nil, err
	}
	if out.dropped > 0 {
		return nil, events.Errorf(events.CodeBadRequest, "the resolved compose configuration is larger than %d MiB", maxCapture>>20).
			WithHint("split the project, or trim its compose files")
	}
	return parseComposeModel(out.buf, spec.Project)
}

// composeConfig is the part of `docker compose config --format json`
// (Compose 2.26) that the model reads.
type composeConfig struct {
	Name     string                          `json:"name"`
	Services map[string]composeServiceConfig `json:"services"`
}

type composeServiceConfig struct {
	Image       string          `json:"image"`
	Build       json.RawMessage `json:"build"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval"`
		StartPeriod string   `json:"start_period"`
		Retries     *int     `json:"retries"`
		Disable     bool     `json:"disable"`
	} `json:"healthcheck"`
	Restart   string `json:"restart"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Labels        map[string]string `json:"labels"`
	ContainerName string            `json:"container_name"`
	Scale         *int              `json:"scale"`
	Deploy        *struct {
		Replicas     *int `json:"replicas"`
		UpdateConfig *struct {
			Order string `json:"order"`
		} `json:"update_config"`
	} `json:"deploy"`
	Ports []struct {
		Target    uint32 `json:"target"`
		Published string `json:"published"`
		HostIP    string `json:"host_ip"`
		Protocol  string `json:"protocol"`
	} `json:"ports"`
	Volumes []struct {
		Type     string `json:"type"`
		Source   string `json:"source"`
		Target   string `json:"target"`
		ReadOnly bool   `json:"read_only"`
	} `json:"volumes"`
	Privileged      bool            `json:"privileged"`
	NetworkMode     string          `json:"network_mode"`
	Pid             string          `json:"pid"`
	Ipc             string          `json:"ipc"`
	Devices         []composeDevice `json:"devices"`
	CapAdd          []string        `json:"cap_add"`
	SecurityOpt     []string        `json:"security_opt"`
	StopGracePeriod string          `json:"stop_grace_period"`
}

// composeDevice is a device mapping as "source:target[:permissions]".
// Compose 2.26 writes devices as objects; earlier versions as the strings
// of the compose file's short syntax.
type composeDevice string

func (d *composeDevice) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if !strings.Contains(s, ":") {
			s += ":" + s // "/dev/x" maps the device to itself
		}
		*d = composeDevice(s)
		return nil
	}
	var o struct {
		Source      string `json:"source"`
		Target      string `json:"target"`
		Permissions string `json:"permissions"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("device %s: neither a string nor a device object", b)
	}
	s = o.Source + ":" + o.Target
	if o.Target == "" {
		s = o.Source + ":" + o.Source
	}
	if o.Permissions != "" {
		s += ":" + o.Permissions
	}
	*d = composeDevice(s)
	return nil
}

// parseComposeModel reads a model from the JSON of
// `docker compose config --format json`; project names the images of
// build-only services when the JSON has no name.
func parseComposeModel(data []byte, project string) (*berth.ComposeModel, error) {
	var cfg composeConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, unreadableConfig(err)
	}
	if cfg.Name != "" {
		project = cfg.Name
	}
	if len(cfg.Services) == 0 {
		return nil, events.Errorf(events.CodeBadRequest, "the compose files declare no service").
			WithHint("add a service to the compose files (or activate its profile)")
	}
	m := &berth.ComposeModel{Name: project, Services: make(map[string]berth.ComposeService, len(cfg.Services))}
	var imageless []string
	for name, sc := range cfg.Services {
		s, err := sc.service(name, project)
		if err != nil {
			return nil, unreadableConfig(err)
		}
		if s.Image == "" {
			imageless = append(imageless, name)
		}
		m.Services[name] = s
	}
	if len(imageless) > 0 {
		sort.Strings(imageless)
		return nil, events.Errorf(events.CodeBadRequest, "services %s have neither an image nor a build", strings.Join(imageless, ", ")).
			WithHint("give each service an `image:` or a `build:`")
	}
	return m, nil
}

// unreadableConfig is the error of a compose configuration the model
// cannot read.
func unreadableConfig(err error) error {
	return events.Errorf(events.CodeInternal, "read the output of docker compose config --format json: %v", err).
		WithHint("the installed Docker Compose writes its configuration in a form Berth does not know; " +
			"check that it is Compose v2 (`docker compose version`)")
}

// service converts the configuration of service name of project.
func (sc *composeServiceConfig) service(name, project string) (berth.ComposeService, error) {
	s := berth.ComposeService{
		Name:          name,
		Image:         sc.Image,
		Build:         len(sc.Build) > 0 && string(sc.Build) != "null",
		Restart:       sc.Restart,
		Labels:        sc.Labels,
		ContainerName: sc.ContainerName,
		Replicas:      1,
		Privileged:    sc.Privileged,
		NetworkMode:   sc.NetworkMode,
		Pid:           sc.Pid,
		Ipc:           sc.Ipc,
		CapAdd:        sc.CapAdd,
		SecurityOpt:   sc.SecurityOpt,
	}
	if s.Image == "" && s.Build {
		s.Image = project + "-" + name
	}
	if hc := sc.Healthcheck; hc != nil && !hc.Disable && (len(hc.Test) == 0 || hc.Test[0] != "NONE") {
		s.Healthcheck = true
		interval, err := parseDuration(hc.Interval, defaultHealthInterval)
		if err != nil {
			return s, fmt.Errorf("service %s: healthcheck interval: %w", name, err)
		}
		start, err := parseDuration(hc.StartPeriod, 0)
		if err != nil {
			return s, fmt.Errorf("service %s: healthcheck start_period: %w", name, err)
		}
		retries := defaultHealthRetries
		if hc.Retries != nil && *hc.Retries > 0 {
			retries = *hc.Retries
		}
		s.HealthTimeout = start + interval*time.Duration(retries)
	}
	if len(sc.DependsOn) > 0 {
		s.DependsOn = make(map[string]string, len(sc.DependsOn))
		for dep, d := range sc.DependsOn {
			s.DependsOn[dep] = d.Condition
			if d.Condition == "" {
				s.DependsOn[dep] = "service_started"
			}
		}
	}
	switch {
	case sc.Scale != nil:
		s.Replicas = *sc.Scale
	case sc.Deploy != nil && sc.Deploy.Replicas != nil:
		s.Replicas = *sc.Deploy.Replicas
	}
	if sc.Deploy != nil && sc.Deploy.UpdateConfig != nil {
		s.UpdateOrder = sc.Deploy.UpdateConfig.Order
	}
	for _, p := range sc.Ports {
		s.Ports = append(s.Ports, berth.ComposePort{Target: p.Target, Published: p.Published, HostIP: p.HostIP, Protocol: p.Protocol})
	}
	for _, v := range sc.Volumes {
		s.Volumes = append(s.Volumes, berth.ComposeVolume{Type: v.Type, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly})
	}
	for _, d := range sc.Devices {
		s.Devices = append(s.Devices, string(d))
	}
	var err error
	if s.StopGracePeriod, err = parseDuration(sc.StopGracePeriod, 0); err != nil {
		return s, fmt.Errorf("service %s: stop_grace_period: %w", name, err)
	}
	return s, nil
}

// parseDuration parses a duration of the compose JSON ("1m30s"); "" and
// "0s" are def.
func parseDuration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d == 0 {
		return def, nil
	}
	return d, nil
}
