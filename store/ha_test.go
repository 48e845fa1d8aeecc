package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/store"
)

// haStore returns a Store on a Sentinel or Cluster URL with short timeouts,
// so that operations fail fast while a master is gone.
func haStore(t *testing.T, url string) *store.Store {
	t.Helper()
	return newStore(t, store.Config{URL: url, DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 2 * time.Second, WaitTimeout: time.Second})
}

func TestSentinelFailover(t *testing.T) {
	// Two replicas: after the failover one is left to acknowledge the
	// writes of configuration (WAIT 1).
	set := testenv.RedisSentinel(t, 2)
	s := haStore(t, set.URL)
	if s.Mode() != store.Sentinel {
		t.Fatalf("mode %v", s.Mode())
	}
	measureWait(t, s, set.URL)
	master, err := set.MasterAddr(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	failover(t, s, haStore(t, set.URL), func(ctx context.Context) {
		set.Server(master).Kill()
		waitUntil(t, ctx, "a sentinel promotes a replica", func() bool {
			a, err := set.MasterAddr(ctx)
			return err == nil && a != master
		})
	})
}

func TestClusterFailover(t *testing.T) {
	set := testenv.RedisCluster(t)
	s := haStore(t, set.URL)
	if s.Mode() != store.Cluster {
		t.Fatalf("mode %v", s.Mode())
	}
	t.Run("EveryOperation", func(t *testing.T) { everyOperation(t, s) })
	t.Run("Migrate", func(t *testing.T) {
		flushCluster(t, s)
		testMigrate(t, s)
	})
	flushCluster(t, s)
	// Kill the master of the configuration registry, and start it again
	// once its replica took over: it comes back as that replica's replica,
	// which the writes of configuration wait for.
	cfgKey := s.Keys().Projects()
	master, err := s.Client().(*redis.ClusterClient).MasterForKey(t.Context(), cfgKey)
	if err != nil {
		t.Fatal(err)
	}
	addr := master.Options().Addr
	var survivor *testenv.RedisNode
	for _, n := range set.Nodes {
		if n.Addr != addr {
			survivor = n
			break
		}
	}
	failover(t, s, haStore(t, set.URL), func(ctx context.Context) {
		set.Node(addr).Kill()
		c := redis.NewClient(&redis.Options{Addr: survivor.Addr})
		defer c.Close()
		waitUntil(t, ctx, "the cluster promotes the replica", func() bool {
			nodes, err := c.ClusterNodes(ctx).Result()
			return err == nil && promoted(nodes, addr)
		})
		set.Node(addr).Restart(t)
	})
}

// promoted reports whether CLUSTER NODES shows the node at addr failed and
// three masters serving slots.
func promoted(nodes, addr string) bool {
	masters := 0
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		if strings.HasPrefix(f[1], addr+"@") {
			if !strings.Contains(f[2], "fail") || strings.Contains(f[2], "fail?") {
				return false
			}
			continue
		}
		if strings.Contains(f[2], "master") && !strings.Contains(f[2], "fail") && len(f) > 8 {
			masters++
		}
	}
	return masters == 3
}

// flushCluster empties every master of the cluster of s.
func flushCluster(t *testing.T, s *store.Store) {
	t.Helper()
	err := s.Client().(*redis.ClusterClient).ForEachMaster(t.Context(), func(ctx context.Context, c *redis.Client) error {
		return c.FlushDB(ctx).Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// measureWait logs what waiting for a replica costs a write of
// configuration.
func measureWait(t *testing.T, s *store.Store, url string) {
	ctx := t.Context()
	noWait := newStore(t, store.Config{URL: url, WaitReplicas: -1})
	const n = 100
	var without, with time.Duration
	// Interleaved, so that both see the same warm connections and load.
	for i := range 2 * n {
		st, sum := noWait, &without
		if i%2 == 1 {
			st, sum = s, &with
		}
		start := time.Now()
		if err := st.PutProject(ctx, sampleProject(fmt.Sprintf("wait-%d", i))); err != nil {
			t.Fatalf("PutProject: %v", err)
		}
		*sum += time.Since(start)
	}
	without, with = without/n, with/n
	t.Logf("PutProject: %v without WAIT, %v with WAIT 1 (mean of %d)", without, with, n)
}

// everyOperation runs every operation of the store once, so that one that
// touches keys of two hash slots fails on a cluster (CROSSSLOT).
func everyOperation(t *testing.T, s *store.Store) {
	ctx := t.Context()
	done := map[string]bool{}
	ok := func(name string, err error) {
		t.Helper()
		done[name] = true
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	ok("Ping", s.Ping(ctx))
	ok("PutProject", s.PutProject(ctx, sampleProject("web")))
	moved := sampleProject("web")
	moved.Production, moved.ComposeProject = "/srv/prod/web2", "berth-web2"
	ok("PutProject", s.PutProject(ctx, moved)) // frees the former claims
	ok("PutProject", s.PutProject(ctx, sampleProject("api")))
	_, err := s.GetProject(ctx, "web")
	ok("GetProject", err)
	_, err = s.ListProjects(ctx)
	ok("ListProjects", err)
	if ps, err := s.GetProjects(ctx, []string{"web", "none"}); err == nil && (len(ps) != 2 || ps[0] == nil || ps[1] != nil) {
		t.Errorf("GetProjects: %+v", ps)
	} else {
		ok("GetProjects", err)
	}
	ok("PutStatus", s.PutStatus(ctx, "web", &berth.CachedStatus{TakenAt: t0, Report: json.RawMessage(`{}`)}, time.Minute))
	_, err = s.GetStatus(ctx, "web")
	ok("GetStatus", err)
	_, _, err = s.GetProjectStatus(ctx, "web")
	ok("GetProjectStatus", err)
	ok("InvalidateStatus", s.InvalidateStatus(ctx, "web"))
	ok("AppendHistory", s.AppendHistory(ctx, "web", &berth.HistoryEntry{RequestID: "r1", Action: "up", OK: true}))
	_, err = s.History(ctx, "web", 5)
	ok("History", err)
	rec := sampleRequest("r1", "w1")
	_, _, err = s.BeginRequest(ctx, rec, time.Minute)
	ok("BeginRequest", err)
	ok("TakeOverRequest", s.TakeOverRequest(ctx, rec, time.Minute))
	ok("FinishRequest", s.FinishRequest(ctx, rec, json.RawMessage(`{"ok":true}`), time.Minute))
	_, err = s.GetRequest(ctx, rec.User, rec.ID)
	ok("GetRequest", err)
	// The second confirmation of the triple replaces the first, whose key
	// the script builds.
	ok("PutConfirmation", s.PutConfirmation(ctx, sampleConfirmation("tok1", "web", "down", "alice"), time.Minute))
	second := sampleConfirmation("tok2", "web", "down", "alice")
	ok("PutConfirmation", s.PutConfirmation(ctx, second, time.Minute))
	_, err = s.PeekConfirmation(ctx, "tok2")
	ok("PeekConfirmation", err)
	_, err = s.LatestConfirmation(ctx, "web", "down", "alice")
	ok("LatestConfirmation", err)
	_, err = s.PendingConfirmations(ctx, "alice")
	ok("PendingConfirmations", err)
	taken, err := s.TakeConfirmation(ctx, second)
	ok("TakeConfirmation", err)
	_, _, err = s.AcquireLock(ctx, "web", sampleLock("w1"), time.Minute)
	ok("AcquireLock", err)
	_, err = s.ExtendLock(ctx, "web", "w1", time.Minute)
	ok("ExtendLock", err)
	_, err = s.LockHolder(ctx, "web")
	ok("LockHolder", err)
	ok("ReleaseLock", s.ReleaseLock(ctx, "web", "w1"))
	_, err = s.ClaimSignature(ctx, "sig", 7, time.Minute)
	ok("ClaimSignature", err)
	_, err = s.Migrate(ctx)
	ok("Migrate", err)
	ok("DeleteProject", s.DeleteProject(ctx, "web"))
	if !taken {
		t.Error("TakeConfirmation did not take the confirmation")
	}
	// Every operation is above: a new one must be added.
	notOps := []string{"Addr", "Client", "Close", "Keys", "Mode"}
	typ := reflect.TypeOf(s)
	for i := range typ.NumMethod() {
		name := typ.Method(i).Name
		if !done[name] && !slices.Contains(notOps, name) {
			t.Errorf("everyOperation does not run %s", name)
		}
	}
}

// outcome counts the answers of one kind of operation under load.
type outcome struct {
	ok, unavailable int
	lastOK          time.Time
}

// loadStats gathers what the load saw.
type loadStats struct {
	mu                  sync.Mutex
	ops                 map[string]*outcome
	confirmed           []string // projects whose PutProject succeeded
	firstFail, lastFail time.Time
	slowest             time.Duration
}

// record classifies the answer of an operation: success, store_unavailable,
// or a failure of the test.
func (l *loadStats) record(t *testing.T, op string, start time.Time, err error) {
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.ops[op]
	if o == nil {
		o = &outcome{}
		l.ops[op] = o
	}
	l.slowest = max(l.slowest, took)
	switch {
	case err == nil:
		o.ok++
		o.lastOK = time.Now()
	case events.ErrorCode(err) == events.CodeStoreUnavailable:
		o.unavailable++
		if l.firstFail.IsZero() {
			l.firstFail = time.Now()
		}
		l.lastFail = time.Now()
	default:
		t.Errorf("%s: %v (code %q), want success or store_unavailable", op, err, events.ErrorCode(err))
	}
}

// recoveredSince reports whether every kind of operation succeeded after
// at.
func (l *loadStats) recoveredSince(at time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, op := range []string{"PutProject", "GetProjectStatus", "PutStatus", "AppendHistory"} {
		if o := l.ops[op]; o == nil || !o.lastOK.After(at) {
			return false
		}
	}
	return true
}

// failover runs a load of config puts, reads and status and history writes
// on s from several goroutines, calls kill (which kills a master and waits
// for the promotion) and checks that: every answer is a success or
// store_unavailable, none takes long, every kind of operation succeeds
// again within a bound, and every config put that succeeded is read back
// (through check, a store of its own).
func failover(t *testing.T, s, check *store.Store, kill func(ctx context.Context)) {
	const recoverWithin = 20 * time.Second
	l := &loadStats{ops: map[string]*outcome{}}
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	op := func(name string, f func(ctx context.Context) error) {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		err := f(octx)
		if ctx.Err() == nil {
			l.record(t, name, start, err)
		}
	}
	for g := range 2 {
		wg.Add(2)
		go func() { // writes of configuration
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("load%d-%d", g, i)
				op("PutProject", func(ctx context.Context) error {
					err := s.PutProject(ctx, sampleProject(name))
					if err == nil {
						l.mu.Lock()
						l.confirmed = append(l.confirmed, name)
						l.mu.Unlock()
					}
					return err
				})
				time.Sleep(5 * time.Millisecond)
			}
		}()
		go func() { // reads and writes of a project's hot keys
			defer wg.Done()
			project := fmt.Sprintf("hot%d", g)
			for ctx.Err() == nil {
				op("GetProjectStatus", func(ctx context.Context) error {
					_, _, err := s.GetProjectStatus(ctx, project)
					if events.ErrorCode(err) == events.CodeNotFound {
						return nil
					}
					return err
				})
				op("PutStatus", func(ctx context.Context) error {
					return s.PutStatus(ctx, project, &berth.CachedStatus{TakenAt: t0, Report: json.RawMessage(`{}`)}, time.Minute)
				})
				op("AppendHistory", func(ctx context.Context) error {
					return s.AppendHistory(ctx, project, &berth.HistoryEntry{RequestID: "r", Action: "up", OK: true})
				})
				op("ListProjects", func(ctx context.Context) error { _, err := s.ListProjects(ctx); return err })
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	time.Sleep(time.Second)
	killed := time.Now()
	kctx, cancel := context.WithTimeout(t.Context(), recoverWithin)
	kill(kctx)
	cancel()
	promotedAt := time.Now()
	waitUntil(t, t.Context(), "every operation succeeds again", func() bool {
		if time.Since(killed) > recoverWithin {
			return true
		}
		return l.recoveredSince(promotedAt)
	})
	recovered := time.Now()
	if recovered.Sub(killed) > recoverWithin {
		t.Errorf("operations do not all succeed %v after the master was killed", recoverWithin)
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()

	var lost []string
	for _, name := range l.confirmed {
		if _, err := check.GetProject(t.Context(), name); err != nil {
			lost = append(lost, fmt.Sprintf("%s (%v)", name, err))
		}
	}
	names, err := check.ListProjects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range l.confirmed {
		if !slices.Contains(names, name) {
			lost = append(lost, name+" (not listed)")
		}
	}
	// All of them at once: one MGET over the {cfg} slot, which a Redis
	// Cluster serves from one master.
	all, err := check.GetProjects(t.Context(), l.confirmed)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range all {
		if p == nil || p.Name != l.confirmed[i] {
			lost = append(lost, l.confirmed[i]+" (not in GetProjects)")
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged config puts lost: %s", len(lost), len(l.confirmed), strings.Join(lost, ", "))
	}
	if l.slowest > 10*time.Second {
		t.Errorf("the slowest operation took %v", l.slowest)
	}
	rel := func(at time.Time) string {
		if at.IsZero() {
			return "none"
		}
		return at.Sub(killed).Round(time.Millisecond).String()
	}
	t.Logf("kill -9 of the master at 0; promotion seen at %s; first store_unavailable at %s, last at %s; all operations succeed again at %s; slowest operation %v",
		rel(promotedAt), rel(l.firstFail), rel(l.lastFail), rel(recovered), l.slowest.Round(time.Millisecond))
	for name, o := range l.ops {
		t.Logf("  %-16s %5d ok, %4d store_unavailable", name, o.ok, o.unavailable)
	}
	t.Logf("  acknowledged config puts: %d, lost: %d", len(l.confirmed), len(lost))
}

// waitUntil polls cond every 50 ms until it holds, failing t when ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not the case in time", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
