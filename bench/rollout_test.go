package bench

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
)

// --- P9: start-first vs recreate ---

// probeRate is the requests per second P9's probe sends through the
// proxy during each deploy.
const probeRate = 50

// rolloutSide is what one side of P9 measured over its deploys.
type rolloutSide struct {
	sent, failed int
	failures     []string
}

// proxyApp brings up the proxy fixture as project of the worker; with
// startFirst false its web loses the deploy section, so that compose
// recreates it.
func (e *env) proxyApp(project string, startFirst bool) *deployable {
	tb := e.tb
	tb.Helper()
	s := testenv.SampleApp(tb, testenv.WithFixture(testenv.ProxyFixture), testenv.SampleNoUp())
	// The proxy publishes a fixed port, so that the probe reaches a
	// recreated proxy too, as the clients of a real proxy would.
	compose := filepath.Join(s.Dir, "compose.yml")
	b, err := os.ReadFile(compose)
	if err != nil {
		tb.Fatal(err)
	}
	text := strings.Replace(string(b), `"127.0.0.1::8080"`, fmt.Sprintf(`"127.0.0.1:%d:8080"`, freePort(tb)), 1)
	if !startFirst {
		text = strings.Replace(text, "order: start-first", "order: stop-first", 1)
	}
	if text == string(b) || startFirst != strings.Contains(text, "order: start-first") {
		tb.Fatalf("the proxy fixture's compose file is not as P9 expects:\n%s", b)
	}
	if err := os.WriteFile(compose, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
	s.Up(tb)
	d := &deployable{sample: s, ws: filepath.Join(tb.TempDir(), "workspace"), project: project}
	copyDir(tb, s.Dir, d.ws)
	tb.Cleanup(func() { removeReleaseImages(s.Project) })
	e.configure(project, d.ws, s.Dir, s.Project)
	return d
}

// deployProbed is a one-line change of a proxy app deployed through the
// worker while a probe sends probeRate requests a second through its
// proxy; what the probe saw goes to side (timed rounds only: the warm
// round's deploy is the one that changes the order).
func (e *env) deployProbed(name string, d *deployable, side *rolloutSide, warm int) variant {
	round := 0
	return variant{name: name,
		prep: func(tb testing.TB) { writeVersion(tb, d.ws) },
		run: func(tb testing.TB) {
			probe, err := testenv.StartProbe(d.sample.Addr(tb), probeRate, 5*time.Minute)
			if err != nil {
				tb.Fatal(err)
			}
			res, err := e.cl.request(d.project, events.ActionDeploy, events.Command{User: admin}, 3*time.Minute)
			if err == nil && errCode(res) == "confirmation_required" {
				res, err = e.cl.request(d.project, events.ActionDeploy, events.Command{User: admin, Confirm: "yes"}, 3*time.Minute)
			}
			r := probe.Stop()
			if err != nil {
				tb.Fatal(err)
			}
			mustOK(tb, res)
			if dr := decode[handlers.DeployResult](tb, res.Data); !dr.Changed {
				tb.Fatalf("deploy changed nothing: %s", res.Data)
			}
			round++
			if round > warm {
				side.sent += r.Sent
				side.failed += r.Failed
				if len(side.failures) < 3 {
					side.failures = append(side.failures, r.Failures...)
				}
			}
		}}
}

// rolloutCompare is P9: the same change deployed to two proxy apps, one
// whose web rolls out start-first and one whose web compose recreates,
// interleaved, with a probe through each proxy during its deploys.
func (e *env) rolloutCompare(tb testing.TB, n int) (times [][]time.Duration, sf, rc *rolloutSide) {
	sf, rc = &rolloutSide{}, &rolloutSide{}
	a := e.proxyApp("roll-sf", true)
	b := e.proxyApp("roll-rc", false)
	times = interleave(tb, 1, n, e.deployProbed("start_first", a, sf, 1), e.deployProbed("recreate", b, rc, 1))
	return times, sf, rc
}

// BenchmarkRollout is P9 on its own.
func BenchmarkRollout(b *testing.B) {
	e := newEnv(b)
	times, sf, rc := e.rolloutCompare(b, rounds(5))
	b.ReportMetric(float64(median(times[0]).Milliseconds()), "start-first-deploy-ms")
	b.ReportMetric(float64(median(times[1]).Milliseconds()), "recreate-deploy-ms")
	b.ReportMetric(float64(sf.failed), "start-first-failed")
	b.ReportMetric(float64(rc.failed), "recreate-failed")
	b.ReportMetric(float64(sf.sent), "start-first-requests")
	b.ReportMetric(float64(rc.sent), "recreate-requests")
	b.Log(rolloutNote(sf, rc))
}

// rolloutRow is P9's line.
func rolloutRow(times [][]time.Duration, sf, rc *rolloutSide) row {
	return row{id: "P9", work: fmt.Sprintf("zero downtime: web behind a proxy, one-line change deployed %d times each way, %d requests/s through the proxy during each deploy", len(times[0]), probeRate),
		berth: fmt.Sprintf("start-first: %d of %d requests failed, deploy %s", sf.failed, sf.sent, fmtDur(median(times[0]))),
		comp:  fmt.Sprintf("recreate: %d of %d failed, deploy %s", rc.failed, rc.sent, fmtDur(median(times[1]))),
		ratio: fmtRatio(float64(median(times[0]))/float64(median(times[1]))) + " (time)", goal: "0 failed start-first",
		pass: sf.failed == 0 && sf.sent > 0}
}

func rolloutNote(sf, rc *rolloutSide) string {
	return fmt.Sprintf("P9: first failures, start-first %q; recreate %q", sf.failures, rc.failures)
}

// freePort is a loopback TCP port nothing listens on now.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
