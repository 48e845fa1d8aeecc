package berth

import "testing"

func TestCompletion(t *testing.T) {
	m := &ComposeModel{Services: map[string]ComposeService{
		"web":     {Healthcheck: true, DependsOn: map[string]string{"migrate": "service_completed_successfully", "cache": "service_started"}},
		"migrate": {Restart: "no"},
		"seed":    {},
		"job":     {Labels: map[string]string{LabelOneShot: "true"}, Restart: "always"},
		"worker":  {Restart: "unless-stopped"},
		"retry":   {Restart: "on-failure:3"},
		"cache":   {},
		"api":     {Healthcheck: true, Restart: "no"},
	}}
	for svc, want := range map[string]Completion{
		"web": Runs, "migrate": Finishes, "seed": MayFinish, "job": Finishes, "worker": Runs,
		"retry": MayFinish, "cache": MayFinish, "api": Runs, "unknown": Runs,
	} {
		if got := m.Completion(svc); got != want {
			t.Errorf("Completion(%s) = %v, want %v", svc, got, want)
		}
	}
	if got := m.ServiceNames(); len(got) != 8 || got[0] != "api" || got[7] != "worker" {
		t.Errorf("ServiceNames = %v", got)
	}
}
