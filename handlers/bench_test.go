package handlers

import (
	"context"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// BenchmarkDispatchStatusCached is the hot path of a cached status: decode,
// record, authorize, cache read, result encoding, emit.
func BenchmarkDispatchStatusCached(b *testing.B) {
	st, en, em := newMemStore(), &fakeEngine{}, &discardEmitter{}
	svc, err := NewService(st, en, Config{Roots: []string{b.TempDir()}, StatusTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	st.projects["po"] = &berth.Project{Name: "po", ComposeProject: "po", Services: []string{"web", "worker"}}
	en.containers = []berth.Container{
		{Service: "web", Name: "po-web-1", State: "running", Health: "healthy", StartedAt: time.Now(),
			Ports: []berth.Port{{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 8080, Proto: "tcp"}}},
		{Service: "worker", Name: "po-worker-1", State: "running", StartedAt: time.Now()},
	}
	mux := NewMux()
	svc.Register(mux)
	d := &Dispatcher{Mux: mux, Store: st, Emitter: em, Subjects: events.NewSubjects(""), WorkerID: "bench",
		Admission: &Admission{Mux: mux, Subjects: events.NewSubjects(""), Authorize: svc.Authorize}}
	svc.Config.Admins = []string{"*"}
	body := []byte(`{"user":"telegram:123456"}`)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d.Process(ctx, Delivery{Subject: "berth.cmd.po.status", Data: body, StreamSeq: uint64(i + 1), NumDelivered: 1})
	}
}

// BenchmarkDecodeCommand is the strict decoder alone.
func BenchmarkDecodeCommand(b *testing.B) {
	body := []byte(`{"id":"req-123","user":"telegram:123456","args":{"tail":100,"grep":"error"},"reply_to":"_INBOX.abc"}`)
	b.ReportAllocs()
	for range b.N {
		if _, err := events.DecodeCommand(body); err != nil {
			b.Fatal(err)
		}
	}
}

// discardEmitter drops events.
type discardEmitter struct{}

func (discardEmitter) Emit(context.Context, string, string, []byte, bool) error { return nil }
func (discardEmitter) Reply(context.Context, string, []byte) error              { return nil }
