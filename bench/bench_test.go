package bench

import (
	"testing"
	"time"
)

// The comparisons of the table, one benchmark each, for `go test -bench`:
// each sets up only what its rows need, then runs its variants as
// sub-benchmarks (ns/op is one request, plan, sync, deploy or logs call).
// They are not interleaved; BenchmarkTable is.

// BenchmarkStatusCached is P1: a cached status through the worker, the
// bare JetStream round trip, and `docker compose ps --format json`.
func BenchmarkStatusCached(b *testing.B) {
	e := newEnv(b)
	benchVariants(b, e.statusBerth(false, nil), e.floorRoundTrip(), e.composePS())
}

// BenchmarkStatusUncached is P2: status with refresh:true, the Docker API
// list + inspect, and the echo floor's round trip (one in flight); the row
// is (berth − echo_floor) / docker_api.
func BenchmarkStatusUncached(b *testing.B) {
	e := newEnv(b)
	benchVariants(b, e.statusBerth(true, nil), e.dockerAPI(), e.echoRoundTrip())
}

// BenchmarkDeployPlan is P3: filesync.Diff (in-process) and rsync
// --dry-run on the generated 20 000-file tree. It needs neither NATS nor
// Docker.
func BenchmarkDeployPlan(b *testing.B) {
	e := &env{tb: b}
	benchVariants(b, e.planBerth(), e.planRsync())
}

// BenchmarkDeploySync is P4: filesync.Apply (in-process) and rsync -a of
// the 50 changed files; production is put back after each run, untimed.
func BenchmarkDeploySync(b *testing.B) {
	e := &env{tb: b}
	benchVariants(b, e.syncBerth(), e.syncRsync())
}

// BenchmarkDeployEndToEnd is P5: a one-line change deployed through the
// worker (plan + confirm) and by the hand script.
func BenchmarkDeployEndToEnd(b *testing.B) {
	e := newEnv(b)
	benchVariants(b, e.deployBerth(map[string][]int64{}), e.deployHand(map[string][]int64{}))
}

// BenchmarkLogsTail is P6: 10 000 log lines through the worker, and
// `docker logs --tail 10000`.
func BenchmarkLogsTail(b *testing.B) {
	e := newEnv(b)
	benchVariants(b, e.logsBerth(), e.logsDocker())
}

// BenchmarkStatusThroughput is P7: cached status commands per second
// with 32 in flight, against the echo floor (bench/echo: the same
// JetStream round trip with nothing else) with the same load, alternated
// over 4 rounds (A B, B A, …) of 2 s warm-up and 5 s counted each; the
// ratio is the median of the rounds' Berth/echo.
func BenchmarkStatusThroughput(b *testing.B) {
	e := newEnv(b)
	e.needApp()
	b.ResetTimer()
	t := e.statusVsEcho(b, 4, 2*time.Second, 5*time.Second)
	b.ReportMetric(medianOf(t.berth, perSec), "status/s")
	b.ReportMetric(medianOf(t.echo, perSec), "echo/s")
	b.ReportMetric(100*t.ratio(), "%-of-floor")
	b.ReportMetric(medianOf(t.berth, rssPeak)/(1<<20), "peak-RSS-MB")
	b.ReportMetric(medianOf(t.berth, cpuPerCmdUS), "worker-CPU-µs/cmd")
	b.ReportMetric(medianOf(t.echo, cpuPerCmdUS), "echo-CPU-µs/cmd")
	b.Log(t.note())
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWorkerStart is P8: exec to "worker ready" and idle RSS, over
// five starts.
func BenchmarkWorkerStart(b *testing.B) {
	e := newEnv(b)
	b.ResetTimer()
	r := e.startups(b, 5, 3*time.Second)
	b.ReportMetric(float64(median(r.ready))/float64(time.Millisecond), "ready-ms")
	b.ReportMetric(float64(medianInt(r.rss))/(1<<20), "idle-RSS-MB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkStatusUnderFollows is P11: p50 and p99 of a viewer's status of
// project app, with nothing else running (a) and while another viewer's 40
// follows (follow_s 30) of another project are sent and run (b); about
// 45 s each. The table measures the cached status; refresh is the same
// with {"refresh": true}, every status asking Docker.
func BenchmarkStatusUnderFollows(b *testing.B) {
	e := newEnv(b)
	e.needApp()
	e.needTick()
	for _, v := range []struct {
		name    string
		refresh bool
	}{{"cached", false}, {"refresh", true}} {
		b.Run(v.name, func(b *testing.B) {
			r := e.statusUnderFollows(b, 5*time.Second, v.refresh)
			p99a, p99b, ratio := r.p99()
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(median(r.a)), "p50a-ms")
			b.ReportMetric(ms(p99a), "p99a-ms")
			b.ReportMetric(ms(median(r.b)), "p50b-ms")
			b.ReportMetric(ms(p99b), "p99b-ms")
			b.ReportMetric(ratio, "p99-b/a")
			b.ReportMetric(float64(r.ran), "follows-ran")
			b.ReportMetric(float64(r.refused), "follows-refused")
			b.ReportMetric(boolMetric(r.pass()), "pass")
			b.Log(followsNote(r))
			b.ReportMetric(0, "ns/op")
		})
	}
}
