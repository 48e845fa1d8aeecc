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

// BenchmarkStatusUncached is P2: status with refresh:true, and the Docker
// API list + inspect.
func BenchmarkStatusUncached(b *testing.B) {
	e := newEnv(b)
	benchVariants(b, e.statusBerth(true, nil), e.dockerAPI())
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

// BenchmarkStatusThroughput is P7: cached status commands per second with
// 64 in flight, for 10 s after 3 s of warm-up, and the worker's peak RSS.
func BenchmarkStatusThroughput(b *testing.B) {
	e := newEnv(b)
	e.needApp()
	b.ResetTimer()
	r := e.statusLoad(b, 64, 3*time.Second, 10*time.Second)
	b.ReportMetric(r.perSec, "status/s")
	b.ReportMetric(float64(r.rssPeak)/(1<<20), "peak-RSS-MB")
	b.ReportMetric(float64(r.workerCPUPerCmd)/float64(time.Microsecond), "worker-CPU-µs/cmd")
	b.Log(r.cpu)
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
