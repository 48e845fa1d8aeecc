package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
)

// P7: sustained cached status against the echo floor.

// throughputInFlight is how many commands P7 keeps in flight: the
// worker's fast slots.
const throughputInFlight = 32

// echoPrefix is the subject prefix of the echo floor (bench/echo).
const echoPrefix = "echo"

// echoProc is the echo floor's process and the sizes of its events: those
// of Berth's accepted and result events of a cached status.
type echoProc struct {
	p                          *workerProc
	acceptedBytes, resultBytes int
}

// needEcho builds bench/echo and runs it as a process of its own, like
// the worker, once.
func (e *env) needEcho() *echoProc {
	if e.echo != nil {
		return e.echo
	}
	tb := e.tb
	tb.Helper()
	accepted, result := e.eventSizes(tb)
	bin := filepath.Join(tb.TempDir(), "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./bench/echo")
	cmd.Dir = e.modRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build ./bench/echo: %v\n%s", err, out)
	}
	p := startProc(tb, []byte("echo ready"), exec.Command(bin, "--nats-url", e.ns.ClientURL(), "--prefix", echoPrefix,
		"--user", admin, "--slots", strconv.Itoa(throughputInFlight),
		"--accepted-bytes", strconv.Itoa(accepted), "--result-bytes", strconv.Itoa(result)))
	tb.Cleanup(func() { p.stop(tb) })
	e.echo = &echoProc{p: p, acceptedBytes: accepted, resultBytes: result}
	return e.echo
}

// echoRoundTrip is one cached-status-shaped command through the echo
// floor, with the client code of Berth's requests.
func (e *env) echoRoundTrip() variant {
	e.needEcho()
	return variant{name: "echo_floor", run: func(tb testing.TB) {
		id := e.cl.newID()
		subj := events.NewSubjects(echoPrefix)
		body := []byte(`{"id":"` + id + `","user":"` + admin + `"}`)
		if _, err := roundTrip(e.cl.nc, e.cl.js, subj.RequestEvents(e.needApp().project, admin, id),
			subj.Command(e.needApp().project, events.ActionStatus), id, body, 30*time.Second); err != nil {
			tb.Fatal(err)
		}
	}}
}

// eventSizes sends one cached status of project app and returns the sizes
// of its accepted and result events.
func (e *env) eventSizes(tb testing.TB) (accepted, result int) {
	tb.Helper()
	app := e.needApp()
	id := e.cl.newID()
	sub, err := e.cl.nc.SubscribeSync(e.cl.subj.RequestEvents(app.project, admin, id))
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.cl.nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	msg := &nats.Msg{Subject: e.cl.subj.Command(app.project, events.ActionStatus), Header: nats.Header{},
		Data: []byte(`{"id":"` + id + `","user":"` + admin + `"}`)}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.cl.js.PublishMsg(ctx, msg); err != nil {
		tb.Fatal(err)
	}
	for result == 0 {
		m, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			tb.Fatalf("status events: %v", err)
		}
		switch {
		case strings.HasSuffix(m.Subject, ".accepted"):
			accepted = len(m.Data)
		case strings.HasSuffix(m.Subject, ".result"):
			result = len(m.Data)
		}
	}
	return accepted, result
}

// throughput is P7 over several rounds: in each, the same load runs
// against Berth and against the echo floor, one after the other (A B, then
// B A, …), each warm then measured for dur.
type throughput struct {
	berth, echo []loadResult
	// acceptedBytes and resultBytes are the sizes of the events, Berth's
	// and the echo's alike.
	acceptedBytes, resultBytes int
}

func (e *env) statusVsEcho(tb testing.TB, rounds int, warm, dur time.Duration) throughput {
	tb.Helper()
	app := e.needApp()
	echo := e.needEcho()
	t := throughput{acceptedBytes: echo.acceptedBytes, resultBytes: echo.resultBytes}
	targets := []loadTarget{
		{name: "worker", prefix: "berth", project: app.project, pid: e.w.pid()},
		{name: "echo", prefix: echoPrefix, project: app.project, pid: echo.p.pid()},
	}
	for i := range rounds {
		order := []int{0, 1}
		if i%2 == 1 {
			order = []int{1, 0}
		}
		for _, k := range order {
			r := e.load(tb, targets[k], throughputInFlight, warm, dur)
			if k == 0 {
				t.berth = append(t.berth, r)
			} else {
				t.echo = append(t.echo, r)
			}
		}
	}
	return t
}

// ratios are Berth's rate over the echo's, round by round.
func (t throughput) ratios() []float64 {
	var out []float64
	for i := range min(len(t.berth), len(t.echo)) {
		if t.echo[i].perSec > 0 {
			out = append(out, t.berth[i].perSec/t.echo[i].perSec)
		}
	}
	return out
}

func medianOf[T any](rs []T, f func(T) float64) float64 {
	v := make([]float64, 0, len(rs))
	for _, r := range rs {
		v = append(v, f(r))
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func perSec(r loadResult) float64 { return r.perSec }

func cpuPerCmdUS(r loadResult) float64 {
	return float64(r.workerCPUPerCmd) / float64(time.Microsecond)
}

func rssPeak(r loadResult) float64 { return float64(r.rssPeak) }

// ratio is the median of the rounds' ratios.
func (t throughput) ratio() float64 {
	return medianOf(t.ratios(), func(f float64) float64 { return f })
}

// note is P7's line under the table.
func (t throughput) note() string {
	var rounds []string
	for i, x := range t.ratios() {
		rounds = append(rounds, fmt.Sprintf("%.0f/%.0f = %.1f %%", t.berth[i].perSec, t.echo[i].perSec, 100*x))
	}
	return fmt.Sprintf("P7: %d in flight, %d rounds (Berth/echo per round: %s); events of %d and %d bytes; CPU per command: worker %.0f µs, echo %.0f µs (medians); Berth, last round: %s; echo, last round: %s",
		throughputInFlight, len(t.berth), strings.Join(rounds, "; "), t.acceptedBytes, t.resultBytes,
		medianOf(t.berth, cpuPerCmdUS), medianOf(t.echo, cpuPerCmdUS), t.berth[len(t.berth)-1].cpu, t.echo[len(t.echo)-1].cpu)
}
