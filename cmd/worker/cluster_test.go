package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/store"
)

// TestClusterNodeLoss runs a worker with --replicas 3 on a 3-node NATS
// cluster while publishers send a steady stream of commands (config.set,
// which records one history entry per execution, and config.get). Mid
// stream the command stream's leader is killed (SIGKILL) and restarted;
// later another node is. Every request ends with exactly one result event,
// every command is executed exactly once, none is lost.
//
// The kill points come from a printed seed; BERTH_HA_SEED replays it.
func TestClusterNodeLoss(t *testing.T) {
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("BERTH_HA_SEED"), 10, 64); err == nil {
		seed = s
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d (BERTH_HA_SEED=%d replays it)", seed, seed)
	began := time.Now()

	cluster := testenv.StartNATSCluster(t, 3)
	h := newHarnessWith(t, harnessOptions{NATSURL: cluster.URLs()})
	h.stop() // declared the streams with one replica: the process scales them to three
	p := h.startProcess("--replicas", "3")
	projects := []string{"ha1", "ha2", "ha3"}
	dirs := map[string]string{}
	for _, pr := range projects {
		dirs[pr] = h.configureBare(pr)
	}
	started := time.Since(began)

	var mu sync.Mutex
	var resultTimes []time.Time
	sub, err := h.nc.Subscribe(h.subjects.Prefix+".evt.*.*.*.result", func(*nats.Msg) {
		mu.Lock()
		resultTimes = append(resultTimes, time.Now())
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	const publishFor, pace = 12 * time.Second, 150 * time.Millisecond
	type sent struct{ project, action, id string }
	var sentMu sync.Mutex
	var all []sent
	stop := time.Now().Add(publishFor)
	var pubs sync.WaitGroup
	for i, pr := range projects {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			nc, err := nats.Connect(cluster.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			dir := dirs[pr]
			for n := 0; time.Now().Before(stop); n++ {
				s := sent{project: pr, action: events.ActionConfigGet, id: fmt.Sprintf("ha-%d-%04d", i, n)}
				cmd := events.Command{ID: s.id, User: "test:admin"}
				if n%2 == 0 {
					s.action = events.ActionConfigSet
					cmd.Args = args(t, map[string]any{"workspace": dir, "production": dir, "compose_project": pr + "-bare", "strategy": "symlink"})
				}
				if err := publishRetrying(js, h.subjects.Command(pr, s.action), cmd); err != nil {
					t.Errorf("publish %s: %v", s.id, err)
					return
				}
				sentMu.Lock()
				all = append(all, s)
				sentMu.Unlock()
				time.Sleep(pace)
			}
		}()
	}

	// Kill the command stream's leader, then restart it; later another node.
	time.Sleep(time.Duration(2000+rng.IntN(3000)) * time.Millisecond)
	leader := streamLeader(t, h.js, "BERTH_CMD")
	li := cluster.Index(leader)
	killedAt := time.Now()
	cluster.Kill(li)
	t.Logf("killed %s, the leader of BERTH_CMD, %v into the stream", leader, killedAt.Sub(stop.Add(-publishFor)).Round(time.Millisecond))
	time.Sleep(time.Duration(3000+rng.IntN(3000)) * time.Millisecond)
	cluster.Restart(li)
	cluster.WaitJetStream(li, 30*time.Second)
	t.Logf("restarted %s after %v; BERTH_CMD leader now %s", leader, time.Since(killedAt).Round(time.Millisecond), streamLeader(t, h.js, "BERTH_CMD"))
	// Then the node the worker is connected to, unless that is the node
	// just restarted: then one of the two others.
	other := (li + 1 + rng.IntN(2)) % 3
	if i := cluster.IndexURL(connectedServer(p)); i >= 0 && i != li {
		other = i
	}
	time.Sleep(time.Second)
	cluster.Kill(other)
	t.Logf("killed %s (the worker was connected to %s; BERTH_CMD leader now %s)", cluster.Nodes[other].Name(), connectedServer(p), streamLeader(t, h.js, "BERTH_CMD"))
	pubs.Wait()
	cluster.Restart(other)
	cluster.WaitJetStream(other, 30*time.Second)

	// Every request ends with exactly one result event in the stream.
	results := map[string]uint64{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		for k := range results {
			delete(results, k)
		}
		for _, pr := range projects {
			for id, n := range storedResultsOf(t, h, pr, "ha-") {
				results[id] += n
			}
		}
		missing := 0
		for _, s := range all {
			if results[s.id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests have no result", missing, len(all))
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(4 * time.Second) // AckWait: a command redelivered late would answer again
	dupResults := 0
	for _, pr := range projects {
		for id, n := range storedResultsOf(t, h, pr, "ha-") {
			if n != 1 {
				dupResults++
				t.Errorf("request %s: %d result events", id, n)
			}
		}
	}

	// Each command executed once: one "command done" per request in the
	// worker's log, one history entry per config.set.
	done := map[string]int{}
	for _, l := range procLogLines(p) {
		if l.Message == "command done" && strings.HasPrefix(l.RequestID, "ha-") {
			done[l.RequestID]++
		}
	}
	history := historyCounts(t, h, projects)
	twice, lost, sets := 0, 0, 0
	for _, s := range all {
		if done[s.id] != 1 {
			t.Errorf("request %s (%s): executed %d times", s.id, s.action, done[s.id])
			if done[s.id] > 1 {
				twice++
			} else {
				lost++
			}
		}
		if s.action == events.ActionConfigSet {
			sets++
			if history[s.id] != 1 {
				t.Errorf("config.set %s: %d history entries", s.id, history[s.id])
			}
		}
	}
	mu.Lock()
	gap, gapAt := time.Duration(0), time.Time{}
	for i := 1; i < len(resultTimes); i++ {
		if d := resultTimes[i].Sub(resultTimes[i-1]); d > gap {
			gap, gapAt = d, resultTimes[i-1]
		}
	}
	mu.Unlock()
	t.Logf("requests %d (config.set %d), results %d, executed twice %d, lost %d, duplicate results %d; "+
		"longest gap between results %v, starting %v after the leader kill; setup %v, total %v",
		len(all), sets, len(results), twice, lost, dupResults, gap.Round(time.Millisecond),
		gapAt.Sub(killedAt).Round(time.Millisecond), started.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	t.Logf("worker warnings: %v", warnings(p))
}

// connectedServer is the NATS server the worker process last said it is
// connected to.
func connectedServer(p *proc) string {
	server := ""
	for _, l := range procLogLines(p) {
		if l.Message == "worker ready" || l.Message == "nats reconnected" {
			server = l.Server
		}
	}
	return server
}

// warnings counts the worker's warning and error messages, with their
// errors.
func warnings(p *proc) map[string]int {
	out := map[string]int{}
	for _, l := range procLogLines(p) {
		if l.Level == "warn" || l.Level == "error" {
			out[strings.TrimSuffix(l.Message+": "+l.Error, ": ")]++
		}
	}
	return out
}

type procLogLine struct {
	Level     string `json:"level"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	Server    string `json:"server"`
	Error     string `json:"error"`
	Action    string `json:"action"`
	Duration  int64  `json:"duration_ms"`
}

func procLogLines(p *proc) []procLogLine {
	var out []procLogLine
	sc := bufio.NewScanner(strings.NewReader(p.output()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l procLogLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// publishRetrying publishes cmd as a client would: on an error it sends the
// same message, with the same Nats-Msg-Id, again, so the stream's dedup
// keeps it once.
func publishRetrying(js jetstream.JetStream, subject string, cmd events.Command) error {
	body, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	var last error
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, last = js.Publish(ctx, subject, body, jetstream.WithMsgID(cmd.ID))
		cancel()
		if last == nil {
			return nil
		}
	}
	return last
}

func streamLeader(t *testing.T, js jetstream.JetStream, stream string) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		s, err := js.Stream(ctx, stream)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(ctx)
		}
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			return info.Cluster.Leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader of %s: %v", stream, err)
		}
	}
}

// storedResultsOf counts the result events per request id of a project in
// BERTH_EVT. It asks again while the stream does not answer (a leader election).
func storedResultsOf(t *testing.T, h *harness, project, idPrefix string) map[string]uint64 {
	t.Helper()
	var info *jetstream.StreamInfo
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := h.js.Stream(ctx, "BERTH_EVT")
		if err == nil {
			info, err = st.Info(ctx, jetstream.WithSubjectFilter(h.subjects.Prefix+".evt."+project+".*.*."+string(events.KindResult)))
		}
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("results of %s: %v", project, err)
		}
	}
	out := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		tok := strings.Split(subj, ".")
		if id := tok[len(tok)-2]; strings.HasPrefix(id, idPrefix) {
			out[id] += n
		}
	}
	return out
}

// historyCounts counts the history entries per request id of projects.
func historyCounts(t *testing.T, h *harness, projects []string) map[string]int {
	t.Helper()
	opts, err := redis.ParseURL(h.cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	out := map[string]int{}
	for _, pr := range projects {
		raw, err := rdb.LRange(context.Background(), store.NewKeys("").History(pr), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range raw {
			var e berth.HistoryEntry
			if err := json.Unmarshal([]byte(r), &e); err != nil {
				t.Fatal(err)
			}
			out[e.RequestID]++
		}
	}
	return out
}

// A worker left at one replica on a NATS cluster says so.
func TestOneReplicaOnAClusterWarns(t *testing.T) {
	cluster := testenv.StartNATSCluster(t, 3)
	wlog := &workerLog{}
	h := newHarnessWith(t, harnessOptions{NATSURL: cluster.URLs(), Logs: wlog})
	h.stop()
	warned := false
	for _, l := range wlog.find("the NATS server is part of a cluster") {
		warned = warned || (l.level == "warn" && strings.Contains(l.msg, "--replicas 3"))
	}
	if !warned {
		t.Fatal("no warning about one replica on a cluster")
	}
}
