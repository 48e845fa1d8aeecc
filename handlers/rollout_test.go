package handlers

import (
	"slices"
	"strings"
	"testing"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/state"
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

// TestSettleRollouts: a rollout cut short before its old containers went
// gets them back (on their networks, the new ones off theirs and
// removed); one that had begun removing them finishes; ended ones are
// left alone. The journal records each outcome.
func TestSettleRollouts(t *testing.T) {
	f := newOpFixture(t)
	f.engine.containers = []berth.Container{
		{ID: "old1", Service: "web", State: "running"}, {ID: "new1", Service: "web", State: "running"},
		{ID: "new2", Service: "api", State: "running"}, // api's old one is gone already
		{ID: "done1", Service: "worker", State: "running"},
	}
	nets := []berth.NetworkAttachment{{Network: "po_default", Aliases: []string{"web"}}}
	j := &state.Journal{Op: "deploy", RequestID: "r1", Project: *f.p, LockOwner: "r1/x", Rollouts: []state.Rollout{
		{Service: "worker", Old: []string{"w0"}, New: []string{"done1"}, Phase: state.RolloutDone},
		{Service: "web", Old: []string{"old1"}, New: []string{"new1"}, Phase: state.RolloutDraining, Networks: map[string][]berth.NetworkAttachment{"old1": nets}},
		{Service: "api", Old: []string{"old2"}, New: []string{"new2"}, Phase: state.RolloutDraining},
	}}
	r := &opRun{s: f.svc, op: deployOp, j: j, rep: nopReporter{}}
	if err := settleRollouts(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	calls := strings.Join(f.composer.calls, "; ")
	for _, want := range []string{"reconnect old1", "disconnect new1", "remove new1", "remove old2"} {
		if !strings.Contains(calls, want) {
			t.Errorf("calls %q lack %q", calls, want)
		}
	}
	for _, never := range []string{"remove old1", "remove new2", "remove done1", "remove w0"} {
		if strings.Contains(calls, never+";") || strings.HasSuffix(calls, never) {
			t.Errorf("calls %q include %q", calls, never)
		}
	}
	if i, k := strings.Index(calls, "reconnect old1"), strings.Index(calls, "remove new1"); i > k {
		t.Errorf("the new container was removed before the old one was back: %q", calls)
	}
	phases := []string{j.Rollouts[0].Phase, j.Rollouts[1].Phase, j.Rollouts[2].Phase}
	if !slices.Equal(phases, []string{state.RolloutDone, "reverted", state.RolloutDone}) {
		t.Errorf("phases %v", phases)
	}
	saved, err := f.state.Journal(f.prod)
	if err != nil || saved == nil || saved.Rollouts[1].Phase != "reverted" {
		t.Fatalf("journal not written: %+v, %v", saved, err)
	}
}
