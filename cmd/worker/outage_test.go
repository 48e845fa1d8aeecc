package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/store"
)

// The outage tests take a dependency away while the worker runs and bring
// it back: nats-server (a process restarted on the same port and store),
// Redis (a process stopped and started), the Docker Engine (reached through
// a socket proxy the test opens and closes). The worker must keep its
// promises through each, and recover by itself.

// natsServerBinary builds nats-server from the module once per test process.
var natsServerBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "berth-nats-server-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", &buildError{out: string(out), err: err}
	}
	return bin, nil
})

// natsProcess is a nats-server process with JetStream on disk, which a test
// can stop and start again on the same port and store.
type natsProcess struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	URL  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startNATSProcess(t *testing.T) *natsProcess {
	t.Helper()
	testenv.Integration(t)
	bin, err := natsServerBinary()
	if err != nil {
		testenv.Unavailable(t, "build nats-server: %v", err)
	}
	n := &natsProcess{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(func() { n.stop(syscall.SIGKILL) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	n.URL = "nats://127.0.0.1:" + strconv.Itoa(n.port)
	n.start()
	return n
}

// start runs nats-server and waits until JetStream answers.
func (n *natsProcess) start() {
	n.t.Helper()
	logf, err := os.OpenFile(filepath.Join(n.dir, "nats.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(n.bin, "-js", "-sd", filepath.Join(n.dir, "store"), "-a", "127.0.0.1", "-p", strconv.Itoa(n.port))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := n.jetStreamReady(); err == nil {
			return
		} else if time.Now().After(deadline) {
			n.t.Fatalf("nats-server did not serve JetStream within 20s: %v\n%s", err, n.log())
		}
		select {
		case <-done:
			n.t.Fatalf("nats-server exited:\n%s", n.log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *natsProcess) jetStreamReady() error {
	nc, err := nats.Connect(n.URL, nats.Timeout(500*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// stop signals the server and waits for it to exit.
func (n *natsProcess) stop(sig syscall.Signal) {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
}

func (n *natsProcess) log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "nats.log"))
	return string(b)
}

// workerLog keeps an in-process worker's log lines, decoded, so a test
// can count what the worker did and when.
type workerLog struct {
	mu    sync.Mutex
	lines []logLine
	raw   bytes.Buffer
}

type logLine struct {
	at        time.Time
	level     string
	msg       string
	requestID string
	lane      string
	err       string
}

func (l *workerLog) Write(p []byte) (int, error) {
	var v struct {
		Level     string `json:"level"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
		Lane      string `json:"lane"`
		Error     string `json:"error"`
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raw.Write(p)
	sc := bufio.NewScanner(bytes.NewReader(p))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		v.Level, v.Message, v.RequestID, v.Lane, v.Error = "", "", "", "", ""
		if json.Unmarshal(sc.Bytes(), &v) == nil {
			l.lines = append(l.lines, logLine{at: now, level: v.Level, msg: v.Message, requestID: v.RequestID, lane: v.Lane, err: v.Error})
		}
	}
	return len(p), nil
}

// find returns the lines whose message starts with prefix.
func (l *workerLog) find(prefix string) []logLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logLine
	for _, ln := range l.lines {
		if strings.HasPrefix(ln.msg, prefix) {
			out = append(out, ln)
		}
	}
	return out
}

// warnings counts the warning and error messages after since.
func (l *workerLog) warnings(since time.Time) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, ln := range l.lines {
		if (ln.level == "warn" || ln.level == "error") && ln.at.After(since) {
			k := ln.msg
			if ln.err != "" {
				k += " (" + ln.err + ")"
			}
			out[k]++
		}
	}
	return out
}

// tail returns the last n bytes of the log.
func (l *workerLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.raw.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// subjectCounts returns how many messages of BERTH_EVT each subject
// matching filter holds.
func (h *harness) subjectCounts(filter string) map[string]uint64 {
	h.t.Helper()
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := h.js.Stream(ctx, "BERTH_EVT")
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx, jetstream.WithSubjectFilter(filter))
		}
		cancel()
		if err == nil {
			if info.State.Subjects == nil {
				return map[string]uint64{}
			}
			return info.State.Subjects
		}
		if attempt == 5 {
			h.t.Fatalf("stream info of BERTH_EVT (%s): %v", filter, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestOutageNATSRestart restarts nats-server in the middle of 1 000
// commands: every command the server acknowledged gets exactly one result,
// and is executed once.
func TestOutageNATSRestart(t *testing.T) {
	ns := startNATSProcess(t)
	wlog := &workerLog{}
	h := newHarnessWith(t, harnessOptions{NATSURL: ns.URL, Logs: wlog})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log (tail):\n%s", wlog.tail(64<<10))
			t.Logf("nats-server log:\n%s", ns.log())
		}
	})

	// Results as they arrive, to time the recovery; the stream is the
	// authority for the counts.
	var mu sync.Mutex
	var resultTimes []time.Time
	sub, err := h.nc.Subscribe(h.subjects.Event("po", "test:alice", "*", events.KindResult), func(*nats.Msg) {
		mu.Lock()
		resultTimes = append(resultTimes, time.Now())
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	const total = 1000
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("outage-%04d", i)
	}
	var acked, retried atomic.Int64
	pubDone := make(chan error, 1)
	go func() {
		subject := h.subjects.Command("po", events.ActionHistory)
		for _, id := range ids {
			body := []byte(`{"id":"` + id + `","user":"test:alice","args":{"limit":1}}`)
			for attempt := 0; ; attempt++ {
				msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
				msg.Header.Set(jetstream.MsgIDHeader, id)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := h.js.PublishMsg(ctx, msg)
				cancel()
				if err == nil {
					break
				}
				if attempt == 300 {
					pubDone <- fmt.Errorf("publish %s: gave up after %d attempts: %w", id, attempt, err)
					return
				}
				retried.Add(1)
				time.Sleep(50 * time.Millisecond)
			}
			// No pause between commands: the worker has a backlog, so
			// the restart finds commands fetched, in work and unacked.
			acked.Add(1)
		}
		pubDone <- nil
	}()

	// Restart the server in the middle of the flow.
	for acked.Load() < total*2/5 {
		select {
		case err := <-pubDone:
			t.Fatalf("publisher ended early: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	mu.Lock()
	resultsBefore := len(resultTimes)
	mu.Unlock()
	down := time.Now()
	ns.stop(syscall.SIGTERM)
	stopped := time.Now()
	time.Sleep(time.Second) // commands keep coming while the server is away
	ns.start()
	up := time.Now()
	t.Logf("nats-server restarted after %d acked commands and %d results: stop took %v, down for %v",
		acked.Load(), resultsBefore, stopped.Sub(down).Round(time.Millisecond), up.Sub(down).Round(time.Millisecond))

	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	pubEnd := time.Now()

	// Every request gets its result.
	resultFilter := h.subjects.Event("po", "test:alice", "*", events.KindResult)
	var results map[string]uint64
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		results = h.subjectCounts(resultFilter)
		if len(results) >= total || time.Now().After(deadline) {
			break
		}
	}
	allResults := time.Now()
	// Nothing left to deliver, then long enough for any redelivery to land.
	cons, err := h.js.Consumer(context.Background(), "BERTH_CMD", "berth-fast")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ci, err := cons.Info(context.Background())
		if err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command consumer did not drain: %+v %v", ci, err)
		}
	}
	time.Sleep(h.cfg.AckWait + time.Second)
	results = h.subjectCounts(resultFilter)
	accepted := h.subjectCounts(h.subjects.Event("po", "test:alice", "*", events.KindAccepted))

	takenOver := map[string]bool{}
	for _, l := range wlog.find("taking over a request") {
		takenOver[l.requestID] = true
	}
	var lost, dup, acceptedOff []string
	for _, id := range ids {
		switch n := results[h.subjects.Event("po", "test:alice", id, events.KindResult)]; {
		case n == 0:
			lost = append(lost, id)
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s:%d", id, n))
		}
		if n := accepted[h.subjects.Event("po", "test:alice", id, events.KindAccepted)]; n != 1 && !(n > 1 && takenOver[id]) {
			acceptedOff = append(acceptedOff, fmt.Sprintf("%s:%d", id, n))
		}
	}
	if len(results) != total {
		t.Errorf("%d requests have results, want %d", len(results), total)
	}
	if len(lost) > 0 || len(dup) > 0 {
		t.Errorf("%d commands lost (%v), %d answered more than once (%v)", len(lost), head(lost), len(dup), head(dup))
	}
	if len(acceptedOff) > 0 {
		t.Errorf("%d requests were not accepted exactly once (id:count): %v", len(acceptedOff), head(acceptedOff))
	}

	// The request records: each one done, with its result.
	st, err := store.New(store.Config{URL: h.cfg.RedisURL, Prefix: "berth:"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	notDone := 0
	for _, id := range ids {
		rec, err := st.GetRequest(context.Background(), "test:alice", id)
		if err != nil || rec.State != berth.RequestDone || len(rec.Result) == 0 {
			notDone++
			if notDone <= 5 {
				t.Errorf("record of %s: %+v %v", id, rec, err)
			}
		}
	}

	// What the restart cost.
	var reconnected time.Time
	for _, l := range wlog.find("nats reconnected") {
		if l.at.After(down) {
			reconnected = l.at
			break
		}
	}
	mu.Lock()
	var firstAfter time.Time
	for _, at := range resultTimes {
		if at.After(up) {
			firstAfter = at
			break
		}
	}
	mu.Unlock()
	redelivered := len(wlog.find("command already done: re-publishing"))
	t.Logf("worker reconnected %v after the server was up again (%v after it went down); first result %v after it was up",
		since(up, reconnected), since(down, reconnected), since(up, firstAfter))
	t.Logf("publisher: %d publish attempts failed and were retried; all acked %v after the restart",
		retried.Load(), pubEnd.Sub(up).Round(time.Millisecond))
	t.Logf("all %d results stored %v after the restart; %d redelivered commands answered from their record, %d taken over mid-flight, %d duplicate-id retries, %d pull errors logged",
		len(results), allResults.Sub(up).Round(time.Millisecond), redelivered, len(takenOver),
		len(wlog.find("a command with this request id is already running")), len(wlog.find("cannot pull commands"))+len(wlog.find("pull ended with an error")))
	t.Logf("worker warnings and errors since the restart: %v", wlog.warnings(down))
	for _, l := range append(wlog.find("cannot pull commands"), wlog.find("pull ended with an error")...) {
		t.Logf("  %s lane, %v after the server went down: %s: %s", l.lane, l.at.Sub(down).Round(time.Millisecond), l.msg, l.err)
	}
}

func since(from, to time.Time) string {
	if to.IsZero() {
		return "never"
	}
	return to.Sub(from).Round(time.Millisecond).String()
}

func head(s []string) []string {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

// TestOutageRedisRestart stops Redis under a running worker: status still
// answers from Docker with the configuration the worker last read (and
// says so), the roles it last read still decide who may read, mutations
// are refused and change nothing; when Redis is back the worker uses it
// again by itself.
func TestOutageRedisRestart(t *testing.T) {
	rs := testenv.RedisProcess(t, testenv.KeepData())
	h := newHarnessWith(t, harnessOptions{RedisURL: rs.URL, Roots: []string{filepath.Clean(tempRoot(t))}, Admins: []string{"test:admin"}})
	sample := testenv.SampleApp(t)
	setArgs := map[string]any{"workspace": sample.Dir, "production": sample.Dir, "compose_project": sample.Project,
		"strategy": "symlink", "roles": map[string]string{"test:viewer": "viewer"}}
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, setArgs)})
	mustOK(t, res)
	before := decodeData[berth.Project](t, res)

	status := func(user string, refresh bool) (events.Event, time.Duration) {
		t.Helper()
		begin := time.Now()
		res, _ := h.send("po", events.ActionStatus, events.Command{User: user, Args: args(t, map[string]any{"refresh": refresh})})
		return res, time.Since(begin)
	}
	res, _ = status("test:viewer", true)
	mustOK(t, res)
	fresh := decodeData[handlers.StatusReport](t, res)
	if fresh.ConfigReadAt != nil || fresh.CacheError != "" || fresh.Summary.Running != 2 {
		t.Fatalf("status before the outage: %+v", fresh)
	}
	res, _ = status("test:nobody", false)
	if errCode(res) != "forbidden" {
		t.Fatalf("status by a user without a role: %+v", res.Error)
	}

	rs.Stop()
	down := time.Now()

	// status answers from Docker, flagged.
	res, took := status("test:viewer", false)
	mustOK(t, res)
	st := decodeData[handlers.StatusReport](t, res)
	if st.Cached || st.CacheError == "" || st.ConfigReadAt == nil || st.Summary.Running != 2 || len(st.Services) != 2 {
		t.Fatalf("status while Redis is down: %s", res.Data)
	}
	t.Logf("status while Redis is down answered in %v: cache_error %q, config_read_at %v", took.Round(time.Millisecond), st.CacheError, st.ConfigReadAt)
	res, _ = status("test:viewer", true)
	mustOK(t, res)
	if st := decodeData[handlers.StatusReport](t, res); st.Cached || st.ConfigReadAt == nil {
		t.Fatalf("refreshed status while Redis is down: %s", res.Data)
	}
	// The roles last read still decide.
	res, _ = status("test:nobody", false)
	if errCode(res) != "forbidden" {
		t.Fatalf("status by a user without a role while Redis is down: %+v", res.Error)
	}
	res, _ = h.send("po", events.ActionLogs, events.Command{User: "test:viewer", Args: args(t, map[string]any{"tail": 3})})
	mustOK(t, res)
	if lr := decodeData[handlers.LogsResult](t, res); lr.ConfigReadAt == nil || lr.Service != "web" || lr.Count == 0 {
		t.Fatalf("logs while Redis is down: %s", res.Data)
	}
	// What needs the store is refused, and nothing changes.
	for _, c := range []struct {
		action string
		cmd    events.Command
	}{
		{events.ActionRestart, events.Command{User: "test:admin"}},
		{events.ActionRestart, events.Command{User: "test:admin", Confirm: "yes"}},
		{events.ActionDeploy, events.Command{User: "test:admin", Confirm: "yes"}},
		{events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{"workspace": sample.Dir, "production": sample.Dir,
			"compose_project": sample.Project, "strategy": "symlink", "primary_service": "worker"})}},
		{events.ActionConfigGet, events.Command{User: "test:admin"}},
		{events.ActionHistory, events.Command{User: "test:admin"}},
	} {
		res, _ := h.send("po", c.action, c.cmd)
		if errCode(res) != "store_unavailable" || !strings.Contains(res.Error.Hint, "Redis") {
			t.Fatalf("%s while Redis is down: %+v", c.action, res.Error)
		}
	}

	rs.Start()
	back := time.Now()
	t.Logf("Redis was down for %v", back.Sub(down).Round(time.Millisecond))

	// The worker uses Redis again by itself. (go-redis, after repeated
	// dial failures, probes the server once a second before it dials for
	// commands again: a status right after Redis is back may still come
	// from memory, flagged.)
	var after handlers.StatusReport
	fromMemory := 0
	for {
		res, _ = status("test:viewer", true)
		mustOK(t, res)
		after = decodeData[handlers.StatusReport](t, res)
		if after.ConfigReadAt == nil {
			break
		}
		fromMemory++
		if time.Since(back) > 15*time.Second {
			t.Fatalf("the worker still does not use Redis %v after it is back: %s", time.Since(back), res.Data)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the worker used Redis again %v after it was back (%d status answers from memory meanwhile)",
		time.Since(back).Round(time.Millisecond), fromMemory)
	if after.CacheError != "" || after.Cached {
		t.Fatalf("first status from Redis after the outage: %+v", after)
	}
	for i, s := range after.Services {
		if s.StartedAt == nil || fresh.Services[i].StartedAt == nil || !s.StartedAt.Equal(*fresh.Services[i].StartedAt) || s.RestartCount != fresh.Services[i].RestartCount {
			t.Fatalf("service %s changed during the outage: before %+v, after %+v", s.Service, fresh.Services[i], s)
		}
	}
	res, _ = status("test:viewer", false)
	if cached := decodeData[handlers.StatusReport](t, res); !cached.Cached || cached.CacheError != "" || cached.ConfigReadAt != nil {
		t.Fatalf("second status after Redis is back is not from the cache: %s", res.Data)
	}
	res, _ = h.send("po", events.ActionConfigGet, events.Command{User: "test:admin"})
	mustOK(t, res)
	if got := decodeData[berth.Project](t, res); got.PrimaryService != "web" || !got.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("the config changed during the outage: %+v", got)
	}
	res, _ = h.send("po", events.ActionHistory, events.Command{User: "test:admin"})
	mustOK(t, res)
	var hist struct {
		Entries []berth.HistoryEntry `json:"entries"`
	}
	if err := json.Unmarshal(res.Data, &hist); err != nil || len(hist.Entries) != 1 || hist.Entries[0].Action != events.ActionConfigSet {
		t.Fatalf("history after the outage (only the first config.set ran): %s", res.Data)
	}
	setArgs["primary_service"] = "worker"
	res, _ = h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, setArgs)})
	mustOK(t, res)
	if got := decodeData[berth.Project](t, res); got.PrimaryService != "worker" {
		t.Fatalf("config.set after the outage: %+v", got)
	}
}

// dockerProxy forwards a unix socket to the Docker Engine's while it is
// open: the worker's Docker "comes and goes" with it.
type dockerProxy struct {
	t      *testing.T
	path   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newDockerProxy(t *testing.T, target string) *dockerProxy {
	// A short directory: a unix socket path is limited to ~108 bytes.
	dir, err := os.MkdirTemp("", "berth-dock")
	if err != nil {
		t.Fatal(err)
	}
	p := &dockerProxy{t: t, path: filepath.Join(dir, "docker.sock"), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { p.close(); os.RemoveAll(dir) })
	return p
}

func (p *dockerProxy) open() {
	p.t.Helper()
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", p.target)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, up) {
				return
			}
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); closeWrite(up) }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); closeWrite(c) }()
		}
	}()
}

func (p *dockerProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func closeWrite(c net.Conn) {
	if uc, ok := c.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
}

// close stops listening (the socket file goes) and cuts every connection.
func (p *dockerProxy) close() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestOutageDockerUnreachable runs a worker whose Docker Engine cannot be
// reached: status and logs say so, with a hint naming DOCKER_HOST, and the
// worker keeps serving; once the engine is reachable again (and after it
// goes away and comes back once more) status works without a restart.
func TestOutageDockerUnreachable(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	sample := configure(t, h, "po") // with the real engine
	h.stop()
	proxy := newDockerProxy(t, "/var/run/docker.sock")
	if host := os.Getenv("DOCKER_HOST"); strings.HasPrefix(host, "unix://") {
		proxy.target = strings.TrimPrefix(host, "unix://")
	} else if host != "" {
		t.Skipf("DOCKER_HOST=%s: the test proxies a unix socket only", host)
	}
	p := h.startProcessEnv([]string{"DOCKER_HOST=unix://" + proxy.path})
	if !strings.Contains(p.output(), "docker engine is not reachable yet") {
		t.Fatalf("the worker did not warn about the engine at start:\n%s", p.output())
	}

	unavailable := func(phase string) {
		t.Helper()
		for _, c := range []struct {
			action string
			args   map[string]any
		}{
			{events.ActionStatus, map[string]any{"refresh": true}},
			{events.ActionLogs, map[string]any{"tail": 3}},
			{events.ActionRestart, map[string]any{}}, // its plan needs the containers
		} {
			res, _ := h.send("po", c.action, events.Command{Args: args(t, c.args)})
			if errCode(res) != "docker_unavailable" || !strings.Contains(res.Error.Hint, "DOCKER_HOST") ||
				!strings.Contains(res.Error.Message, proxy.path) {
				t.Fatalf("%s: %s without an engine: %+v", phase, c.action, res.Error)
			}
		}
		for _, action := range []string{events.ActionHistory, events.ActionConfigGet} {
			res, _ := h.send("po", action, events.Command{})
			mustOK(t, res)
		}
		// The services come from the compose files, which need no engine.
		res, _ := h.send("po", events.ActionConfigSet, events.Command{Args: args(t, map[string]any{
			"workspace": sample.Dir, "production": sample.Dir, "compose_project": sample.Project, "strategy": "symlink"})})
		mustOK(t, res)
		select {
		case <-p.done:
			t.Fatalf("%s: the worker exited:\n%s", phase, p.output())
		default:
		}
	}
	available := func(phase string) time.Duration {
		t.Helper()
		begin := time.Now()
		res, _ := h.send("po", events.ActionStatus, events.Command{Args: args(t, map[string]any{"refresh": true})})
		took := time.Since(begin)
		mustOK(t, res)
		if st := decodeData[handlers.StatusReport](t, res); st.Summary.Running != 2 {
			t.Fatalf("%s: status %s", phase, res.Data)
		}
		res, _ = h.send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"tail": 3})})
		mustOK(t, res)
		return took
	}

	unavailable("never reachable")
	proxy.open()
	t.Logf("status once the engine is reachable: %v", available("engine reachable").Round(time.Millisecond))
	// Gone again, with the worker's keep-alive connections cut.
	proxy.close()
	unavailable("engine gone again")
	proxy.open()
	t.Logf("status once the engine is back: %v", available("engine back").Round(time.Millisecond))
	if strings.Contains(p.output(), `"level":"panic"`) || strings.Contains(p.output(), "goroutine ") {
		t.Fatalf("the worker panicked:\n%s", p.output())
	}
}

// TestOutageNATSStoreLost restarts nats-server without its JetStream
// store, as a server rebuilt from scratch comes back: the streams and
// consumers are gone, and the worker declares them again by itself.
func TestOutageNATSStoreLost(t *testing.T) {
	ns := startNATSProcess(t)
	wlog := &workerLog{}
	h := newHarnessWith(t, harnessOptions{NATSURL: ns.URL, Logs: wlog})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log (tail):\n%s", wlog.tail(64<<10))
		}
	})
	h.configureBare("po")
	res, _ := h.send("po", events.ActionHistory, events.Command{})
	mustOK(t, res)

	ns.stop(syscall.SIGTERM)
	if err := os.RemoveAll(filepath.Join(ns.dir, "store")); err != nil {
		t.Fatal(err)
	}
	ns.start()
	up := time.Now()

	// Commands are published as soon as the server takes them again.
	for _, c := range []struct{ action, id string }{{events.ActionHistory, "after-loss-fast"}, {events.ActionConfigSet, "after-loss-slow"}} {
		evs := h.subscribe("po", c.id)
		body := []byte(`{"id":"` + c.id + `","user":"test:alice","args":{}}`)
		var published time.Time
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			msg := &nats.Msg{Subject: h.subjects.Command("po", c.action), Data: body, Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, c.id)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := h.js.PublishMsg(ctx, msg)
			cancel()
			if err == nil {
				published = time.Now()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the command stream did not come back within 30s: %v", err)
			}
		}
		res, _ := evs.result(t, 30*time.Second)
		if c.action == events.ActionHistory {
			mustOK(t, res)
		} else if errCode(res) != "bad_request" { // empty args: answered, not run
			t.Fatalf("%s: %+v", c.action, res.Error)
		}
		t.Logf("%s: stream back %v after the server, result %v after the publish", c.action,
			published.Sub(up).Round(time.Millisecond), time.Since(published).Round(time.Millisecond))
		if n := h.storedResults("po", c.id); n != 1 {
			t.Fatalf("%d results stored for %s", n, c.id)
		}
	}
}
