package store

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Migration says what Migrate did.
type Migration struct {
	// Moved counts the keys moved to their current names.
	Moved int
	// Kept lists the keys of the former layout left in place because the
	// key of the current layout exists and holds something else: written
	// since by a worker of this version. Nothing reads them.
	Kept []string
}

// formerKey maps the keys of one kind of the former layout, <prefix><old>...
// (without hash slots), to their current names, given what follows <old>.
type formerKey struct {
	old     string
	current func(rest string) string
}

// formerLayout lists the kinds of keys whose names changed. Request records
// and signatures kept theirs.
func (k Keys) formerLayout() []formerKey {
	return []formerKey{
		{"project:", k.Project},
		{"claim:production:", func(h string) string { return k.prefix + cfgSlot + "claim:production:" + h }},
		{"claim:compose:", k.ClaimCompose},
		{"status:", k.Status},
		{"history:", k.History},
		{"lock:", k.Lock},
		{"pending:", k.PendingFor},
		{"confirm:", func(rest string) string {
			// A token holds no ':'; the latest pointer of a
			// (project, action, user) triple does.
			if strings.Contains(rest, ":") {
				return k.prefix + confirmSlot + "latest:" + rest
			}
			return k.Confirm(rest)
		}},
	}
}

// Migrate moves the keys of the former layout, which had no hash slots
// (<prefix>project:<p>, <prefix>projects, <prefix>status:<p>...), to their
// current names (see Keys), keeping their TTLs. A key whose current name
// exists stays where it is (Migration.Kept), unless it holds the same
// value, when it is deleted. Running it again does nothing more: call it
// when the worker starts, before it serves commands. Workers of the former
// version must be stopped first: they would go on writing the old keys.
//
// On a single server and with Sentinel a key is moved with RENAMENX, at
// once; on a cluster the old and the new name are in different slots, so
// it is copied (DUMP, RESTORE with its TTL) and then deleted.
func (s *Store) Migrate(ctx context.Context) (Migration, error) {
	var m Migration
	olds, err := s.formerKeys(ctx)
	if err != nil {
		return m, s.fail("list the keys of the former layout", err)
	}
	for old, current := range olds {
		moved, err := s.move(ctx, old, current)
		if err != nil {
			return m, s.fail("move "+old+" to "+current, err)
		}
		if moved {
			m.Moved++
		} else {
			m.Kept = append(m.Kept, old)
		}
	}
	return m, nil
}

// formerKeys returns the keys of the former layout that exist, with their
// current names. On a cluster, it scans every master.
func (s *Store) formerKeys(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	set := s.keys.prefix + "projects"
	n, err := s.rdb.Exists(ctx, set).Result()
	if err != nil {
		return nil, err
	}
	if n == 1 {
		out[set] = s.keys.Projects()
	}
	cluster, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return out, s.scanFormer(ctx, s.rdb, out)
	}
	var mu sync.Mutex
	err = cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		found := map[string]string{}
		err := s.scanFormer(ctx, node, found)
		mu.Lock()
		defer mu.Unlock()
		maps.Copy(out, found)
		return err
	})
	return out, err
}

// scanFormer adds to out the keys of the former layout that c holds (but
// the set of projects), with their current names.
func (s *Store) scanFormer(ctx context.Context, c redis.Cmdable, out map[string]string) error {
	for _, f := range s.keys.formerLayout() {
		start := s.keys.prefix + f.old
		it := c.Scan(ctx, 0, globEscape(start)+"*", 1000).Iterator()
		for it.Next(ctx) {
			out[it.Val()] = f.current(strings.TrimPrefix(it.Val(), start))
		}
		if err := it.Err(); err != nil {
			return err
		}
	}
	return nil
}

// globEscape escapes the characters of s that SCAN's MATCH pattern would
// take for wildcards.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// move moves the key old to current, which the caller found missing or
// not. It returns false when it left old in place because current holds
// something else.
func (s *Store) move(ctx context.Context, old, current string) (bool, error) {
	if s.mode != Cluster {
		ok, err := s.rdb.RenameNX(ctx, old, current).Result()
		if err != nil || ok {
			return ok, err
		}
		return s.dropIfSame(ctx, old, current)
	}
	dump, err := s.rdb.Dump(ctx, old).Result()
	if errors.Is(err, redis.Nil) {
		return true, nil // gone meanwhile: expired, or moved by another worker
	}
	if err != nil {
		return false, err
	}
	pttl, err := s.rdb.Do(ctx, "PTTL", old).Int64()
	if err != nil {
		return false, err
	}
	var ttl time.Duration // 0: no TTL
	switch {
	case pttl == -2:
		return true, nil
	case pttl > 0:
		ttl = time.Duration(pttl) * time.Millisecond
	}
	err = s.rdb.Restore(ctx, current, ttl, dump).Err()
	if hasReplyPrefix(err, []string{"BUSYKEY"}) {
		return s.dropIfSame(ctx, old, current)
	}
	if err != nil {
		return false, err
	}
	return true, s.rdb.Del(ctx, old).Err()
}

// dropIfSame deletes old if current holds the same value (a copy that was
// not followed by the deletion of old), and reports whether it did.
func (s *Store) dropIfSame(ctx context.Context, old, current string) (bool, error) {
	a, err := s.rdb.Dump(ctx, old).Result()
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	b, err := s.rdb.Dump(ctx, current).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	if a != b {
		return false, nil
	}
	return true, s.rdb.Del(ctx, old).Err()
}
