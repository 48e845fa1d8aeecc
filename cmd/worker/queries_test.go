package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsmicro "github.com/nats-io/nats.go/micro"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/micro"
)

// restartWith restarts the harness's worker after changing its config.
func (h *harness) restartWith(change func(*Config)) {
	h.t.Helper()
	h.stop()
	change(h.cfg)
	if err := h.cfg.Validate(); err != nil {
		h.t.Fatal(err)
	}
	h.start()
}

// query sends a request on a query subject, as `nats req` does.
func (h *harness) query(subject, body string) *nats.Msg {
	h.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = []byte(body)
	h.sign(msg)
	m, err := h.nc.RequestMsg(msg, 30*time.Second)
	if err != nil {
		h.t.Fatalf("nats req %s %s: %v", subject, body, err)
	}
	return m
}

// queryErr returns the micro error code of a reply, checking that the
// body is the matching error JSON.
func queryErr(t *testing.T, m *nats.Msg) string {
	t.Helper()
	code := m.Header.Get(natsmicro.ErrorCodeHeader)
	if code == "" {
		return ""
	}
	var e events.Error
	if err := json.Unmarshal(m.Data, &e); err != nil || string(e.Code) != code || e.Message != m.Header.Get(natsmicro.ErrorHeader) || e.Hint == "" {
		t.Fatalf("error reply %v %s: %v", m.Header, m.Data, err)
	}
	return code
}

// httpGet fetches a path of the worker's HTTP server.
func (h *harness) httpGet(path string) (int, string) {
	h.t.Helper()
	if h.w.HTTPAddr == "" {
		h.t.Fatal("the worker serves no HTTP")
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + h.w.HTTPAddr + path)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// metricValue returns the value of one series in a /metrics body, or -1.
func metricValue(body, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

func TestQueriesAndMetricsEndToEnd(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	h.restartWith(func(c *Config) {
		c.Admins = []string{"test:admin", "test:alice"}
		c.HTTPAddr = "127.0.0.1:0"
	})
	configure(t, h, "po")

	// status on the query subject: the status JSON, straight from Docker.
	m := h.query("berth.q.po.status", `{"user":"test:alice"}`)
	if code := queryErr(t, m); code != "" {
		t.Fatalf("status query: %s %s", code, m.Data)
	}
	var st handlers.StatusReport
	if err := json.Unmarshal(m.Data, &st); err != nil {
		t.Fatalf("status reply %s: %v", m.Data, err)
	}
	if st.Project != "po" || len(st.Services) != 2 || st.Services[0].Service != "web" || st.Services[0].Health != "healthy" ||
		st.Summary.Running != 2 || st.Cached {
		t.Fatalf("status reply %s", m.Data)
	}
	// A second status, as a command this time, comes from the cache the
	// query filled: the same cache, the same handler.
	res, _ := h.send("po", events.ActionStatus, events.Command{})
	mustOK(t, res)
	if !decodeData[handlers.StatusReport](t, res).Cached {
		t.Fatalf("status command after a status query not cached: %s", res.Data)
	}

	// The other endpoints.
	m = h.query("berth.q.po.logs", `{"user":"test:alice","args":{"service":"worker","tail":2}}`)
	var lr handlers.LogsResult
	if err := json.Unmarshal(m.Data, &lr); err != nil || queryErr(t, m) != "" || lr.Service != "worker" || lr.Count < 1 || lr.Count > 2 {
		t.Fatalf("logs reply %s", m.Data)
	}
	if m = h.query("berth.q.po.logs", `{"user":"test:alice","args":{"follow_s":2}}`); queryErr(t, m) != "bad_request" ||
		m.Header.Get(natsmicro.ErrorHeader) != "follow is only available on the command subject" {
		t.Fatalf("follow on the query subject: %v %s", m.Header, m.Data)
	}
	if m = h.query("berth.q.po.config", `{"user":"test:alice"}`); queryErr(t, m) != "" || !strings.Contains(string(m.Data), `"compose_project"`) {
		t.Fatalf("config reply %s", m.Data)
	}
	if m = h.query("berth.q.po.history", `{"user":"test:alice","args":{"limit":1}}`); queryErr(t, m) != "" || !strings.Contains(string(m.Data), `"config.set"`) {
		t.Fatalf("history reply %s", m.Data)
	}

	// Errors: micro error headers with the Berth code.
	if m = h.query("berth.q.po.status", `{"user":"cli:mallory"}`); queryErr(t, m) != "forbidden" {
		t.Fatalf("a user without a role: %v %s", m.Header, m.Data)
	}
	if m = h.query("berth.q.nope.status", `{"user":"test:admin"}`); queryErr(t, m) != "not_found" {
		t.Fatalf("an unknown project: %v %s", m.Header, m.Data)
	}
	if m = h.query("berth.q.po.status", `{"user":"test:alice","confirm":"yes"}`); queryErr(t, m) != "bad_request" {
		t.Fatalf("a field a query does not have: %v %s", m.Header, m.Data)
	}

	// projects: everything for an admin, nothing for a stranger.
	for user, want := range map[string]string{"test:admin": "po", "cli:mallory": ""} {
		m = h.query("berth.q.projects", `{"user":"`+user+`"}`)
		var pr micro.ProjectsResult
		if err := json.Unmarshal(m.Data, &pr); err != nil || strings.Join(pr.Projects, ",") != want {
			t.Fatalf("projects of %s: %s", user, m.Data)
		}
	}

	// The micro service's own INFO and STATS, as `nats micro info|stats berth` ask.
	m, err := h.nc.Request("$SRV.INFO.berth", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info natsmicro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, ep := range info.Endpoints {
		eps = append(eps, ep.Name+"="+ep.Subject)
	}
	// The project endpoints, the fleet-wide ones, and the forwarded queries
	// of this worker's host.
	want := "status=berth.q.*.status logs=berth.q.*.logs config=berth.q.*.config history=berth.q.*.history releases=berth.q.*.releases projects=berth.q.projects fleet=berth.q.fleet"
	host := info.Metadata["host"]
	for _, ep := range []string{"status", "logs", "config", "history", "releases"} {
		want += " host-" + ep + "=berth.hq." + host + ".*." + ep
	}
	if info.Name != "berth" || host == "" || strings.Join(eps, " ") != want {
		t.Fatalf("INFO %s", m.Data)
	}
	// ok, forbidden, not_found, bad_request; a request is counted once its
	// handler returned, after its reply went out.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m, err = h.nc.Request("$SRV.STATS.berth", nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		var stats natsmicro.Stats
		if err := json.Unmarshal(m.Data, &stats); err != nil {
			t.Fatal(err)
		}
		counted := false
		for _, ep := range stats.Endpoints {
			if ep.Name == "status" {
				counted = ep.NumRequests == 4 && ep.NumErrors == 3
				if !counted && time.Now().After(deadline) {
					t.Fatalf("status STATS %+v", ep)
				}
			}
		}
		if counted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("STATS without status: %s", m.Data)
		}
	}

	// /metrics: the commands so far, by action and outcome, and the cache.
	code, body := h.httpGet("/metrics")
	if code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	for series, want := range map[string]float64{
		`berth_commands_total{action="config.set",outcome="ok"}`:     1,
		`berth_commands_total{action="status",outcome="ok"}`:         1,
		`berth_command_duration_seconds_count{action="config.set"}`:  1,
		`berth_status_cache_total{result="hit"}`:                     1,
		`berth_status_cache_total{result="miss"}`:                    1,
		`berth_queries_total{endpoint="status",outcome="ok"}`:        1,
		`berth_queries_total{endpoint="status",outcome="forbidden"}`: 1,
		`berth_queries_total{endpoint="status",outcome="not_found"}`: 1,
		`berth_queries_total{endpoint="logs",outcome="bad_request"}`: 1,
		`berth_inflight_commands{lane="fast"}`:                       0,
		`berth_inflight_commands{lane="slow"}`:                       0,
		`berth_lock_conflicts_total`:                                 0,
		`berth_redeliveries_total`:                                   0,
	} {
		if got := metricValue(body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if t.Failed() {
		t.Fatalf("/metrics:\n%s", body)
	}

	// /healthz and /readyz with everything up.
	if code, body := h.httpGet("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz %d %q", code, body)
	}
	if code, body := h.httpGet("/readyz"); code != 200 || body != "nats ok\nredis ok\ndocker ok\ncommands ok\n" {
		t.Fatalf("/readyz %d %q", code, body)
	}

	// On shutdown the query service is gone with the intake.
	h.stop()
	if _, err := h.nc.Request("berth.q.po.status", []byte(`{"user":"test:alice"}`), time.Second); err == nil {
		t.Fatal("a stopped worker answered a query")
	}
}

func TestReadyzFollowsRedis(t *testing.T) {
	rs := testenv.RedisProcess(t)
	h := newHarness(t)
	h.restartWith(func(c *Config) {
		c.RedisURL = rs.URL
		c.HTTPAddr = "127.0.0.1:0"
	})
	waitReady := func(wantCode int, wantLine string) {
		t.Helper()
		var code int
		var body string
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if code, body = h.httpGet("/readyz"); code == wantCode && strings.Contains(body, wantLine) {
				return
			}
		}
		t.Fatalf("/readyz %d %q, want %d with %q", code, body, wantCode, wantLine)
	}
	waitReady(200, "redis ok\n")

	rs.Stop()
	start := time.Now()
	waitReady(503, "redis fail: ")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("/readyz took %v to see Redis gone", d)
	}
	code, body := h.httpGet("/readyz")
	if !strings.Contains(body, "nats ok\n") || !strings.Contains(body, "docker ok\n") || !strings.Contains(body, "commands ok\n") {
		t.Fatalf("/readyz %d %q: the other checks should pass", code, body)
	}
	// Liveness does not depend on Redis.
	if code, _ := h.httpGet("/healthz"); code != 200 {
		t.Fatalf("/healthz %d with Redis down", code)
	}
	// A status query still answers from Docker... once a project is known,
	// which needs Redis: here the error says Redis is unavailable.
	m := h.query("berth.q.po.status", `{"user":"test:alice"}`)
	if code := queryErr(t, m); code != "store_unavailable" {
		t.Fatalf("status query with Redis down: %q %s", code, m.Data)
	}

	rs.Start()
	waitReady(200, "redis ok\n")
}

func TestQueriesSignedEndToEnd(t *testing.T) {
	h := newHarness(t)
	secrets, err := auth.ParseSecrets("a-query-signing-secret-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	h.restartWith(func(c *Config) { c.SignSecrets, c.SignWindow = secrets, time.Minute })
	// h.query signs with the worker's secret.
	if m := h.query("berth.q.projects", `{"user":"test:alice"}`); queryErr(t, m) != "" {
		t.Fatalf("signed query refused: %v %s", m.Header, m.Data)
	}
	m, err := h.nc.Request("berth.q.projects", []byte(`{"user":"test:alice"}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if queryErr(t, m) != "unauthorized" {
		t.Fatalf("unsigned query: %v %s", m.Header, m.Data)
	}
}

func TestMetricsHTTPAddrConfig(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
		err  string
	}{
		{want: "127.0.0.1:9090"},
		{args: []string{"--http-addr", ""}, want: ""},
		{args: []string{"--http-addr", ":9191"}, want: ":9191"},
		{env: map[string]string{"BERTH_HTTP_ADDR": "off"}, want: ""},
		{env: map[string]string{"BERTH_HTTP_ADDR": "0.0.0.0:9100"}, want: "0.0.0.0:9100"},
		{args: []string{"--http-addr", "9090"}, err: "--http-addr"},
	} {
		e := map[string]string{"HOME": "/root"}
		for k, v := range c.env {
			e[k] = v
		}
		cfg, err := ParseConfig(c.args, env(e))
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("%v %v: error %v, want one about %s", c.args, c.env, err, c.err)
			}
		case err != nil:
			t.Fatalf("%v %v: %v", c.args, c.env, err)
		case cfg.HTTPAddr != c.want:
			t.Fatalf("%v %v: http addr %q, want %q", c.args, c.env, cfg.HTTPAddr, c.want)
		}
	}
}
