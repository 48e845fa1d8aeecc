package store

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClaimSignature records that a signed command with this signature is
// stream message seq, for ttl (the signature's validity window). It
// returns false when the signature was already claimed by another message:
// a replay. A redelivery of the same message (same seq) is not a replay.
func (s *Store) ClaimSignature(ctx context.Context, sig string, seq uint64, ttl time.Duration) (bool, error) {
	key := s.keys.Signature(sig)
	val := strconv.FormatUint(seq, 10)
	set, err := s.rdb.SetNX(ctx, key, val, ttl).Result()
	if err != nil {
		return false, s.fail("claim signature", err)
	}
	if set {
		return true, nil
	}
	got, err := s.rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		// Expired in between: the window is over, so this is stale anyway.
		return false, nil
	}
	if err != nil {
		return false, s.fail("claim signature", err)
	}
	return seq != 0 && got == val, nil
}
