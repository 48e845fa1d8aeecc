package store_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/store"
)

func TestMigrate(t *testing.T) {
	t.Run("redis", func(t *testing.T) { testMigrate(t, newStore(t, store.Config{})) })
	t.Run("miniredis", func(t *testing.T) {
		// The store of the worker's dev mode.
		mr := miniredis.RunT(t)
		testMigrate(t, newStore(t, store.Config{URL: "redis://" + mr.Addr()}))
	})
}

// testMigrate writes keys in the former layout, without hash slots, and
// checks that Migrate moves them where the store reads them, with their
// TTLs, leaves alone an old key whose new name holds something else, and
// does nothing more when run again.
func testMigrate(t *testing.T, s *store.Store) {
	ctx := t.Context()
	rc := s.Client()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	web, _ := json.Marshal(sampleProject("web"))
	sum := sha256.Sum256([]byte("/srv/prod/web"))
	conf, _ := json.Marshal(sampleConfirmation("tok", "web", "down", "alice"))
	lock, _ := json.Marshal(sampleLock("w1"))
	must(rc.Set(ctx, "berth:project:web", web, 0).Err())
	must(rc.SAdd(ctx, "berth:projects", "web").Err())
	must(rc.Set(ctx, "berth:claim:production:"+hex.EncodeToString(sum[:]), "web", 0).Err())
	must(rc.Set(ctx, "berth:claim:compose:berth-web", "web", 0).Err())
	must(rc.Set(ctx, "berth:status:web", `{"taken_at":"2026-03-01T12:00:00Z"}`, time.Hour).Err())
	must(rc.LPush(ctx, "berth:history:web", `{"request_id":"r1","action":"up","ok":true}`).Err())
	must(rc.HSet(ctx, "berth:lock:web", "owner", "w1", "info", lock).Err())
	must(rc.PExpire(ctx, "berth:lock:web", time.Minute).Err())
	must(rc.Set(ctx, "berth:confirm:tok", conf, time.Hour).Err())
	must(rc.Set(ctx, "berth:confirm:web:down:alice", "tok", time.Hour).Err())
	must(rc.ZAdd(ctx, "berth:pending:alice", redis.Z{Score: float64(time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()), Member: "tok"}).Err())
	// An old key whose new name holds another value stays; one whose new
	// name holds the same value (a copy cut short) goes.
	must(rc.Set(ctx, "berth:project:api", `{"name":"api","updated_by":"old"}`, 0).Err())
	must(rc.Set(ctx, s.Keys().Project("api"), `{"name":"api","updated_by":"new"}`, 0).Err())
	must(rc.Set(ctx, "berth:claim:compose:berth-api", "api", 0).Err())
	must(rc.Set(ctx, s.Keys().ClaimCompose("berth-api"), "api", 0).Err())
	// Request records and signatures keep their names.
	must(rc.Set(ctx, "berth:req:alice:r1", `{"id":"r1"}`, time.Hour).Err())

	m, err := s.Migrate(ctx)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if m.Moved != 11 || !slices.Equal(m.Kept, []string{"berth:project:api"}) {
		t.Fatalf("Migrate = %+v, want 11 moved and berth:project:api kept", m)
	}
	if p, err := s.GetProject(ctx, "web"); err != nil || p.ComposeProject != "berth-web" {
		t.Fatalf("GetProject(web) after Migrate = %+v, %v", p, err)
	}
	if p, st, err := s.GetProjectStatus(ctx, "web"); err != nil || p == nil || st == nil {
		t.Fatalf("GetProjectStatus(web) after Migrate = %+v, %+v, %v", p, st, err)
	}
	if names, err := s.ListProjects(ctx); err != nil || !slices.Equal(names, []string{"web"}) {
		t.Fatalf("ListProjects after Migrate = %q, %v", names, err)
	}
	if h, err := s.History(ctx, "web", 10); err != nil || len(h) != 1 {
		t.Fatalf("History after Migrate = %+v, %v", h, err)
	}
	if l, err := s.LockHolder(ctx, "web"); err != nil || l.Owner != "w1" {
		t.Fatalf("LockHolder after Migrate = %+v, %v", l, err)
	}
	if tok, err := s.LatestConfirmation(ctx, "web", "down", "alice"); err != nil || tok != "tok" {
		t.Fatalf("LatestConfirmation after Migrate = %q, %v", tok, err)
	}
	if _, err := s.PeekConfirmation(ctx, "tok"); err != nil {
		t.Fatalf("PeekConfirmation after Migrate: %v", err)
	}
	if n, err := s.PendingConfirmations(ctx, "alice"); err != nil || n != 1 {
		t.Fatalf("PendingConfirmations after Migrate = %d, %v", n, err)
	}
	// The claims moved: another project cannot take web's compose project.
	other := sampleProject("other")
	other.ComposeProject = "berth-web"
	wantCode(t, s.PutProject(ctx, other), events.CodeConflict)
	for key, want := range map[string]time.Duration{s.Keys().Status("web"): time.Hour, s.Keys().Lock("web"): time.Minute} {
		if ttl := rc.PTTL(ctx, key).Val(); ttl <= 0 || ttl > want {
			t.Errorf("TTL of %s after Migrate: %v, want up to %v", key, ttl, want)
		}
	}
	for _, key := range []string{"berth:project:web", "berth:projects", "berth:claim:compose:berth-api", "berth:history:web"} {
		if rc.Exists(ctx, key).Val() != 0 { // one key a call: they are in different slots
			t.Errorf("moved key %s is still there", key)
		}
	}

	m, err = s.Migrate(ctx)
	if err != nil || m.Moved != 0 || !slices.Equal(m.Kept, []string{"berth:project:api"}) {
		t.Fatalf("Migrate again = %+v, %v; want nothing moved", m, err)
	}
}
