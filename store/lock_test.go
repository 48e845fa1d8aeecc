package store_test

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/store"
)

func sampleLock(owner string) *berth.LockInfo {
	return &berth.LockInfo{
		Owner: owner, RequestID: "req-" + owner, User: "alice", Action: "down",
		Worker: "worker-" + owner, Since: t0,
	}
}

func TestLocks(t *testing.T) {
	runBackends(t, map[string]func(t *testing.T, s *store.Store){
		"AcquireConflict":    testLockAcquireConflict,
		"Extend":             testLockExtend,
		"Release":            testLockRelease,
		"LeaseExpiry":        testLockLeaseExpiry,
		"ConcurrentAcquires": testLockConcurrentAcquires,
		"InvalidArguments":   testLockInvalid,
	})
}

func testLockAcquireConflict(t *testing.T, s *store.Store) {
	ctx := t.Context()
	_, err := s.LockHolder(ctx, "web")
	wantCode(t, err, events.CodeNotFound)

	a := sampleLock("owner-a")
	got, ok, err := s.AcquireLock(ctx, "web", a, time.Minute)
	if err != nil || !ok || !reflect.DeepEqual(got, a) {
		t.Fatalf("AcquireLock of a free lock = %+v, %v, %v; want the info, true", got, ok, err)
	}
	if pttl := s.Client().PTTL(ctx, s.Keys().Lock("web")).Val(); pttl <= 59*time.Second || pttl > time.Minute {
		t.Errorf("lock PTTL = %v, want the lease (1m)", pttl)
	}
	holder, err := s.LockHolder(ctx, "web")
	if err != nil || !reflect.DeepEqual(holder, a) {
		t.Errorf("LockHolder = %+v, %v; want %+v", holder, err, a)
	}

	for _, owner := range []string{"owner-b", "owner-a"} { // not reentrant
		got, ok, err = s.AcquireLock(ctx, "web", sampleLock(owner), time.Hour)
		if err != nil || ok || !reflect.DeepEqual(got, a) {
			t.Errorf("AcquireLock of a held lock by %s = %+v, %v, %v; want the holder, false", owner, got, ok, err)
		}
	}
	if pttl := s.Client().PTTL(ctx, s.Keys().Lock("web")).Val(); pttl > time.Minute {
		t.Errorf("a failed AcquireLock changed the lease to %v", pttl)
	}

	// Projects are locked apart.
	b := sampleLock("owner-b")
	if got, ok, err := s.AcquireLock(ctx, "api", b, time.Minute); err != nil || !ok || !reflect.DeepEqual(got, b) {
		t.Errorf("AcquireLock of another project = %+v, %v, %v; want true", got, ok, err)
	}
}

func testLockExtend(t *testing.T, s *store.Store) {
	ctx := t.Context()
	if ok, err := s.ExtendLock(ctx, "web", "owner-a", time.Minute); err != nil || ok {
		t.Errorf("ExtendLock of a free lock = %v, %v; want false", ok, err)
	}
	if _, ok, err := s.AcquireLock(ctx, "web", sampleLock("owner-a"), time.Second); err != nil || !ok {
		t.Fatalf("AcquireLock = %v, %v", ok, err)
	}
	if ok, err := s.ExtendLock(ctx, "web", "owner-b", time.Hour); err != nil || ok {
		t.Errorf("ExtendLock by another owner = %v, %v; want false", ok, err)
	}
	if pttl := s.Client().PTTL(ctx, s.Keys().Lock("web")).Val(); pttl > time.Second {
		t.Errorf("ExtendLock by another owner changed the lease to %v", pttl)
	}
	// A prefix of the owner is not the owner.
	if ok, err := s.ExtendLock(ctx, "web", "owner-", time.Hour); err != nil || ok {
		t.Errorf("ExtendLock by a prefix of the owner = %v, %v; want false", ok, err)
	}
	if ok, err := s.ExtendLock(ctx, "web", "owner-a", time.Minute); err != nil || !ok {
		t.Fatalf("ExtendLock by the owner = %v, %v; want true", ok, err)
	}
	if pttl := s.Client().PTTL(ctx, s.Keys().Lock("web")).Val(); pttl <= 59*time.Second || pttl > time.Minute {
		t.Errorf("lock PTTL after extend = %v, want the new lease (1m)", pttl)
	}
	if holder, err := s.LockHolder(ctx, "web"); err != nil || holder.Owner != "owner-a" {
		t.Errorf("LockHolder after extend = %+v, %v", holder, err)
	}
}

func testLockRelease(t *testing.T, s *store.Store) {
	ctx := t.Context()
	if err := s.ReleaseLock(ctx, "web", "owner-a"); err != nil {
		t.Errorf("ReleaseLock of a free lock: %v", err)
	}
	a := sampleLock("owner-a")
	if _, ok, err := s.AcquireLock(ctx, "web", a, time.Minute); err != nil || !ok {
		t.Fatalf("AcquireLock = %v, %v", ok, err)
	}
	for _, other := range []string{"owner-b", "", "owner-"} {
		if err := s.ReleaseLock(ctx, "web", other); err != nil {
			t.Errorf("ReleaseLock by %q: %v, want a no-op", other, err)
		}
	}
	if holder, err := s.LockHolder(ctx, "web"); err != nil || !reflect.DeepEqual(holder, a) {
		t.Fatalf("LockHolder after others' releases = %+v, %v; want owner-a", holder, err)
	}
	if err := s.ReleaseLock(ctx, "web", "owner-a"); err != nil {
		t.Fatalf("ReleaseLock by the owner: %v", err)
	}
	_, err := s.LockHolder(ctx, "web")
	wantCode(t, err, events.CodeNotFound)
	if ok, err := s.ExtendLock(ctx, "web", "owner-a", time.Minute); err != nil || ok {
		t.Errorf("ExtendLock after release = %v, %v; want false", ok, err)
	}
	b := sampleLock("owner-b")
	if got, ok, err := s.AcquireLock(ctx, "web", b, time.Minute); err != nil || !ok || !reflect.DeepEqual(got, b) {
		t.Errorf("AcquireLock after release = %+v, %v, %v; want true", got, ok, err)
	}
	// A late release by the former owner leaves the new holder alone.
	if err := s.ReleaseLock(ctx, "web", "owner-a"); err != nil {
		t.Fatal(err)
	}
	if holder, err := s.LockHolder(ctx, "web"); err != nil || holder.Owner != "owner-b" {
		t.Errorf("LockHolder after a stale release = %+v, %v; want owner-b", holder, err)
	}
}

func testLockLeaseExpiry(t *testing.T, s *store.Store) {
	ctx := t.Context()
	if _, ok, err := s.AcquireLock(ctx, "web", sampleLock("owner-a"), 100*time.Millisecond); err != nil || !ok {
		t.Fatalf("AcquireLock = %v, %v", ok, err)
	}
	eventually(t, "a lock leased for 100ms is free", func() bool {
		_, err := s.LockHolder(ctx, "web")
		if err != nil && events.ErrorCode(err) != events.CodeNotFound {
			t.Fatalf("LockHolder: %v", err)
		}
		return err != nil
	})
	if ok, err := s.ExtendLock(ctx, "web", "owner-a", time.Minute); err != nil || ok {
		t.Errorf("ExtendLock of an expired lease = %v, %v; want false", ok, err)
	}
	if _, ok, err := s.AcquireLock(ctx, "web", sampleLock("owner-b"), time.Minute); err != nil || !ok {
		t.Errorf("AcquireLock after the lease expired = %v, %v; want true", ok, err)
	}
}

func testLockConcurrentAcquires(t *testing.T, s *store.Store) {
	ctx := t.Context()
	const workers = 20
	type result struct {
		holder *berth.LockInfo
		ok     bool
		err    error
	}
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]result, workers)
	)
	for i := range workers {
		wg.Go(func() {
			<-start
			h, ok, err := s.AcquireLock(ctx, "web", sampleLock(fmt.Sprintf("owner-%d", i)), time.Minute)
			results[i] = result{h, ok, err}
		})
	}
	close(start)
	wg.Wait()
	var winner *berth.LockInfo
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("worker %d: %v", i, r.err)
		}
		if r.ok {
			if winner != nil {
				t.Fatalf("both %s and %s acquired the lock", winner.Owner, r.holder.Owner)
			}
			winner = r.holder
		}
	}
	if winner == nil {
		t.Fatal("no worker acquired the lock")
	}
	for i, r := range results {
		if !reflect.DeepEqual(r.holder, winner) {
			t.Errorf("worker %d saw holder %+v, want the winner %+v", i, r.holder, winner)
		}
	}
	if holder, err := s.LockHolder(ctx, "web"); err != nil || !reflect.DeepEqual(holder, winner) {
		t.Errorf("LockHolder = %+v, %v; want the winner %+v", holder, err, winner)
	}
}

func testLockInvalid(t *testing.T, s *store.Store) {
	ctx := t.Context()
	_, _, err := s.AcquireLock(ctx, "web", sampleLock("a"), 0)
	wantCode(t, err, events.CodeInternal)
	_, _, err = s.AcquireLock(ctx, "web", nil, time.Minute)
	wantCode(t, err, events.CodeBadRequest)
	_, _, err = s.AcquireLock(ctx, "web", sampleLock(""), time.Minute)
	wantCode(t, err, events.CodeBadRequest)
	_, err = s.ExtendLock(ctx, "web", "a", 0)
	wantCode(t, err, events.CodeInternal)

	if err := s.Client().HSet(ctx, s.Keys().Lock("web"), "owner", "a", "info", "{broken").Err(); err != nil {
		t.Fatal(err)
	}
	_, err = s.LockHolder(ctx, "web")
	wantCode(t, err, events.CodeInternal)
	_, _, err = s.AcquireLock(ctx, "web", sampleLock("b"), time.Minute)
	wantCode(t, err, events.CodeInternal)
}
