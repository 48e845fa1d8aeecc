package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// loadTarget is what a load runs against: the worker (Berth's cached
// status of project app) or the echo floor, each a process of its own.
type loadTarget struct {
	name    string
	prefix  string
	project string
	pid     int
}

// load keeps conc cached status commands in flight against t (each
// publishes, waits for its result, publishes the next) for warm, then
// counts the results during dur while sampling t's RSS every 100 ms.
func (e *env) load(tb testing.TB, t loadTarget, conc int, warm, dur time.Duration) loadResult {
	tb.Helper()
	nc, js := newNATSConn(tb, e.ns, "bench-load")
	subj := events.NewSubjects(t.prefix)
	var waiters sync.Map
	// <prefix>.evt.<project>.<user token>.<id>.result
	sub, err := nc.Subscribe(subj.Prefix+".evt."+t.project+"."+events.UserToken(admin)+".*.result", func(m *nats.Msg) {
		id := strings.Split(m.Subject, ".")[4]
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
	r.rssBefore, _ = rssBytes(t.pid)
	sampleRSS := func() {
		if rss, err := rssBytes(t.pid); err == nil {
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
				msg := &nats.Msg{Subject: subj.Command(t.project, events.ActionStatus), Header: nats.Header{},
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
						errc <- fmt.Errorf("%s: status not ok: %s", t.name, m.Data)
						return
					}
					done.Add(1)
				case <-time.After(60 * time.Second):
					errc <- fmt.Errorf("%s: no result for %s within 60s", t.name, id)
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
	cpu := newCPUMeter(map[string]int{t.name: t.pid, "redis-server": findRedisPID(e.redisURL),
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
	r.cpu = cpu.report(t.name, "redis-server", "bench process (nats-server + load)")
	if r.done > 0 {
		r.workerCPUPerCmd = cpu.used(t.name) / time.Duration(r.done)
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

// --- P11: status under hostile follows ---

// The users of P11: U1, a viewer of project app, asks for its status; U2,
// a viewer of project tick only, floods tick with follows.
const (
	benchU1 = "bench:u1"
	benchU2 = "bench:u2"
	// hostileFollows logs commands with follow_s = hostileFollowS.
	hostileFollows = 40
	hostileFollowS = 30
	// statusPace is the interval between the starts of U1's status
	// commands (one in flight; the next starts at once when one takes
	// longer).
	statusPace = 10 * time.Millisecond
)

// needTick brings up a second sample app as the worker's project tick
// (its services print a line every second, so a follow has lines to send).
func (e *env) needTick() *deployable {
	if e.tick == nil {
		e.tick = e.sampleApp("tick")
	}
	return e.tick
}

// followsResult is what P11 measured.
type followsResult struct {
	// a: U1's status latencies with nothing else running (before the
	// follows and after they ended); b: from U2's first follow published
	// until the last follow's result.
	a, b             []time.Duration
	aMisses, bMisses int
	// ran and refused count U2's follows by their outcome: accepted and
	// followed, or refused with conflict.
	ran, refused int
	// burst is the time from U2's first publish until every follow was
	// either accepted or refused; burstSamples are the b samples that
	// overlapped it.
	burst        time.Duration
	burstSamples []time.Duration
	// followedS is the shortest followed_s of those that ran; lines the
	// log lines U2 received, in log events.
	followedS float64
	lines     int
	bWindow   time.Duration
}

// p99 of a, b and their ratio.
func (r followsResult) p99() (a, b time.Duration, ratio float64) {
	a, b = pct(r.a, 0.99), pct(r.b, 0.99)
	return a, b, float64(b) / float64(a)
}

func (r followsResult) pass() bool {
	a, b, _ := r.p99()
	return float64(b) <= 1.5*float64(a)+float64(5*time.Millisecond)
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return quantile(s, q)
}

// statusUnderFollows is P11: U1's status of project app (cached, or with
// refresh: true), one in flight, one every statusPace, for aWindow with
// nothing else running;
// then while U2 publishes hostileFollows logs commands with follow_s
// hostileFollowS on project tick as fast as it can (asynchronous
// JetStream publishes) and until the last of them has its result; then
// for aWindow again. The follows that ran end on their own before it
// returns (they are waited out, and measured during), so the worker is
// left as it was.
func (e *env) statusUnderFollows(tb testing.TB, aWindow time.Duration, refresh bool) followsResult {
	tb.Helper()
	var statusArgs []byte
	if refresh {
		statusArgs = []byte(`{"refresh":true}`)
	}
	app, tick := e.needApp(), e.needTick()
	e.configureRoles(app.project, app.ws, app.sample.Dir, app.sample.Project, map[string]string{benchU1: "viewer"})
	e.configureRoles(tick.project, tick.ws, tick.sample.Dir, tick.sample.Project, map[string]string{benchU2: "viewer"})
	// U2 may not read app: the two users share nothing but the worker.
	res, err := e.cl.request(app.project, events.ActionStatus, events.Command{User: benchU2}, 30*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	if errCode(res) != string(events.CodeForbidden) {
		tb.Fatalf("status of %s by %s: want forbidden, got %+v", app.project, benchU2, res.Error)
	}

	var r followsResult
	type sample struct {
		start time.Time
		d     time.Duration
	}
	// run samples U1's status until done says so, and counts the results
	// not served from the cache in misses.
	run := func(done func() bool, misses *int) []sample {
		var out []sample
		next := time.Now()
		for !done() {
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			next = time.Now().Add(statusPace)
			start := time.Now()
			res, err := e.cl.request(app.project, events.ActionStatus, events.Command{User: benchU1, Args: statusArgs}, 30*time.Second)
			d := time.Since(start)
			if err != nil {
				tb.Fatal(err)
			}
			mustOK(tb, res)
			if !bytes.Contains(res.Data, []byte(`"cached":true`)) {
				*misses++
			}
			out = append(out, sample{start, d})
		}
		return out
	}
	durations := func(ss []sample) []time.Duration {
		out := make([]time.Duration, len(ss))
		for i, s := range ss {
			out[i] = s.d
		}
		return out
	}
	window := func(d time.Duration) func() bool {
		end := time.Now().Add(d)
		return func() bool { return !time.Now().Before(end) }
	}
	// Warm-up, not counted: the roles were just written.
	warm := 0
	run(func() bool { warm++; return warm > 3 }, new(int))

	a1 := run(window(aWindow), &r.aMisses)

	h := e.startHostile(tb, tick.project)
	b := run(h.finished, &r.bMisses)
	hr := h.wait(tb)
	r.bWindow = time.Since(h.start)

	a2 := run(window(aWindow), &r.aMisses)

	r.a = append(durations(a1), durations(a2)...)
	r.b = durations(b)
	r.ran, r.refused, r.lines, r.followedS = hr.ran, hr.refused, hr.lines, hr.followedS
	r.burst = hr.settled.Sub(h.start)
	for _, s := range b {
		if s.start.Before(hr.settled) && s.start.Add(s.d).After(h.start) {
			r.burstSamples = append(r.burstSamples, s.d)
		}
	}
	return r
}

// hostile is U2: hostileFollows follows of one project, published at once.
type hostile struct {
	start time.Time
	done  chan struct{}

	mu  sync.Mutex // guards res and err
	res hostileResult
	err error
}

type hostileResult struct {
	ran, refused, lines int
	followedS           float64
	// settled is when the last follow was accepted or refused.
	settled time.Time
}

func (h *hostile) finished() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

func (h *hostile) wait(tb testing.TB) hostileResult {
	tb.Helper()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		tb.Fatal(h.err)
	}
	return h.res
}

// startHostile subscribes to U2's events of project, publishes the
// follows asynchronously, and returns; done is closed once every follow
// has its result (or on an error).
func (e *env) startHostile(tb testing.TB, project string) *hostile {
	tb.Helper()
	nc, js := newNATSConn(tb, e.ns, "bench-hostile")
	subj := events.NewSubjects("berth")
	h := &hostile{done: make(chan struct{})}
	type state struct{ accepted, result bool }
	mu := &h.mu
	cmds := map[string]*state{}
	settled, results := 0, 0
	var fail error
	finish := func(err error) { // with mu held
		if fail == nil && err != nil {
			fail = err
		}
		select {
		case <-h.done:
		default:
			h.err = fail
			close(h.done)
		}
	}
	// <prefix>.evt.<project>.<user token>.<id>.<kind>
	sub, err := nc.Subscribe(subj.Prefix+".evt."+project+"."+events.UserToken(benchU2)+".>", func(m *nats.Msg) {
		tok := strings.Split(m.Subject, ".")
		if len(tok) != 6 {
			return
		}
		id, kind := tok[4], events.Kind(tok[5])
		mu.Lock()
		defer mu.Unlock()
		st := cmds[id]
		if st == nil || fail != nil {
			return
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			finish(fmt.Errorf("undecodable event %s: %v", m.Subject, err))
			return
		}
		switch kind {
		case events.KindAccepted:
			st.accepted = true
			settled++
		case events.KindLog:
			h.res.lines += len(ev.Lines)
		case events.KindResult:
			st.result = true
			results++
			switch {
			case ev.OK != nil && *ev.OK && st.accepted:
				var lr struct {
					FollowedS float64 `json:"followed_s"`
				}
				if err := json.Unmarshal(ev.Data, &lr); err != nil {
					finish(err)
					return
				}
				if h.res.ran == 0 || lr.FollowedS < h.res.followedS {
					h.res.followedS = lr.FollowedS
				}
				h.res.ran++
			case errCode(ev) == string(events.CodeConflict) && !st.accepted:
				h.res.refused++
				settled++
			default:
				finish(fmt.Errorf("follow %s: unexpected result %+v, data %s", id, ev.Error, ev.Data))
				return
			}
		}
		if settled == hostileFollows && h.res.settled.IsZero() {
			h.res.settled = time.Now()
		}
		if results == hostileFollows {
			finish(nil)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	tag := randomHex(tb, 4)
	args := []byte(`{"service":"web","follow_s":` + strconv.Itoa(hostileFollowS) + `}`)
	msgs := make([]*nats.Msg, hostileFollows)
	mu.Lock()
	for i := range msgs {
		id := "h" + tag + "-" + strconv.Itoa(i)
		cmds[id] = &state{}
		msgs[i] = &nats.Msg{Subject: subj.Command(project, events.ActionLogs), Header: nats.Header{},
			Data: mustJSON(tb, events.Command{ID: id, User: benchU2, Args: args})}
		msgs[i].Header.Set(jetstream.MsgIDHeader, id)
	}
	mu.Unlock()
	h.start = time.Now()
	go func() {
		var acks []jetstream.PubAckFuture
		for _, m := range msgs {
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				mu.Lock()
				finish(err)
				mu.Unlock()
				return
			}
			acks = append(acks, f)
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				mu.Lock()
				finish(fmt.Errorf("publish a follow: %w", err))
				mu.Unlock()
				return
			case <-time.After(30 * time.Second):
				mu.Lock()
				finish(errors.New("no PubAck for a follow within 30s"))
				mu.Unlock()
				return
			}
		}
		// Every follow ends after follow_s; its result comes within the
		// worker's read timeout after that.
		select {
		case <-h.done:
		case <-time.After(hostileFollowS*time.Second + 90*time.Second):
			mu.Lock()
			finish(fmt.Errorf("%d of %d follows have no result %ds after they were sent", hostileFollows-results, hostileFollows, hostileFollowS+90))
			mu.Unlock()
		}
		_ = sub.Unsubscribe()
	}()
	return h
}
