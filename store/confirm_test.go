package store_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/store"
)

// backends are the servers the confirmation and lock suites run against:
// a real redis-server, and miniredis, which development mode uses.
var backends = []struct {
	name     string
	newStore func(t *testing.T) *store.Store
}{
	{"redis", func(t *testing.T) *store.Store { return newStore(t, store.Config{}) }},
	{"miniredis", newMiniStore},
}

// newMiniStore returns a Store on a fresh miniredis, closed when t ends.
// Its TTLs run on the wall clock (ClockTTL), as a real Redis's do: by
// default miniredis only expires keys on FastForward.
func newMiniStore(t *testing.T) *store.Store {
	t.Helper()
	mr := miniredis.RunT(t)
	mr.ClockTTL(true)
	return newStore(t, store.Config{URL: "redis://" + mr.Addr()})
}

// runBackends runs each test of suite on each backend, on a fresh store.
func runBackends(t *testing.T, suite map[string]func(t *testing.T, s *store.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for name, test := range suite {
				t.Run(name, func(t *testing.T) { test(t, b.newStore(t)) })
			}
		})
	}
}

// eventually polls cond every 10ms until it holds, failing t after 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not the case after 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sampleConfirmation(token, project, action, user string) *berth.Confirmation {
	return &berth.Confirmation{
		Token: token, Project: project, Action: action, User: user,
		RequestID: "req-" + token,
		Args:      json.RawMessage(`{"services":["app"],"volumes":true}`),
		Digest:    "sha256:" + token,
		Plan:      json.RawMessage(`{"remove":["web-app-1"],"note":"a<b>&c"}`),
		CreatedAt: t0,
		// Far ahead, so that it stays pending whatever the wall clock.
		ExpiresAt: time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func TestConfirmations(t *testing.T) {
	runBackends(t, map[string]func(t *testing.T, s *store.Store){
		"RoundTrip":        testConfirmRoundTrip,
		"ReplaceTriple":    testConfirmReplace,
		"TakeTwice":        testConfirmTakeTwice,
		"ConcurrentTakes":  testConfirmConcurrentTakes,
		"Expiry":           testConfirmExpiry,
		"Pending":          testConfirmPending,
		"PendingExpiry":    testConfirmPendingExpiry,
		"InvalidArguments": testConfirmInvalid,
	})
}

func testConfirmRoundTrip(t *testing.T, s *store.Store) {
	ctx := t.Context()
	c := sampleConfirmation("tok1", "web", "down", "alice")
	if err := s.PutConfirmation(ctx, c, time.Hour); err != nil {
		t.Fatalf("PutConfirmation: %v", err)
	}
	got, err := s.PeekConfirmation(ctx, "tok1")
	if err != nil {
		t.Fatalf("PeekConfirmation: %v", err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("PeekConfirmation = %+v\nwant %+v", got, c)
	}
	if string(got.Plan) != string(c.Plan) {
		t.Errorf("plan %s, want the same bytes as %s", got.Plan, c.Plan)
	}
	tok, err := s.LatestConfirmation(ctx, "web", "down", "alice")
	if err != nil || tok != "tok1" {
		t.Errorf("LatestConfirmation = %q, %v; want tok1", tok, err)
	}
	for _, key := range []string{s.Keys().Confirm("tok1"), s.Keys().ConfirmFor("web", "down", "alice"), s.Keys().PendingFor("alice")} {
		if pttl := s.Client().PTTL(ctx, key).Val(); pttl <= 59*time.Minute || pttl > time.Hour {
			t.Errorf("PTTL of %s = %v, want the keep (1h)", key, pttl)
		}
	}
	// Other triples are not affected.
	for _, tr := range [][3]string{{"api", "down", "alice"}, {"web", "rollback", "alice"}, {"web", "down", "bob"}} {
		_, err := s.LatestConfirmation(ctx, tr[0], tr[1], tr[2])
		wantCode(t, err, events.CodeNotFound)
	}

	ok, err := s.TakeConfirmation(ctx, got)
	if err != nil || !ok {
		t.Fatalf("TakeConfirmation = %v, %v; want true", ok, err)
	}
	_, err = s.PeekConfirmation(ctx, "tok1")
	e := wantCode(t, err, events.CodeNotFound)
	if e.Hint != "ask for a new plan by sending the command without confirm" || !strings.Contains(e.Message, "tok1") {
		t.Errorf("not_found error %q (hint %q) should name the token and hint at a new plan", e.Message, e.Hint)
	}
	_, err = s.LatestConfirmation(ctx, "web", "down", "alice")
	wantCode(t, err, events.CodeNotFound)
	if n, err := s.PendingConfirmations(ctx, "alice"); err != nil || n != 0 {
		t.Errorf("PendingConfirmations after take = %d, %v; want 0", n, err)
	}
}

func testConfirmReplace(t *testing.T, s *store.Store) {
	ctx := t.Context()
	first := sampleConfirmation("tok1", "web", "down", "alice")
	second := sampleConfirmation("tok2", "web", "down", "alice")
	for _, c := range []*berth.Confirmation{first, second} {
		if err := s.PutConfirmation(ctx, c, time.Hour); err != nil {
			t.Fatalf("PutConfirmation(%s): %v", c.Token, err)
		}
	}
	_, err := s.PeekConfirmation(ctx, "tok1")
	wantCode(t, err, events.CodeNotFound)
	if ok, err := s.TakeConfirmation(ctx, first); err != nil || ok {
		t.Errorf("TakeConfirmation of the replaced token = %v, %v; want false", ok, err)
	}
	if tok, err := s.LatestConfirmation(ctx, "web", "down", "alice"); err != nil || tok != "tok2" {
		t.Errorf("LatestConfirmation = %q, %v; want tok2", tok, err)
	}
	// Taking the stale token did not drop the pointer to the new one.
	if got, err := s.PeekConfirmation(ctx, "tok2"); err != nil || got.Token != "tok2" {
		t.Errorf("PeekConfirmation(tok2) = %+v, %v", got, err)
	}
	if n, err := s.PendingConfirmations(ctx, "alice"); err != nil || n != 1 {
		t.Errorf("PendingConfirmations = %d, %v; want 1", n, err)
	}

	// Putting the latest token again keeps it.
	if err := s.PutConfirmation(ctx, second, time.Hour); err != nil {
		t.Fatalf("PutConfirmation again: %v", err)
	}
	if _, err := s.PeekConfirmation(ctx, "tok2"); err != nil {
		t.Errorf("PeekConfirmation after putting it again: %v", err)
	}
	if n, err := s.PendingConfirmations(ctx, "alice"); err != nil || n != 1 {
		t.Errorf("PendingConfirmations after putting it again = %d, %v; want 1", n, err)
	}
}

func testConfirmTakeTwice(t *testing.T, s *store.Store) {
	ctx := t.Context()
	c := sampleConfirmation("tok1", "web", "down", "alice")
	if err := s.PutConfirmation(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.TakeConfirmation(ctx, c); err != nil || !ok {
		t.Fatalf("first TakeConfirmation = %v, %v; want true", ok, err)
	}
	if ok, err := s.TakeConfirmation(ctx, c); err != nil || ok {
		t.Errorf("second TakeConfirmation = %v, %v; want false", ok, err)
	}
	if ok, err := s.TakeConfirmation(ctx, sampleConfirmation("never", "web", "down", "alice")); err != nil || ok {
		t.Errorf("TakeConfirmation of an unknown token = %v, %v; want false", ok, err)
	}
}

func testConfirmConcurrentTakes(t *testing.T, s *store.Store) {
	ctx := t.Context()
	c := sampleConfirmation("tok1", "web", "down", "alice")
	if err := s.PutConfirmation(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	const takers = 20
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		won   = make([]bool, takers)
		errs  = make([]error, takers)
	)
	for i := range takers {
		wg.Go(func() {
			<-start
			won[i], errs[i] = s.TakeConfirmation(ctx, c)
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	for i := range takers {
		if errs[i] != nil {
			t.Errorf("taker %d: %v", i, errs[i])
		}
		if won[i] {
			winners++
		}
	}
	if winners != 1 {
		t.Errorf("%d of %d concurrent takers won, want exactly 1", winners, takers)
	}
}

func testConfirmExpiry(t *testing.T, s *store.Store) {
	ctx := t.Context()
	c := sampleConfirmation("tok1", "web", "down", "alice")
	if err := s.PutConfirmation(ctx, c, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a confirmation kept 100ms is gone", func() bool {
		_, err := s.PeekConfirmation(ctx, "tok1")
		if err != nil && events.ErrorCode(err) != events.CodeNotFound {
			t.Fatalf("PeekConfirmation: %v", err)
		}
		return err != nil
	})
	_, err := s.LatestConfirmation(ctx, "web", "down", "alice")
	wantCode(t, err, events.CodeNotFound)
	if ok, err := s.TakeConfirmation(ctx, c); err != nil || ok {
		t.Errorf("TakeConfirmation of an expired token = %v, %v; want false", ok, err)
	}
	if n := s.Client().Exists(ctx, s.Keys().PendingFor("alice")).Val(); n != 0 {
		t.Errorf("pending set of alice outlived the keep of her only confirmation")
	}
}

func testConfirmPending(t *testing.T, s *store.Store) {
	ctx := t.Context()
	if n, err := s.PendingConfirmations(ctx, "alice"); err != nil || n != 0 {
		t.Fatalf("PendingConfirmations with none = %d, %v; want 0", n, err)
	}
	past := sampleConfirmation("old", "web", "stop", "alice")
	past.ExpiresAt = time.Now().Add(-time.Minute)
	for _, c := range []*berth.Confirmation{
		sampleConfirmation("a1", "web", "down", "alice"),
		sampleConfirmation("a2", "web", "down", "alice"), // replaces a1
		sampleConfirmation("a3", "api", "down", "alice"),
		sampleConfirmation("a4", "web", "rollback", "alice"),
		sampleConfirmation("b1", "web", "down", "bob"),
		past, // no longer valid, though kept
	} {
		if err := s.PutConfirmation(ctx, c, time.Hour); err != nil {
			t.Fatalf("PutConfirmation(%s): %v", c.Token, err)
		}
	}
	if n, err := s.PendingConfirmations(ctx, "alice"); err != nil || n != 3 {
		t.Errorf("PendingConfirmations(alice) = %d, %v; want 3", n, err)
	}
	if n, err := s.PendingConfirmations(ctx, "bob"); err != nil || n != 1 {
		t.Errorf("PendingConfirmations(bob) = %d, %v; want 1", n, err)
	}
	// The expired one stays peekable until its keep ends.
	if _, err := s.PeekConfirmation(ctx, "old"); err != nil {
		t.Errorf("PeekConfirmation of a kept, expired confirmation: %v", err)
	}
	if ok, err := s.TakeConfirmation(ctx, sampleConfirmation("a3", "api", "down", "alice")); err != nil || !ok {
		t.Fatalf("TakeConfirmation(a3) = %v, %v", ok, err)
	}
	if n, err := s.PendingConfirmations(ctx, "alice"); err != nil || n != 2 {
		t.Errorf("PendingConfirmations(alice) after a take = %d, %v; want 2", n, err)
	}
}

func testConfirmPendingExpiry(t *testing.T, s *store.Store) {
	ctx := t.Context()
	c := sampleConfirmation("tok1", "web", "down", "alice")
	c.ExpiresAt = time.Now().Add(100 * time.Millisecond)
	if err := s.PutConfirmation(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PendingConfirmations(ctx, "alice"); err != nil || n != 1 {
		t.Fatalf("PendingConfirmations = %d, %v; want 1", n, err)
	}
	eventually(t, "a confirmation valid for 100ms is no longer pending", func() bool {
		n, err := s.PendingConfirmations(ctx, "alice")
		if err != nil {
			t.Fatalf("PendingConfirmations: %v", err)
		}
		return n == 0
	})
}

func testConfirmInvalid(t *testing.T, s *store.Store) {
	ctx := t.Context()
	good := sampleConfirmation("tok1", "web", "down", "alice")
	wantCode(t, s.PutConfirmation(ctx, good, 0), events.CodeInternal)
	wantCode(t, s.PutConfirmation(ctx, nil, time.Hour), events.CodeBadRequest)
	for _, c := range []*berth.Confirmation{
		sampleConfirmation("", "web", "down", "alice"),
		sampleConfirmation("web:down:alice", "web", "down", "alice"),
		sampleConfirmation("tok1", "", "down", "alice"),
		sampleConfirmation("tok1", "web", "", "alice"),
		sampleConfirmation("tok1", "web", "down", ""),
	} {
		wantCode(t, s.PutConfirmation(ctx, c, time.Hour), events.CodeBadRequest)
		_, err := s.TakeConfirmation(ctx, c)
		wantCode(t, err, events.CodeBadRequest)
	}

	// A token that names a triple's key is unknown, not a corrupt value.
	if err := s.PutConfirmation(ctx, good, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, token := range []string{"", "web:down:alice"} {
		_, err := s.PeekConfirmation(ctx, token)
		wantCode(t, err, events.CodeNotFound)
	}

	if err := s.Client().Set(ctx, s.Keys().Confirm("bad"), "{broken", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.PeekConfirmation(ctx, "bad")
	wantCode(t, err, events.CodeInternal)
}

// TestMiniredisTTLNeedsClockTTL documents why newMiniStore turns ClockTTL
// on: without it, miniredis never expires a key on its own.
func TestMiniredisTTLNeedsClockTTL(t *testing.T) {
	mr := miniredis.RunT(t)
	s := newStore(t, store.Config{URL: "redis://" + mr.Addr()})
	ctx := t.Context()
	if err := s.PutConfirmation(ctx, sampleConfirmation("tok1", "web", "down", "alice"), 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := s.PeekConfirmation(ctx, "tok1"); err != nil {
		t.Fatalf("miniredis expired a key without ClockTTL (%v): newMiniStore's comment is stale", err)
	}
	mr.FastForward(time.Second)
	_, err := s.PeekConfirmation(ctx, "tok1")
	wantCode(t, err, events.CodeNotFound)
}
