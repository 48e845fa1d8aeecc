package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

var _ berth.Locks = (*Store)(nil)

// A lock is a hash with two fields, whose TTL is the lease: owner, the
// lease owner's id, which the scripts compare byte for byte (no JSON
// decoding in Lua, so the same scripts behave alike on Redis and
// miniredis, whatever the owner holds), and info, the JSON of
// berth.LockInfo that AcquireLock and LockHolder return.

// acquireLockScript takes a free lock, or returns the holder's info.
//
// KEYS: lock:<p>. ARGV: owner, info JSON, lease (ms).
// It returns nil when it took the lock, else the holder's info ("" if the
// hash has none).
var acquireLockScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
	return redis.call('HGET', KEYS[1], 'info') or ''
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'info', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return false
`)

// extendLockScript renews the lease if ARGV[1] owns the lock: it returns 1
// when it did, 0 otherwise.
//
// KEYS: lock:<p>. ARGV: owner, lease (ms).
var extendLockScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return 1
end
return 0
`)

// releaseLockScript deletes the lock if ARGV[1] owns it: it returns 1 when
// it did, 0 otherwise.
//
// KEYS: lock:<p>. ARGV: owner.
var releaseLockScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)

// decodeLock decodes the info field of the lock at key.
func decodeLock(key, raw string) (*berth.LockInfo, error) {
	var info berth.LockInfo
	if err := json.Unmarshal([]byte(raw), &info); err != nil {
		return nil, corrupt(key, err)
	}
	return &info, nil
}

// AcquireLock takes project's lock for info.Owner for lease, unless it is
// held, atomically. It returns info and true when it took the lock, and the
// holder and false when the lock is held, by another owner or by
// info.Owner itself (a lock is not reentrant).
func (s *Store) AcquireLock(ctx context.Context, project string, info *berth.LockInfo, lease time.Duration) (*berth.LockInfo, bool, error) {
	if err := checkTTL("acquire lock", lease); err != nil {
		return nil, false, err
	}
	if info == nil || info.Owner == "" {
		return nil, false, events.Errorf(events.CodeBadRequest, "a lock of project %q needs an owner", project)
	}
	b, err := marshal(info)
	if err != nil {
		return nil, false, events.Errorf(events.CodeInternal, "encode lock of %q: %v", project, err)
	}
	key := s.keys.Lock(project)
	held, err := acquireLockScript.Run(ctx, s.rdb, []string{key}, info.Owner, b, lease.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return info, true, nil
	}
	if err != nil {
		return nil, false, s.fail("acquire lock of "+project, err)
	}
	holder, err := decodeLock(key, held)
	if err != nil {
		return nil, false, err
	}
	return holder, false, nil
}

// ExtendLock sets the lease of project's lock to lease from now if owner
// holds it. It returns false when the lock is lost: expired, released, or
// held by another owner.
func (s *Store) ExtendLock(ctx context.Context, project, owner string, lease time.Duration) (bool, error) {
	if err := checkTTL("extend lock", lease); err != nil {
		return false, err
	}
	n, err := extendLockScript.Run(ctx, s.rdb, []string{s.keys.Lock(project)}, owner, lease.Milliseconds()).Int()
	if err != nil {
		return false, s.fail("extend lock of "+project, err)
	}
	return n == 1, nil
}

// ReleaseLock releases project's lock if owner holds it. Releasing a lock
// that is free or held by another owner does nothing.
func (s *Store) ReleaseLock(ctx context.Context, project, owner string) error {
	if err := releaseLockScript.Run(ctx, s.rdb, []string{s.keys.Lock(project)}, owner).Err(); err != nil {
		return s.fail("release lock of "+project, err)
	}
	return nil
}

// LockHolder returns the holder of project's lock, or CodeNotFound when the
// lock is free.
func (s *Store) LockHolder(ctx context.Context, project string) (*berth.LockInfo, error) {
	key := s.keys.Lock(project)
	raw, err := s.rdb.HGet(ctx, key, "info").Result()
	if errors.Is(err, redis.Nil) {
		return nil, notFound("the project is not locked: no operation is running on it",
			"project %q is not locked", project)
	}
	if err != nil {
		return nil, s.fail("get lock holder of "+project, err)
	}
	return decodeLock(key, raw)
}
