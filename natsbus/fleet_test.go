package natsbus

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

// A worker started with --replicas 3 on a cluster where everything was
// declared with one replica: the fleet bucket is scaled and the worker
// announces itself right after (a put sent while the bucket's leader
// changes is never answered and must be sent again), then every stream
// and consumer, the route stream's included, is scaled within the time a
// worker waits.
func TestScaleEverythingOnACluster(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	js := jsOn(t, c.URLs())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := DefaultTopology(events.NewSubjects("berth"))
	self := berth.WorkerInfo{Host: "h1", Worker: "w1", StartedAt: time.Now().UTC()}
	declare := func() *Fleet {
		t.Helper()
		f, err := OpenFleet(ctx, js, topo, self, time.Second, zerolog.Nop())
		if err != nil {
			t.Fatalf("fleet with %d replicas: %v", topo.Replicas, err)
		}
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		defer acancel()
		if err := f.Announce(actx); err != nil {
			t.Fatalf("announce with %d replicas: %v", topo.Replicas, err)
		}
		if _, _, err := topo.Declare(ctx, js); err != nil {
			t.Fatalf("declare with %d replicas: %v", topo.Replicas, err)
		}
		if _, _, err := topo.DeclareHost(ctx, js, self.Host); err != nil {
			t.Fatalf("declare host with %d replicas: %v", topo.Replicas, err)
		}
		return f
	}
	declare()
	topo.Replicas = 3
	began := time.Now()
	f := declare()
	t.Logf("scaled to 3 replicas in %v", time.Since(began))
	ws, err := f.Workers(ctx)
	if err != nil || len(ws) != 1 || ws[0].Host != "h1" {
		t.Fatalf("workers %+v, %v", ws, err)
	}
	for _, name := range []string{topo.CommandStream, topo.RouteStream, "KV_" + topo.FleetBucket} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if info, err := s.Info(ctx); err != nil || info.Config.Replicas != 3 {
			t.Fatalf("%s: %+v, %v", name, info, err)
		}
	}
}
