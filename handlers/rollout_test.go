package handlers

import (
	"slices"
	"strings"
	"testing"

	"github.com/berth-ops/berth"
)

func TestStartFirstChoices(t *testing.T) {
	sf := func(s berth.ComposeService) berth.ComposeService {
		s.UpdateOrder, s.Replicas = "start-first", 1
		return s
	}
	model := &berth.ComposeModel{Services: map[string]berth.ComposeService{
		"web":     sf(berth.ComposeService{Name: "web", Healthcheck: true, Ports: []berth.ComposePort{{Target: 8080, HostIP: "127.0.0.1"}}, DependsOn: map[string]string{"migrate": "service_completed_successfully"}}),
		"api":     sf(berth.ComposeService{Name: "api", DependsOn: map[string]string{"web": "service_started"}}),
		"fixed":   sf(berth.ComposeService{Name: "fixed", Ports: []berth.ComposePort{{Target: 80, Published: "8080"}}}),
		"named":   sf(berth.ComposeService{Name: "named", ContainerName: "named"}),
		"job":     sf(berth.ComposeService{Name: "job", Labels: map[string]string{berth.LabelOneShot: "true"}}),
		"db":      sf(berth.ComposeService{Name: "db", Volumes: []berth.ComposeVolume{{Type: "volume", Source: "pg", Target: "/var/lib/postgresql"}}}),
		"ro":      sf(berth.ComposeService{Name: "ro", Volumes: []berth.ComposeVolume{{Type: "volume", Source: "assets", Target: "/assets", ReadOnly: true}}}),
		"migrate": {Name: "migrate", Restart: "no", Replicas: 1},
		"proxy":   {Name: "proxy", Replicas: 1, DependsOn: map[string]string{"api": "service_started"}},
		"plain":   {Name: "plain", Replicas: 1},
	}}
	p := &berth.Project{Name: "po"}
	roll, refused := startFirst(p, model)
	if want := []string{"api", "ro", "web"}; !slices.Equal(roll, want) {
		t.Errorf("start-first %v, want %v", roll, want)
	}
	why := map[string]string{}
	for _, r := range refused {
		why[r.Service] = r.Reason
	}
	for svc, word := range map[string]string{"fixed": "fixed host port 8080", "named": "container_name", "job": "one-shot", "db": "start_first_with_volumes"} {
		if !strings.Contains(why[svc], word) {
			t.Errorf("%s refused with %q, want it to say %q", svc, why[svc], word)
		}
	}
	// The project allows db's volume.
	p.StartFirstWithVolumes = []string{"db"}
	if roll, _ = startFirst(p, model); !slices.Contains(roll, "db") {
		t.Errorf("db not start-first with start_first_with_volumes: %v", roll)
	}

	rp := rolloutPlan(&berth.Project{}, model)
	if !slices.Equal(rp.Recreate, []string{"db", "fixed", "named", "plain", "proxy"}) || !slices.Equal(rp.OneShots, []string{"job", "migrate"}) {
		t.Errorf("rollout plan %+v", rp)
	}
	if got := dependencyOrder(model, []string{"api", "web"}); !slices.Equal(got, []string{"web", "api"}) {
		t.Errorf("dependency order %v", got)
	}
	if !dependsOnAny(model, "proxy", []string{"web"}) || dependsOnAny(model, "plain", []string{"web"}) || dependsOnAny(model, "web", []string{"api"}) {
		t.Error("dependsOnAny")
	}
}
