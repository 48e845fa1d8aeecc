package docker

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

// fullModel is the model of testdata/compose-full.yml under project.
func fullModel(project string) *berth.ComposeModel {
	return &berth.ComposeModel{Name: project, Services: map[string]berth.ComposeService{
		"full": {
			Name: "full", Image: "example/full:1", Build: true,
			Healthcheck: true, HealthTimeout: 10*time.Second + 5*90*time.Second,
			Restart:       "unless-stopped",
			DependsOn:     map[string]string{"db": "service_healthy", "migrate": "service_completed_successfully"},
			Labels:        map[string]string{"berth.one-shot": "false", "a.b": "c"},
			ContainerName: "full-c",
			Replicas:      1,
			Ports: []berth.ComposePort{
				{Target: 80, Published: "8080", HostIP: "127.0.0.1", Protocol: "tcp"},
				{Target: 90, Published: "9090", Protocol: "udp"},
				{Target: 3000, Protocol: "tcp"},
				{Target: 443, Published: "8443", Protocol: "tcp"},
				{Target: 8081, HostIP: "127.0.0.1", Protocol: "tcp"},
			},
			Volumes: []berth.ComposeVolume{
				{Type: "volume", Source: "data", Target: "/data"},
				{Type: "bind", Source: "/srv/berth-test/src", Target: "/src", ReadOnly: true},
				{Type: "tmpfs", Target: "/tmp"},
			},
			Privileged: true, Pid: "host", Ipc: "host",
			Devices:         []string{"/dev/null:/dev/xnull:rwm", "/dev/zero:/dev/zero:rwm", "/dev/random:/dev/xrandom:r"},
			CapAdd:          []string{"NET_ADMIN", "SYS_TIME"},
			SecurityOpt:     []string{"no-new-privileges:true", "seccomp=unconfined"},
			UpdateOrder:     "start-first",
			StopGracePeriod: 90 * time.Second,
		},
		"db": {
			Name: "db", Image: "redis",
			Healthcheck: true, HealthTimeout: 3 * 30 * time.Second,
			NetworkMode: "host",
			Replicas:    0,
		},
		"migrate": {
			Name: "migrate", Image: project + "-migrate", Build: true,
			Restart:  "no",
			Labels:   map[string]string{"berth.one-shot": "true"},
			Replicas: 1,
		},
		"nohc": {
			Name: "nohc", Image: "example/nohc",
			DependsOn:       map[string]string{"db": "service_started"},
			Replicas:        1,
			StopGracePeriod: 10 * time.Second,
		},
		"scaled": {
			Name: "scaled", Image: "example/scaled",
			Healthcheck: true, HealthTimeout: 2 * 5 * time.Second,
			Restart:  "on-failure:3",
			Replicas: 3,
		},
		"replicated": {
			Name: "replicated", Image: "example/replicated",
			Replicas:        2,
			Ipc:             "shareable",
			StopGracePeriod: 2 * time.Hour,
		},
	}}
}

// checkModel compares a model with the one wanted, service by service.
func checkModel(t *testing.T, got, want *berth.ComposeModel) {
	t.Helper()
	if got.Name != want.Name || len(got.Services) != len(want.Services) {
		t.Errorf("model %q with services %q, want %q with %q", got.Name, got.ServiceNames(), want.Name, want.ServiceNames())
	}
	for name, w := range want.Services {
		if g := got.Services[name]; !reflect.DeepEqual(g, w) {
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			t.Errorf("service %s:\n got %s\nwant %s", name, gj, wj)
		}
	}
}

// TestParseComposeModel reads the JSON Compose 2.26 wrote for
// testdata/compose-full.yml.
func TestParseComposeModel(t *testing.T) {
	data, err := os.ReadFile("testdata/compose-full.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseComposeModel(data, "other")
	if err != nil {
		t.Fatal(err)
	}
	checkModel(t, m, fullModel("shapes"))
	if c := m.Completion("migrate"); c != berth.Finishes {
		t.Errorf("migrate is %v", c)
	}
}

func TestParseComposeModelForms(t *testing.T) {
	// Without a name, build-only images take the project's. Devices as
	// strings (Compose before 2.24), zero durations as Docker's defaults.
	m, err := parseComposeModel([]byte(`{"services":{
		"a":{"build":{"context":"/x"},
		     "devices":["/dev/null:/dev/x:r","/dev/zero:/dev/y","/dev/fuse"],
		     "healthcheck":{"test":["CMD","true"],"interval":"0s","retries":0,"start_period":"500ms"},
		     "stop_grace_period":"0s"},
		"b":{"image":"redis","build":null,"depends_on":{"a":{}}}}}`), "proj")
	if err != nil {
		t.Fatal(err)
	}
	checkModel(t, m, &berth.ComposeModel{Name: "proj", Services: map[string]berth.ComposeService{
		"a": {Name: "a", Image: "proj-a", Build: true, Healthcheck: true, HealthTimeout: 500*time.Millisecond + 90*time.Second,
			Replicas: 1, Devices: []string{"/dev/null:/dev/x:r", "/dev/zero:/dev/y", "/dev/fuse:/dev/fuse"}},
		"b": {Name: "b", Image: "redis", Replicas: 1, DependsOn: map[string]string{"a": "service_started"}},
	}})

	for name, c := range map[string]struct {
		json string
		code events.Code
		msg  string
	}{
		"no service":   {`{"name":"p","services":{}}`, events.CodeBadRequest, "declare no service"},
		"no services":  {`{"name":"p"}`, events.CodeBadRequest, "declare no service"},
		"no image":     {`{"services":{"b":{"build":null},"a":{"command":["x"]},"c":{"image":"x"}}}`, events.CodeBadRequest, "services a, b have neither an image nor a build"},
		"not json":     {`not json`, events.CodeInternal, "config --format json"},
		"bad duration": {`{"services":{"a":{"image":"x","stop_grace_period":"soon"}}}`, events.CodeInternal, "stop_grace_period"},
		"bad interval": {`{"services":{"a":{"image":"x","healthcheck":{"interval":"1 s"}}}}`, events.CodeInternal, "interval"},
		"bad device":   {`{"services":{"a":{"image":"x","devices":[3]}}}`, events.CodeInternal, "device"},
	} {
		_, err := parseComposeModel([]byte(c.json), "p")
		if events.ErrorCode(err) != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %s with %q", name, err, c.code, c.msg)
		}
	}
}

// TestComposeModelShapes reads testdata/compose-full.yml with the real
// Compose: the JSON it writes must still give the model of the recorded
// JSON.
func TestComposeModelShapes(t *testing.T) {
	testenv.Integration(t)
	dir := t.TempDir()
	yml, err := os.ReadFile("testdata/compose-full.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "compose.yml"), yml, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := newTestEngine(t).ComposeModel(t.Context(), berth.ComposeSpec{Dir: dir, Files: []string{"compose.yml"}, Project: "berth-shapes"})
	if events.ErrorCode(err) == events.CodeDockerUnavailable {
		testenv.Unavailable(t, "docker compose: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	checkModel(t, m, fullModel("berth-shapes"))
}
