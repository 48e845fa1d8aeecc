package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	natsmicro "github.com/nats-io/nats.go/micro"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/store"
)

// simOp is one operation of the fleet simulation, as its client saw it.
type simOp struct {
	id      string // request id of a command; "" for a query
	user    string
	project string
	host    string // the project's host
	action  string // a command's action, or q.<endpoint>
	start   time.Time
	latency time.Duration
	code    string // error code of the answer; "" when ok
	retried bool   // a query sent again after no answer
}

// TestFleetSimulation is benchmark row P10 and a test: three workers as
// three hosts (race-built processes on one Docker Engine) on a 3-node
// NATS cluster with three replicas, 100 projects spread over them, and
// 10 000 mixed commands and queries (status, history, config.get and
// config.set commands; status, config and history queries) from 20
// clients that never name a host. One worker, chosen by the seed, is
// killed (SIGKILL) mid-run and restarted.
//
// Every command is executed exactly once, by its project's host (its
// "command done" log lines, and one history entry per config.set), and
// ends with exactly one result event; every query is answered by the
// owner, or with unavailable while the owner is down. Per-host
// throughput and p50/p99 are logged; bench/fleet.sh runs it without the
// race detector for the numbers of bench/README.md.
//
// BERTH_SIM_SEED replays a run; BERTH_SIM_OPS changes the operation count.
func TestFleetSimulation(t *testing.T) {
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("BERTH_SIM_SEED"), 10, 64); err == nil {
		seed = s
	}
	total := 10_000
	if n, err := strconv.Atoi(os.Getenv("BERTH_SIM_OPS")); err == nil && n > 0 {
		total = n
	}
	const clients, nprojects = 20, 100
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	t.Logf("seed %d (BERTH_SIM_SEED=%d replays it), %d operations", seed, seed, total)
	began := time.Now()

	cluster := testenv.StartNATSCluster(t, 3)
	h := newHarnessWith(t, harnessOptions{NATSURL: cluster.URLs(), Host: "sim1", Replicas: 3})
	h.stop()
	hosts := []*fleetHost{{name: "sim1"}, {name: "sim2"}, {name: "sim3"}}
	procs := map[string][]*proc{}
	for _, fh := range hosts {
		fh.state = t.TempDir()
		startFleetHost(h, fh, "--replicas", "3", "--log-level", "info")
		procs[fh.name] = append(procs[fh.name], fh.p)
	}

	// 100 projects, round robin over the hosts, configured by 20 clients.
	projects := make([]string, nprojects)
	hostOf := map[string]string{}
	dirOf := map[string]string{}
	for i := range projects {
		pr := fmt.Sprintf("sim%03d", i)
		projects[i], hostOf[pr] = pr, hosts[i%len(hosts)].name
		dir := filepath.Join(h.cfg.Roots[0], "sim-"+pr)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "compose.yml"), []byte("services:\n  app:\n    image: "+pr+"-bare:latest\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		dirOf[pr] = dir
	}
	configArgs := func(pr string) json.RawMessage {
		b, _ := json.Marshal(map[string]any{"workspace": dirOf[pr], "production": dirOf[pr], "compose_project": pr + "-bare",
			"strategy": "symlink", "host": hostOf[pr]})
		return b
	}
	setup := make([]*simClient, 20)
	for i := range setup {
		setup[i] = newSimClient(t, h, cluster.URLs(), fmt.Sprintf("sim:setup%d", i))
	}
	var setupErr atomic.Value
	var wg sync.WaitGroup
	for i, c := range setup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < nprojects; j += len(setup) {
				pr := projects[j]
				res, err := c.command(pr, events.ActionConfigSet, fmt.Sprintf("setup-%s", pr), configArgs(pr), 2*time.Minute)
				if err == nil && (res.OK == nil || !*res.OK) {
					err = fmt.Errorf("config.set %s: %+v", pr, res.Error)
				}
				if err != nil {
					setupErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := setupErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	setupTook := time.Since(began)

	// 20 clients, each sending one operation at a time.
	var done atomic.Int64
	opsCh := make(chan simOp, total)
	runStart := time.Now()
	for i := range clients {
		c := newSimClient(t, h, cluster.URLs(), fmt.Sprintf("sim:c%02d", i))
		crng := rand.New(rand.NewPCG(uint64(seed), uint64(100+i)))
		n := total / clients
		if i < total%clients {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				pr := projects[crng.IntN(nprojects)]
				op := simOp{project: pr, host: hostOf[pr], user: c.user, start: time.Now()}
				var err error
				switch r := crng.IntN(100); {
				case r < 20:
					op.action = "q." + []string{"status", "config", "history"}[crng.IntN(3)]
					op.code, op.retried, err = c.query(pr, strings.TrimPrefix(op.action, "q."))
				default:
					op.action = events.ActionStatus
					var a json.RawMessage
					switch {
					case r < 30:
						op.action, a = events.ActionConfigSet, configArgs(pr)
					case r < 50:
						op.action = events.ActionConfigGet
					case r < 70:
						op.action = events.ActionHistory
					}
					op.id = fmt.Sprintf("sim-%02d-%05d", i, j)
					var res events.Event
					if res, err = c.command(pr, op.action, op.id, a, 3*time.Minute); err == nil && res.Error != nil {
						op.code = string(res.Error.Code)
					}
				}
				if err != nil {
					t.Errorf("client %d, %s %s: %v", i, op.action, pr, err)
					return
				}
				op.latency = time.Since(op.start)
				opsCh <- op
				done.Add(1)
			}
		}()
	}

	// Kill one worker a third to a half into the run; restart it 1-3 s later.
	victim := hosts[rng.IntN(len(hosts))]
	killAt := int64(total/3 + rng.IntN(total/6+1))
	downFor := time.Duration(1000+rng.IntN(2000)) * time.Millisecond
	for done.Load() < killAt {
		time.Sleep(20 * time.Millisecond)
	}
	killedAt := time.Now()
	victim.p.kill(t)
	time.Sleep(downFor)
	restartedAt := time.Now()
	startFleetHost(h, victim, "--replicas", "3", "--log-level", "info")
	procs[victim.name] = append(procs[victim.name], victim.p)
	t.Logf("killed %s after %d operations, %v into the run; restarted it %v later, ready after %v",
		victim.name, killAt, killedAt.Sub(runStart).Round(time.Millisecond), downFor, time.Since(restartedAt).Round(time.Millisecond))
	wg.Wait()
	runTook := time.Since(runStart)
	close(opsCh)
	var ops []simOp
	for op := range opsCh {
		ops = append(ops, op)
	}
	if len(ops) != total {
		t.Fatalf("%d of %d operations completed", len(ops), total)
	}

	// What each host's processes executed: their "command done" lines, and
	// the worker (<hostname>/<pid>) each request record names.
	ranOn := map[string]map[string]int{} // request id -> host -> times
	workerTime := map[string][]time.Duration{}
	hostOfWorker := map[string]string{}
	killedWorker := map[string]bool{}
	machine, _ := os.Hostname()
	for host, ps := range procs {
		for i, p := range ps {
			w := fmt.Sprintf("%s/%d", machine, p.cmd.Process.Pid)
			hostOfWorker[w] = host
			killedWorker[w] = host == victim.name && i == 0
			for _, l := range procLogLines(p) {
				if l.Message == "command done" && strings.HasPrefix(l.RequestID, "sim-") {
					workerTime[l.Action] = append(workerTime[l.Action], time.Duration(l.Duration)*time.Millisecond)
					if ranOn[l.RequestID] == nil {
						ranOn[l.RequestID] = map[string]int{}
					}
					ranOn[l.RequestID][host]++
				}
			}
		}
	}
	history := historyCounts(t, h, projects)
	results := map[string]uint64{}
	for _, pr := range projects {
		for id, n := range storedResultsOf(t, h, pr, "sim-") {
			results[id] += n
		}
	}
	st, err := store.New(store.Config{URL: h.cfg.RedisURL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var twice, lost, elsewhere, failed, unavailable, retried, cutByKill int
	for _, op := range ops {
		if op.id == "" {
			switch {
			case op.code == string(events.CodeUnavailable) && op.host == victim.name:
				unavailable++
			case op.code != "":
				failed++
				t.Errorf("query %s of %s (host %s): %s", op.action, op.project, op.host, op.code)
			}
			if op.retried {
				retried++
			}
			continue
		}
		if op.code != "" {
			failed++
			t.Errorf("command %s %s of %s (host %s): %s", op.id, op.action, op.project, op.host, op.code)
		}
		n := 0
		for host, k := range ranOn[op.id] {
			n += k
			if host != op.host {
				elsewhere++
				t.Errorf("command %s of %s (host %s) ran on %s", op.id, op.project, op.host, host)
			}
		}
		rec, err := st.GetRequest(ctx, op.user, op.id)
		if err != nil {
			t.Errorf("request record of %s: %v", op.id, err)
			continue
		}
		if got := hostOfWorker[rec.Worker]; rec.State != berth.RequestDone || got != op.host {
			elsewhere++
			t.Errorf("command %s of %s (host %s): record %s by %s (host %q)", op.id, op.project, op.host, rec.State, rec.Worker, got)
		}
		switch {
		case n == 0 && killedWorker[rec.Worker]:
			// Done and answered by the killed worker, which died before
			// its "command done" line; the redelivery re-published the
			// stored result.
			cutByKill++
		case n == 0:
			lost++
			t.Errorf("command %s of %s (host %s) has no execution logged", op.id, op.project, op.host)
		case n > 1:
			twice++
			t.Errorf("command %s of %s (host %s) executed %d times", op.id, op.project, op.host, n)
		}
		if op.action == events.ActionConfigSet && history[op.id] != 1 {
			t.Errorf("config.set %s: %d history entries", op.id, history[op.id])
		}
		if results[op.id] != 1 {
			t.Errorf("command %s: %d result events", op.id, results[op.id])
		}
	}

	// Per host: operations of its projects, their rate over the run, and
	// latency percentiles of commands and queries.
	t.Logf("P10: %d operations (%d clients, %d projects, 3 hosts, 3-node NATS, 3 replicas) in %v: %.0f/s; setup %v; "+
		"executed twice %d, lost %d, on another host %d, failed %d, done by the killed worker before its log line %d, "+
		"queries unavailable while %s was down %d, queries sent again %d",
		len(ops), clients, nprojects, runTook.Round(time.Millisecond), float64(len(ops))/runTook.Seconds(), setupTook.Round(time.Millisecond),
		twice, lost, elsewhere, failed, cutByKill, victim.name, unavailable, retried)
	for _, fh := range hosts {
		var cmds, queries []time.Duration
		for _, op := range ops {
			if op.host != fh.name {
				continue
			}
			if op.id == "" {
				queries = append(queries, op.latency)
			} else {
				cmds = append(cmds, op.latency)
			}
		}
		killed := ""
		if fh == victim {
			killed = " (killed and restarted)"
		}
		t.Logf("P10 %s%s: %d commands %.0f/s p50 %v p99 %v; %d queries p50 %v p99 %v",
			fh.name, killed, len(cmds), float64(len(cmds))/runTook.Seconds(), pct(cmds, 50), pct(cmds, 99),
			len(queries), pct(queries, 50), pct(queries, 99))
	}
	byAction := map[string][]time.Duration{}
	for _, op := range ops {
		byAction[op.action] = append(byAction[op.action], op.latency)
	}
	var actions []string
	for a, ds := range byAction {
		actions = append(actions, fmt.Sprintf("%s %d p50 %v p99 %v", a, len(ds), pct(ds, 50), pct(ds, 99)))
	}
	slices.Sort(actions)
	t.Logf("P10 by action (client round trip): %s", strings.Join(actions, "; "))
	actions = actions[:0]
	for a, ds := range workerTime {
		actions = append(actions, fmt.Sprintf("%s p50 %v p99 %v", a, pct(ds, 50), pct(ds, 99)))
	}
	slices.Sort(actions)
	t.Logf("P10 by action (in the worker, accepted to done): %s", strings.Join(actions, "; "))
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}

// pct is the p-th percentile of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(min(i, len(s))-1, 0)].Round(100 * time.Microsecond)
}

// simClient is one client of the simulation: its own NATS connection,
// and one subscription to the results of its user's requests.
type simClient struct {
	h    *harness
	nc   *nats.Conn
	js   jetstream.JetStream
	user string
	mu   sync.Mutex
	wait map[string]chan events.Event
}

func newSimClient(t *testing.T, h *harness, urls, user string) *simClient {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := &simClient{h: h, nc: nc, js: js, user: user, wait: map[string]chan events.Event{}}
	_, err = nc.Subscribe(h.subjects.Prefix+".evt.*."+events.UserToken(user)+".*."+string(events.KindResult), func(m *nats.Msg) {
		var ev events.Event
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		c.mu.Lock()
		ch := c.wait[ev.RequestID]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- ev:
			default:
			}
		}
	})
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// command publishes a command and waits for its result.
func (c *simClient) command(project, action, id string, a json.RawMessage, timeout time.Duration) (events.Event, error) {
	ch := make(chan events.Event, 1)
	c.mu.Lock()
	c.wait[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.wait, id)
		c.mu.Unlock()
	}()
	if err := publishRetrying(c.js, c.h.subjects.Command(project, action), events.Command{ID: id, User: c.user, Args: a}); err != nil {
		return events.Event{}, err
	}
	select {
	case ev := <-ch:
		return ev, nil
	case <-time.After(timeout):
		return events.Event{}, fmt.Errorf("no result for %s within %v", id, timeout)
	}
}

// query sends a query and returns the error code of its answer ("" when
// ok). A query that gets no answer (it reached a worker as it died) is
// sent again once, as a client would.
func (c *simClient) query(project, endpoint string) (code string, retried bool, err error) {
	body, _ := json.Marshal(events.Command{User: c.user})
	for attempt := 0; ; attempt++ {
		m, err := c.nc.Request(c.h.subjects.Prefix+".q."+project+"."+endpoint, body, 10*time.Second)
		if err != nil {
			if attempt == 0 && (errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)) {
				continue
			}
			return "", attempt > 0, err
		}
		return m.Header.Get(natsmicro.ErrorCodeHeader), attempt > 0, nil
	}
}
