package natsbus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

// A single server refuses three replicas with a ReplicasError that says
// what to do.
func TestReplicasOnASingleServer(t *testing.T) {
	js := jsOn(t, testenv.NATS(t).ClientURL())
	topo := DefaultTopology(events.NewSubjects("berth"))
	topo.Replicas = 3
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := topo.Declare(ctx, js)
	var re *ReplicasError
	if !errors.As(err, &re) || re.Clustered || re.Stream != "BERTH_CMD" {
		t.Fatalf("three replicas on one server: %v", err)
	}
	t.Log(err)
}

// On a 3-node cluster the streams and consumers declared with one replica
// are scaled to three by declaring them again, messages kept; five
// replicas are refused with a ReplicasError.
func TestReplicasScaleOnACluster(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	js := jsOn(t, c.URLs())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	subjects := events.NewSubjects("berth")
	topo := DefaultTopology(subjects)
	if _, _, err := topo.Declare(ctx, js); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subjects.Command("po", events.ActionStatus), []byte(`{}`), jetstream.WithMsgID("kept")); err != nil {
		t.Fatal(err)
	}
	topo.Replicas = 3
	fast, slow, err := topo.Declare(ctx, js)
	if err != nil {
		t.Fatalf("scale 1 -> 3: %v", err)
	}
	for _, name := range []string{topo.CommandStream, topo.EventStream, topo.AuditStream} {
		waitReplicas(ctx, t, name, 3, func(ctx context.Context) (*jetstream.ClusterInfo, int, error) {
			s, err := js.Stream(ctx, name)
			if err != nil {
				return nil, 0, err
			}
			info, err := s.Info(ctx)
			if err != nil {
				return nil, 0, err
			}
			return info.Cluster, info.Config.Replicas, nil
		})
	}
	for _, cons := range []jetstream.Consumer{fast, slow} {
		name := cons.CachedInfo().Name
		waitReplicas(ctx, t, name, 3, func(ctx context.Context) (*jetstream.ClusterInfo, int, error) {
			info, err := cons.Info(ctx)
			if err != nil {
				return nil, 0, err
			}
			return info.Cluster, info.Config.Replicas, nil
		})
	}
	if info, err := fast.Info(ctx); err != nil || info.NumPending != 1 {
		t.Fatalf("the command published before scaling: pending %+v, %v", info, err)
	}
	topo.Replicas = 5
	_, _, err = topo.Declare(ctx, js)
	var re *ReplicasError
	if !errors.As(err, &re) || !re.Clustered {
		t.Fatalf("five replicas on three servers: %v", err)
	}
	t.Log(err)
}

func waitReplicas(ctx context.Context, t *testing.T, name string, want int, info func(context.Context) (*jetstream.ClusterInfo, int, error)) {
	t.Helper()
	for {
		ci, n, err := info(ctx)
		if err == nil && n == want && ci != nil && ci.Leader != "" && len(ci.Replicas) == want-1 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: not %d replicas: config %d, cluster %+v, %v", name, want, n, ci, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func jsOn(t *testing.T, urls string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
