package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePS(t *testing.T) {
	lines := `{"Name":"p-web-1","Service":"web","State":"running","Health":"healthy","ExitCode":0,"Status":"Up 2 seconds (healthy)","Labels":"a=b,c=d"}
{"Name":"p-seed-1","Service":"seed","State":"exited","Health":"","ExitCode":0,"Status":"Exited (0) 1 second ago"}
`
	array := `[{"Name":"p-web-1","Service":"web","State":"running","Health":"healthy","ExitCode":0},{"Name":"p-seed-1","Service":"seed","State":"exited","ExitCode":0}]`
	for name, out := range map[string]string{"lines": lines, "array": array} {
		ps, err := parsePS(out)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(ps) != 2 || ps[0].Service != "web" || ps[0].Health != "healthy" || ps[1].State != "exited" {
			t.Errorf("%s: %+v", name, ps)
		}
	}
	if ps, err := parsePS("\n"); err != nil || len(ps) != 0 {
		t.Errorf("empty: %v, %v", ps, err)
	}
	if _, err := parsePS("{nope"); err == nil {
		t.Error("invalid JSON: no error")
	}
}

func TestReadiness(t *testing.T) {
	services := []string{"migrate", "seed", "web", "worker"}
	oneShots := map[string]bool{"migrate": true, "seed": true}
	c := func(svc, state, health string, code int) psEntry {
		return psEntry{Name: "p-" + svc + "-1", Service: svc, State: state, Health: health, ExitCode: code}
	}
	ready := []psEntry{
		c("migrate", "exited", "", 0), c("seed", "exited", "", 0),
		c("web", "running", "healthy", 0), c("worker", "running", "", 0),
		c("dropped", "exited", "", 3), // not a service: ignored
	}
	with := func(e psEntry) []psEntry {
		out := []psEntry{}
		for _, r := range ready {
			if r.Service != e.Service {
				out = append(out, r)
			}
		}
		if e.State != "" {
			out = append(out, e)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		ps      []psEntry
		pending string // a substring of the pending list, "" for ready
		err     string // a substring of the error
	}{
		{"ready", ready, "", ""},
		{"web starting", with(c("web", "running", "starting", 0)), "p-web-1 (service web) is starting", ""},
		{"web created", with(c("web", "created", "", 0)), "is created", ""},
		{"no web", with(psEntry{Service: "web"}), "service web: no container yet", ""},
		{"migrate running", with(c("migrate", "running", "", 0)), "not exited yet", ""},
		{"migrate failed", with(c("migrate", "exited", "", 1)), "", "(service migrate) exited with code 1"},
		{"seed failed", with(c("seed", "exited", "", 2)), "", "(service seed) exited with code 2"},
		{"web unhealthy", with(c("web", "running", "unhealthy", 0)), "", "unhealthy"},
		{"worker exited 0", with(c("worker", "exited", "", 0)), "", "not a one-shot"},
		{"worker restarting", with(c("worker", "restarting", "", 1)), "", "restarting"},
		{"worker dead", with(c("worker", "dead", "", 0)), "", "dead"},
	} {
		pending, err := readiness(services, oneShots, tc.ps)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.pending == "" && len(pending) > 0:
			t.Errorf("%s: pending %v, want ready", tc.name, pending)
		case tc.pending != "" && !strings.Contains(strings.Join(pending, "; "), tc.pending):
			t.Errorf("%s: pending %v, want %q", tc.name, pending, tc.pending)
		}
	}
}

func TestProjectImage(t *testing.T) {
	for ref, want := range map[string]bool{
		"bt0123456789-app:latest":                       true,
		"bt0123456789-web":                              true,
		"berth-release/bt0123456789:web-20261204t1-abc": true,
		"berth-release/bt0123456789":                    true,
		"berth-release/bt0123456789x:web-1":             false,
		"bt0123456789x-app:latest":                      false,
		"other/bt0123456789-app:latest":                 false,
		"<none>:<none>":                                 false,
		"localhost:5000/bt0123456789-app:1":             false,
	} {
		if got := projectImage(ref, "bt0123456789"); got != want {
			t.Errorf("projectImage(%q) = %v, want %v", ref, got, want)
		}
	}
}

func TestLoopbackAddr(t *testing.T) {
	for out, want := range map[string]string{
		"127.0.0.1:32811\n":           "127.0.0.1:32811",
		"0.0.0.0:49153\n":             "127.0.0.1:49153",
		"[::]:49153\n":                "[::1]:49153",
		"0.0.0.0:49153\n[::]:49153\n": "127.0.0.1:49153",
		":0\n":                        "",
		"":                            "",
	} {
		got, err := loopbackAddr(out)
		if want == "" {
			if err == nil {
				t.Errorf("loopbackAddr(%q) = %q, want an error", out, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("loopbackAddr(%q) = %q, %v, want %q", out, got, err, want)
		}
	}
}

func TestFixtureSpecs(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Fixture{SampleFixture, RealFixture} {
		if f.HTTPService() != "web" || len(f.Services()) == 0 || len(f.Files()) == 0 {
			t.Errorf("%s: incomplete", f)
		}
		if n := len(f.OneShots()) + len(f.LongRunning()); n != len(f.Services()) {
			t.Errorf("%s: %d one-shots and long-running services, %d services", f, n, len(f.Services()))
		}
		for _, name := range append(f.Files(), f.spec().copy...) {
			if _, err := readFixtureFile(root, f, name); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}
	if got := Fixture(7).String(); got != "Fixture(7)" {
		t.Errorf("String of an unknown fixture: %q", got)
	}
}

func readFixtureFile(root string, f Fixture, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(root, f.Dir(), name))
}
