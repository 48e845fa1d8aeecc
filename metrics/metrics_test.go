package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/metrics"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestMetricsExposition(t *testing.T) {
	m := metrics.New()
	mux := metrics.Mux(m, &metrics.Ready{})
	// Known series are there, at zero, before anything happens.
	_, body := get(t, mux, "/metrics")
	for _, line := range []string{
		`berth_status_cache_total{result="hit"} 0`, `berth_status_cache_total{result="miss"} 0`,
		`berth_inflight_commands{lane="fast"} 0`, `berth_inflight_commands{lane="slow"} 0`,
		`berth_inflight_commands{lane="host-fast"} 0`, `berth_inflight_commands{lane="host-slow"} 0`,
		`berth_lock_conflicts_total 0`, `berth_redeliveries_total 0`, "go_goroutines ",
	} {
		if !strings.Contains(body, line) {
			t.Fatalf("/metrics lacks %q:\n%s", line, body)
		}
	}

	m.CommandDone(events.ActionStatus, "", 20*time.Millisecond)
	m.CommandDone(events.ActionStatus, events.CodeForbidden, time.Millisecond)
	m.CommandDone("explode", events.CodeBadRequest, time.Millisecond) // a client's word: not a label
	m.CommandDone(events.ActionDeploy, "made_up", time.Second)
	m.QueryDone("status", "", time.Millisecond)
	m.DeployStep("build", 90*time.Second)
	m.StatusCache(true)
	m.StatusCache(true)
	m.StatusCache(false)
	m.LockConflict()
	m.Redelivery()
	m.Inflight("slow", 1)
	m.Inflight("slow", 1)
	m.Inflight("slow", -1)
	m.Inflight("fast", 1)
	_, body = get(t, mux, "/metrics")
	for _, line := range []string{
		`berth_commands_total{action="status",outcome="ok"} 1`,
		`berth_commands_total{action="status",outcome="forbidden"} 1`,
		`berth_commands_total{action="unknown",outcome="bad_request"} 1`,
		`berth_commands_total{action="deploy",outcome="internal"} 1`,
		`berth_command_duration_seconds_count{action="status"} 2`,
		`berth_command_duration_seconds_bucket{action="status",le="0.025"} 2`,
		`berth_queries_total{endpoint="status",outcome="ok"} 1`,
		`berth_deploy_step_duration_seconds_bucket{step="build",le="60"} 0`,
		`berth_deploy_step_duration_seconds_bucket{step="build",le="120"} 1`,
		`berth_status_cache_total{result="hit"} 2`, `berth_status_cache_total{result="miss"} 1`,
		`berth_lock_conflicts_total 1`, `berth_redeliveries_total 1`,
		`berth_inflight_commands{lane="slow"} 1`, `berth_inflight_commands{lane="fast"} 1`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Fatalf("/metrics lacks %q:\n%s", line, body)
		}
	}
	if strings.Contains(body, "explode") || strings.Contains(body, "made_up") {
		t.Fatal("a client-chosen value became a label")
	}
	// Each Metrics has its own registry: a second one starts from zero.
	_, body = get(t, metrics.Mux(metrics.New(), &metrics.Ready{}), "/metrics")
	if !strings.Contains(body, "berth_lock_conflicts_total 0\n") {
		t.Fatal("registries are shared")
	}
}

func TestHealthz(t *testing.T) {
	code, body := get(t, metrics.Mux(metrics.New(), &metrics.Ready{}), "/healthz")
	if code != 200 || body != "ok\n" {
		t.Fatalf("/healthz %d %q", code, body)
	}
}

func TestReadyChecks(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("dial tcp 127.0.0.1:1:\nconnection refused") }
	hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	ignore := func(context.Context) error { time.Sleep(2 * time.Second); return nil } // does not respect ctx
	for _, c := range []struct {
		name   string
		checks []metrics.Check
		code   int
		body   string
	}{
		{"all up", []metrics.Check{{"nats", ok}, {"redis", ok}, {"docker", ok}}, 200, "nats ok\nredis ok\ndocker ok\n"},
		{"redis down", []metrics.Check{{"nats", ok}, {"redis", down}, {"docker", ok}}, 503,
			"nats ok\nredis fail: dial tcp 127.0.0.1:1: connection refused\ndocker ok\n"},
		{"docker hangs", []metrics.Check{{"nats", ok}, {"redis", ok}, {"docker", hang}}, 503,
			"nats ok\nredis ok\ndocker fail: no answer within 100ms\n"},
		{"probe ignores its context", []metrics.Check{{"nats", ignore}}, 503, "nats fail: no answer within 100ms\n"},
		{"probe panics", []metrics.Check{{"nats", func(context.Context) error { panic("nil conn") }}}, 503, "nats fail: check panicked: nil conn\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			code, body := get(t, metrics.Mux(metrics.New(), &metrics.Ready{Checks: c.checks, Timeout: 100 * time.Millisecond}), "/readyz")
			if code != c.code || body != c.body {
				t.Fatalf("/readyz %d %q, want %d %q", code, body, c.code, c.body)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("/readyz took %v with a 100ms timeout", d)
			}
		})
	}
}

func TestMetricsServerListens(t *testing.T) {
	srv, err := metrics.Listen("127.0.0.1:0", metrics.Mux(metrics.New(), &metrics.Ready{}), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + srv.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "berth_redeliveries_total") {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	// A port in use is reported at once.
	if _, err := metrics.Listen(srv.Addr(), http.NotFoundHandler(), nil); err == nil {
		t.Fatal("listening twice on one port succeeded")
	}
	if resp, err := http.Post("http://"+srv.Addr()+"/metrics", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /metrics: %v %v", err, resp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + srv.Addr() + "/healthz"); err == nil {
		t.Fatal("server still answers after Shutdown")
	}
}
