// Package docker is Berth's berth.Engine and berth.Composer on the Docker
// Engine API (through github.com/docker/docker/client) and the Docker
// Compose v2 CLI, which it runs with an argument vector, never a shell: the
// Compose plugin binary itself when it can be found, else `docker compose`.
package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/berth-ops/berth"
)

// The labels Containers reads.
const (
	// LabelProject is the compose project label of a container.
	LabelProject = "com.docker.compose.project"
	// LabelService is the compose service label of a container.
	LabelService = "com.docker.compose.service"
	// LabelOneShot marks a service whose containers are meant to exit
	// (migrations, seeders): `berth.one-shot: "true"` in the compose file.
	LabelOneShot = berth.LabelOneShot
)

// MaxHealthLog is the number of health-check outputs Containers keeps, the
// newest ones.
const MaxHealthLog = 5

// inspectConcurrency bounds the concurrent inspects of Containers.
const inspectConcurrency = 8

// Engine is the berth.Engine of a Docker Engine and its Compose plugin.
// It is safe for concurrent use.
type Engine struct {
	cli     *client.Client
	compose []string
	// negotiate guards the one negotiation of the API version (ready).
	negotiate  sync.Mutex
	negotiated atomic.Bool
}

var _ berth.Engine = (*Engine)(nil)

// Option configures New.
type Option func(*config)

type config struct {
	compose    []string
	clientOpts []client.Opt
}

// WithComposeBinary sets the command that runs Compose, as an argument
// vector, instead of the one New finds: {"docker", "compose"} runs the
// Compose v2 plugin through the docker CLI, {"/path/to/docker-compose"} a
// Compose v2 binary (the plugin's or a standalone one). The first element
// is looked up in PATH unless it holds a slash.
func WithComposeBinary(argv ...string) Option {
	return func(c *config) { c.compose = append([]string{}, argv...) }
}

// WithClientOptions adds options to the Docker client, after
// client.FromEnv (so client.WithHost
// overrides DOCKER_HOST).
func WithClientOptions(opts ...client.Opt) Option {
	return func(c *config) { c.clientOpts = append(c.clientOpts, opts...) }
}

// New returns an Engine on the Docker Engine named by the environment
// (DOCKER_HOST, DOCKER_API_VERSION, DOCKER_CERT_PATH, DOCKER_TLS_VERIFY),
// negotiating the API version on the first request. It does not connect:
// call Ping for that.
//
// Unless WithComposeBinary says otherwise, Compose runs as the Compose v2
// plugin binary, so that it is the worker's own child (which dies with
// it): the first executable docker-compose in the docker CLI's plugin
// directories ($DOCKER_CONFIG/cli-plugins, ~/.docker/cli-plugins,
// /usr/local/lib/docker/cli-plugins, /usr/local/libexec/docker/cli-plugins,
// /usr/lib/docker/cli-plugins, /usr/libexec/docker/cli-plugins), else a
// docker-compose in PATH whose `version --short` is 2 or later, else
// `docker compose`.
func New(opts ...Option) (*Engine, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.compose == nil {
		c.compose = defaultCompose()
	}
	if len(c.compose) == 0 || c.compose[0] == "" {
		return nil, fmt.Errorf("docker: empty compose binary")
	}
	copts := append([]client.Opt{client.FromEnv}, c.clientOpts...)
	cli, err := client.NewClientWithOpts(copts...)
	if err != nil {
		return nil, fmt.Errorf("docker: client: %w", err)
	}
	return &Engine{cli: cli, compose: c.compose}, nil
}

// Close releases the client's idle connections.
func (e *Engine) Close() error { return e.cli.Close() }

// Client returns the underlying Docker client, for the operations the
// Engine does not wrap.
func (e *Engine) Client() *client.Client {
	_ = e.ready(context.Background())
	return e.cli
}

// ComposeBinary returns the argument vector that runs Compose, before its
// arguments: {"/usr/local/lib/docker/cli-plugins/docker-compose"}, or
// {"docker", "compose"} when no Compose v2 binary was found.
func (e *Engine) ComposeBinary() []string { return append([]string(nil), e.compose...) }

// Ping checks that the engine answers.
func (e *Engine) Ping(ctx context.Context) error {
	if e.negotiated.Load() {
		if _, err := e.cli.Ping(ctx); err != nil {
			return e.mapErr(err, "ping")
		}
		return nil
	}
	return e.ready(ctx)
}

// ready negotiates the API version with the engine once, before the first
// request that needs it; until it could, every such request fails as the
// ping did. The client's own lazy negotiation sets the version from
// whichever request comes first, racing with the requests running beside
// it.
func (e *Engine) ready(ctx context.Context) error {
	if e.negotiated.Load() {
		return nil
	}
	e.negotiate.Lock()
	defer e.negotiate.Unlock()
	if e.negotiated.Load() {
		return nil
	}
	ping, err := e.cli.Ping(ctx)
	if err != nil {
		return e.mapErr(err, "ping")
	}
	e.cli.NegotiateAPIVersionPing(ping)
	e.negotiated.Store(true)
	return nil
}

// Containers lists every container of a compose project, running or not,
// inspected, sorted by service then name. A container removed between the
// list and its inspect is left out.
func (e *Engine) Containers(ctx context.Context, composeProject string) ([]berth.Container, error) {
	if err := ValidateProjectName(composeProject); err != nil {
		return nil, err
	}
	list, err := e.list(ctx, composeProject)
	if err != nil {
		return nil, err
	}

	out := make([]berth.Container, len(list))
	found := make([]bool, len(list))
	errs := make([]error, len(list))
	sem := make(chan struct{}, inspectConcurrency)
	var wg sync.WaitGroup
	for i := range list {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			insp, err := e.cli.ContainerInspect(ctx, list[i].ID)
			if err != nil {
				errs[i] = err
				return
			}
			out[i], found[i] = fromInspect(insp), true
		}()
	}
	wg.Wait()

	res := out[:0]
	for i := range out {
		if errs[i] != nil {
			mapped := e.mapErr(errs[i], "inspect container "+shortID(list[i].ID))
			if isCode(mapped, codeNotFound) {
				continue // removed since the list
			}
			return nil, mapped
		}
		if found[i] {
			res = append(res, out[i])
		}
	}
	sort.Slice(res, func(i, j int) bool {
		if res[i].Service != res[j].Service {
			return res[i].Service < res[j].Service
		}
		return res[i].Name < res[j].Name
	})
	return res, nil
}

// list lists every container of a compose project, running or not.
func (e *Engine) list(ctx context.Context, composeProject string) ([]container.Summary, error) {
	if err := e.ready(ctx); err != nil {
		return nil, err
	}
	list, err := e.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelProject+"="+composeProject)),
	})
	if err != nil {
		return nil, e.mapErr(err, "list containers of "+composeProject)
	}
	return list, nil
}

// fromInspect converts an inspect response.
func fromInspect(in container.InspectResponse) berth.Container {
	c := berth.Container{}
	if in.ContainerJSONBase != nil {
		c.ID = in.ID
		c.Name = strings.TrimPrefix(in.Name, "/")
		c.ImageID = in.Image
		c.RestartCount = in.RestartCount
		if s := in.State; s != nil {
			c.State = string(s.Status)
			c.ExitCode = s.ExitCode
			c.StartedAt = parseTime(s.StartedAt)
			c.FinishedAt = parseTime(s.FinishedAt)
			if h := s.Health; h != nil {
				c.Health = string(h.Status)
				c.HealthLog = healthLog(h.Log)
			}
		}
	}
	if in.Config != nil {
		c.Image = in.Config.Image
		c.Labels = in.Config.Labels
		c.Service = in.Config.Labels[LabelService]
		c.OneShot, _ = strconv.ParseBool(in.Config.Labels[LabelOneShot])
	}
	if in.NetworkSettings != nil {
		c.Ports = ports(in.NetworkSettings.Ports)
	}
	return c
}

// healthLog returns the trimmed outputs of the newest MaxHealthLog checks,
// oldest first; an empty output reads as its exit code.
func healthLog(log []*container.HealthcheckResult) []string {
	if len(log) > MaxHealthLog {
		log = log[len(log)-MaxHealthLog:]
	}
	var out []string
	for _, r := range log {
		if r == nil {
			continue
		}
		s := strings.TrimSpace(r.Output)
		if s == "" {
			s = "exit code " + strconv.Itoa(r.ExitCode)
		}
		out = append(out, s)
	}
	return out
}

// ports returns the published ports, sorted.
func ports(pm nat.PortMap) []berth.Port {
	var out []berth.Port
	for p, bindings := range pm {
		cport, _ := strconv.ParseUint(p.Port(), 10, 16)
		for _, b := range bindings {
			hport, err := strconv.ParseUint(b.HostPort, 10, 16)
			if err != nil || hport == 0 {
				continue
			}
			out = append(out, berth.Port{HostIP: b.HostIP, HostPort: uint16(hport),
				ContainerPort: uint16(cport), Proto: p.Proto()})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.ContainerPort != b.ContainerPort {
			return a.ContainerPort < b.ContainerPort
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if a.HostIP != b.HostIP {
			return a.HostIP < b.HostIP
		}
		return a.HostPort < b.HostPort
	})
	return out
}

// parseTime parses an engine time; the engine's zero time is the zero time.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// strayName matches the name Compose gives a container while it recreates
// it ("<first 12 hex of its id>_<name>"): one left with that name is a
// recreate that was cut short (its Compose was killed).
var strayName = regexp.MustCompile(`^/?[0-9a-f]{12}_`)

// RemoveStrayContainers removes, by force, the containers of a compose
// project that an interrupted recreate left under Compose's temporary
// name; the next `docker compose up` would trip over them ("the container
// name is already in use"). It returns the names it removed.
func (e *Engine) RemoveStrayContainers(ctx context.Context, composeProject string) ([]string, error) {
	if err := ValidateProjectName(composeProject); err != nil {
		return nil, err
	}
	list, err := e.list(ctx, composeProject)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, c := range list {
		if len(c.Names) == 0 || !strayName.MatchString(c.Names[0]) {
			continue
		}
		name := strings.TrimPrefix(c.Names[0], "/")
		if err := e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
			if mapped := e.mapErr(err, "remove container "+name); !isCode(mapped, codeNotFound) {
				return removed, mapped
			}
		}
		removed = append(removed, name)
	}
	return removed, nil
}

// Stats samples a container's resource use once, without waiting for a
// second sample (the engine's one-shot stats). A missing container is
// CodeNotFound.
func (e *Engine) Stats(ctx context.Context, containerID string) (*berth.ContainerStats, error) {
	if err := e.ready(ctx); err != nil {
		return nil, err
	}
	resp, err := e.cli.ContainerStatsOneShot(ctx, containerID)
	if err != nil {
		return nil, e.mapErr(err, "stats of container "+shortID(containerID))
	}
	defer resp.Body.Close()
	var s container.StatsResponse
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("docker: stats of container %s: %w", shortID(containerID), err)
	}
	mem := s.MemoryStats.Usage
	// As docker stats: the page cache is not the container's use.
	for _, k := range []string{"inactive_file", "total_inactive_file"} {
		if v, ok := s.MemoryStats.Stats[k]; ok && v < mem {
			mem -= v
			break
		}
	}
	online := int(s.CPUStats.OnlineCPUs)
	if online == 0 {
		online = len(s.CPUStats.CPUUsage.PercpuUsage)
	}
	return &berth.ContainerStats{CPUTotal: s.CPUStats.CPUUsage.TotalUsage, SystemCPU: s.CPUStats.SystemUsage, OnlineCPUs: online,
		MemUsage: mem, MemLimit: s.MemoryStats.Limit, Read: s.Read}, nil
}
