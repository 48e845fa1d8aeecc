package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/filesync"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
)

// variant is one side of a comparison: prep and after run untimed around
// each timed run.
type variant struct {
	name  string
	prep  func(tb testing.TB)
	run   func(tb testing.TB)
	after func(tb testing.TB)
}

// interleave runs warm untimed rounds, then n timed rounds of every
// variant, alternating the order round by round (A B, B A, A B, ...), and
// returns each variant's durations.
func interleave(tb testing.TB, warm, n int, vs ...variant) [][]time.Duration {
	tb.Helper()
	out := make([][]time.Duration, len(vs))
	for round := 0; round < warm+n; round++ {
		order := make([]int, len(vs))
		for i := range order {
			order[i] = i
			if round%2 == 1 {
				order[i] = len(vs) - 1 - i
			}
		}
		for _, i := range order {
			v := vs[i]
			if v.prep != nil {
				v.prep(tb)
			}
			start := time.Now()
			v.run(tb)
			d := time.Since(start)
			if v.after != nil {
				v.after(tb)
			}
			if round >= warm {
				out[i] = append(out[i], d)
			}
		}
	}
	return out
}

// benchVariants exposes variants as sub-benchmarks of b.
func benchVariants(b *testing.B, vs ...variant) {
	for _, v := range vs {
		b.Run(v.name, func(b *testing.B) {
			for range b.N {
				if v.prep != nil {
					b.StopTimer()
					v.prep(b)
					b.StartTimer()
				}
				v.run(b)
				if v.after != nil {
					b.StopTimer()
					v.after(b)
					b.StartTimer()
				}
			}
		})
	}
}

// --- P1, P2: status ---

func (e *env) needApp() *deployable {
	if e.app == nil {
		e.app = e.sampleApp("app")
	}
	return e.app
}

// statusBerth is a status command to the worker, cached or not; it counts
// the results that were not served from the cache in misses.
func (e *env) statusBerth(refresh bool, misses *atomic.Int64) variant {
	app := e.needApp()
	var args []byte
	if refresh {
		args = []byte(`{"refresh":true}`)
	}
	name := "berth"
	return variant{name: name, run: func(tb testing.TB) {
		res, err := e.cl.request(app.project, events.ActionStatus, events.Command{User: admin, Args: args}, 30*time.Second)
		if err != nil {
			tb.Fatal(err)
		}
		mustOK(tb, res)
		if misses != nil && !bytes.Contains(res.Data, []byte(`"cached":true`)) {
			misses.Add(1)
		}
	}}
}

// floorRoundTrip is the bare JetStream round trip of P1 (a).
func (e *env) floorRoundTrip() variant {
	if e.floor == nil {
		e.floor = startFloor(e.tb, e.ns)
	}
	f := e.floor
	return variant{name: "jetstream_floor", run: func(tb testing.TB) {
		if err := f.request(); err != nil {
			tb.Fatal(err)
		}
	}}
}

// composePS is `docker compose ps --format json` spawned per request, in
// the production directory, for the app's compose project.
func (e *env) composePS() variant {
	s := e.needApp().sample
	return variant{name: "compose_ps", run: func(tb testing.TB) {
		out := output(tb, s.Dir, "docker", "compose", "-p", s.Project, "-f", s.Files[0], "ps", "--format", "json")
		if !bytes.Contains(out, []byte(s.Project)) {
			tb.Fatalf("compose ps shows no container of %s: %s", s.Project, out)
		}
	}}
}

// dockerAPI lists the compose project's containers and inspects them,
// concurrently, with an in-process Docker client: what the worker asks the
// engine for on an uncached status.
func (e *env) dockerAPI() variant {
	s := e.needApp().sample
	cli := e.dockerClient()
	return variant{name: "docker_api", run: func(tb testing.TB) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+s.Project))})
		if err != nil {
			tb.Fatal(err)
		}
		if len(list) != 2 {
			tb.Fatalf("%d containers in %s, want 2", len(list), s.Project)
		}
		errs := make([]error, len(list))
		var wg sync.WaitGroup
		for i := range list {
			wg.Go(func() { _, errs[i] = cli.ContainerInspect(ctx, list[i].ID) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				tb.Fatal(err)
			}
		}
	}}
}

// --- P3, P4: the deploy engine on the generated tree ---

func (e *env) needTree() *tree {
	if e.tree == nil {
		testenv.Integration(e.tb)
		if _, err := exec.LookPath("rsync"); err != nil {
			testenv.Unavailable(e.tb, "rsync is not in PATH (apt-get install -y rsync): %v", err)
		}
		e.tree = makeTree(e.tb)
	}
	return e.tree
}

func (e *env) planBerth() variant {
	t := e.needTree()
	return variant{name: "filesync_diff", run: func(tb testing.TB) { t.checkPlan(tb, t.berthPlan(tb)) }}
}

func (e *env) planRsync() variant {
	t := e.needTree()
	return variant{name: "rsync_dry_run", run: func(tb testing.TB) {
		if n := t.rsyncPlan(tb); n != treeChanged {
			tb.Fatalf("rsync would transfer %d files, want %d", n, treeChanged)
		}
	}}
}

// syncBerth times filesync.Apply of a fresh plan (Diff, untimed); the
// first run checks the result, every run is undone after.
func (e *env) syncBerth() variant {
	t := e.needTree()
	var p *filesync.Plan
	checked := false
	return variant{name: "filesync_apply",
		prep: func(tb testing.TB) { p = t.berthPlan(tb); t.checkPlan(tb, p) },
		run:  func(tb testing.TB) { t.berthApply(tb, p) },
		after: func(tb testing.TB) {
			if !checked {
				t.checkSynced(tb)
				checked = true
			}
			t.reset(tb)
		}}
}

func (e *env) syncRsync() variant {
	t := e.needTree()
	checked := false
	return variant{name: "rsync",
		run: func(tb testing.TB) { t.rsyncApply(tb) },
		after: func(tb testing.TB) {
			if !checked {
				t.checkSynced(tb)
				checked = true
			}
			t.reset(tb)
		}}
}

// --- P5: deploy end to end ---

func (e *env) needHand() *deployable {
	if e.hand == nil {
		e.hand = e.sampleApp("")
	}
	return e.hand
}

var versionSeq atomic.Int64

func writeVersion(tb testing.TB, ws string) {
	tb.Helper()
	v := fmt.Sprintf("1.0.%d\n", versionSeq.Add(1))
	if err := os.WriteFile(filepath.Join(ws, "version.txt"), []byte(v), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// deployBerth is a one-line change deployed through the worker: the plan
// command, then the confirming command, until its result.
func (e *env) deployBerth(steps map[string][]int64) variant {
	app := e.needApp()
	return variant{name: "berth",
		prep: func(tb testing.TB) { writeVersion(tb, app.ws) },
		run: func(tb testing.TB) {
			start := time.Now()
			res, err := e.cl.request(app.project, events.ActionDeploy, events.Command{User: admin}, 3*time.Minute)
			if err != nil {
				tb.Fatal(err)
			}
			steps["(plan request)"] = append(steps["(plan request)"], time.Since(start).Milliseconds())
			start = time.Now()
			if errCode(res) != "confirmation_required" {
				tb.Fatalf("deploy plan: %+v %s", res.Error, res.Data)
			}
			res, err = e.cl.request(app.project, events.ActionDeploy, events.Command{User: admin, Confirm: "yes"}, 3*time.Minute)
			if err != nil {
				tb.Fatal(err)
			}
			mustOK(tb, res)
			dr := decode[handlers.DeployResult](tb, res.Data)
			if !dr.Changed {
				tb.Fatalf("deploy changed nothing: %s", res.Data)
			}
			steps["(confirm request)"] = append(steps["(confirm request)"], time.Since(start).Milliseconds())
			for k, v := range dr.StepsMS {
				steps[k] = append(steps[k], v)
			}
		}}
}

// handScript is what one would type without Berth: rsync with the same
// exclusions, `docker compose build`, `docker compose up -d --wait`. Its
// last output line is the milliseconds each step took.
const handScript = `set -euo pipefail
ws=$1 prod=$2 project=$3
ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
rsync -a --exclude=.git --exclude='.berth-tmp-*' --exclude=.env --exclude=node_modules/ --exclude=__pycache__/ --exclude='*.pyc' "$ws/" "$prod/"
t1=$(ms)
cd "$prod"
docker compose -p "$project" -f compose.yml build >/dev/null
t2=$(ms)
docker compose -p "$project" -f compose.yml up -d --wait >/dev/null
t3=$(ms)
echo "rsync $((t1 - t0)) build $((t2 - t1)) up $((t3 - t2))"
`

func (e *env) deployHand(steps map[string][]int64) variant {
	d := e.needHand()
	return variant{name: "hand_script",
		prep: func(tb testing.TB) { writeVersion(tb, d.ws) },
		run: func(tb testing.TB) {
			out := output(tb, "", "bash", "-c", handScript, "deploy", d.ws, d.sample.Dir, d.sample.Project)
			f := strings.Fields(string(out))
			for i := 0; i+1 < len(f); i += 2 {
				if v, err := strconv.ParseInt(f[i+1], 10, 64); err == nil {
					steps[f[i]] = append(steps[f[i]], v)
				}
			}
		}}
}

// --- P6: logs ---

func (e *env) needFlood() *floodApp {
	if e.flood == nil {
		e.flood = e.floodApp()
	}
	return e.flood
}

func (e *env) logsBerth() variant {
	f := e.needFlood()
	args := []byte(`{"service":"flood","tail":` + strconv.Itoa(floodLines) + `}`)
	return variant{name: "berth", run: func(tb testing.TB) {
		res, err := e.cl.request(f.project, events.ActionLogs, events.Command{User: admin, Args: args}, time.Minute)
		if err != nil {
			tb.Fatal(err)
		}
		mustOK(tb, res)
		lr := decode[struct {
			Count int `json:"count"`
		}](tb, res.Data)
		if lr.Count != floodLines {
			tb.Fatalf("logs returned %d lines, want %d", lr.Count, floodLines)
		}
	}}
}

func (e *env) logsDocker() variant {
	f := e.needFlood()
	return variant{name: "docker_logs", run: func(tb testing.TB) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker", "logs", "--tail", strconv.Itoa(floodLines), f.container)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Run(); err != nil {
			tb.Fatal(err)
		}
	}}
}

// --- P7: sustained cached status ---

type loadResult struct {
	perSec          float64
	done            int64
	elapsed         time.Duration
	rssPeak, rssEnd int64
	rssBefore       int64
	// cpu says how many cores each process used during the window;
	// workerCPUPerCmd is the worker's CPU time per status command.
	cpu             string
	workerCPUPerCmd time.Duration
}

// statusLoad keeps conc cached status commands in flight (each publishes,
// waits for its result, publishes the next) for warm, then counts the
// results during dur while sampling the worker's RSS every 100 ms.
func (e *env) statusLoad(tb testing.TB, conc int, warm, dur time.Duration) loadResult {
	tb.Helper()
	app := e.needApp()
	nc, js := newNATSConn(tb, e.ns, "bench-load")
	subj := events.NewSubjects("berth")
	var waiters sync.Map
	sub, err := nc.Subscribe(subj.Prefix+".evt."+app.project+".*.result", func(m *nats.Msg) {
		id := strings.Split(m.Subject, ".")[3]
		if ch, ok := waiters.LoadAndDelete(id); ok {
			ch.(chan *nats.Msg) <- m
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}

	var r loadResult
	r.rssBefore, _ = rssBytes(e.w.pid())
	sampleRSS := func() {
		if rss, err := rssBytes(e.w.pid()); err == nil {
			r.rssPeak = max(r.rssPeak, rss)
			r.rssEnd = rss
		}
	}
	var done atomic.Int64
	stop := make(chan struct{})
	errc := make(chan error, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := e.cl.newID()
				ch := make(chan *nats.Msg, 1)
				waiters.Store(id, ch)
				msg := &nats.Msg{Subject: subj.Command(app.project, events.ActionStatus), Header: nats.Header{},
					Data: []byte(`{"id":"` + id + `","user":"` + admin + `"}`)}
				msg.Header.Set(jetstream.MsgIDHeader, id)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := js.PublishMsg(ctx, msg)
				cancel()
				if err != nil {
					errc <- err
					return
				}
				select {
				case m := <-ch:
					if !bytes.Contains(m.Data, []byte(`"ok":true`)) {
						errc <- fmt.Errorf("status not ok: %s", m.Data)
						return
					}
					done.Add(1)
				case <-time.After(60 * time.Second):
					errc <- fmt.Errorf("no result for %s within 60s", id)
					return
				}
			}
		})
	}
	fail := func(err error) {
		close(stop)
		wg.Wait()
		tb.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(warm); time.Now().Before(end); {
		select {
		case err := <-errc:
			fail(err)
		case <-tick.C:
			sampleRSS()
		}
	}
	cpu := newCPUMeter(map[string]int{"worker": e.w.pid(), "redis-server": findRedisPID(e.redisURL),
		"bench process (nats-server + load)": os.Getpid()})
	n0, t0 := done.Load(), time.Now()
	for time.Since(t0) < dur {
		select {
		case err := <-errc:
			fail(err)
		case <-tick.C:
			sampleRSS()
		}
	}
	r.done, r.elapsed = done.Load()-n0, time.Since(t0)
	r.perSec = float64(r.done) / r.elapsed.Seconds()
	r.cpu = cpu.report("worker", "redis-server", "bench process (nats-server + load)")
	if r.done > 0 {
		r.workerCPUPerCmd = cpu.used("worker") / time.Duration(r.done)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		tb.Fatal(err)
	default:
	}
	return r
}

// --- P8: start and idle ---

type startResult struct {
	ready []time.Duration
	rss   []int64
}

// startups starts n workers one after the other (fresh state directory,
// the same NATS and Redis): the time from exec to the "worker ready" line,
// and VmRSS settle after it, idle.
func (e *env) startups(tb testing.TB, n int, settle time.Duration) startResult {
	tb.Helper()
	var r startResult
	for range n {
		p := e.startWorker(tb)
		r.ready = append(r.ready, p.readyIn)
		time.Sleep(settle)
		rss, err := rssBytes(p.pid())
		if err != nil {
			tb.Fatal(err)
		}
		r.rss = append(r.rss, rss)
		p.stop(tb)
	}
	return r
}
