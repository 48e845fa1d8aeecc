package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth/events"
)

// writeConfig runs script, which writes configuration (keys, all in the
// {cfg} slot), and returns its reply. When the store waits for replicas
// (Config.WaitReplicas), it sends WAIT right after the script on the same
// connection: Redis replicates asynchronously, and a write that only the
// master holds is lost if a replica is promoted before it arrives. WAIT
// counts the replicas that acknowledged every write of its connection.
//
// An error is the store's: a write that the replicas did not acknowledge
// in time gives CodeStoreUnavailable, although the master has it.
func (s *Store) writeConfig(ctx context.Context, op string, script *redis.Script, keys []string, args ...any) (*redis.Cmd, error) {
	if s.waitReplicas == 0 {
		return script.Run(ctx, s.rdb, keys, args...), nil
	}
	// A pipeline runs on one connection. On a cluster, that of the master
	// of the keys' slot: the cluster client would send the keyless WAIT
	// to any node.
	var conn redis.Cmdable = s.rdb
	cluster, isCluster := s.rdb.(*redis.ClusterClient)
	if isCluster {
		node, err := cluster.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, s.fail(op, err)
		}
		conn = node
	}
	var run *redis.Cmd
	var wait *redis.Cmd
	_, err := conn.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		// EVAL, not EVALSHA: a pipeline cannot load a missing script
		// and retry, and configuration is written seldom.
		run = script.Eval(ctx, pipe, keys, args...)
		wait = pipe.Do(ctx, "WAIT", s.waitReplicas, s.waitTimeout.Milliseconds())
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		if isCluster {
			// The node may have failed over or lost the slot: the
			// client learns the new layout for the next attempt.
			cluster.ReloadState(ctx)
		}
		if run.Err() != nil && !errors.Is(run.Err(), redis.Nil) {
			return nil, s.fail(op, run.Err())
		}
		return nil, s.fail(op, err)
	}
	if n, _ := wait.Int(); n < s.waitReplicas {
		return nil, events.Errorf(events.CodeStoreUnavailable,
			"Redis (%s): the master has the change, but %d of the %d replicas it waits for acknowledged it within %v, so a failover now could lose it",
			op, n, s.waitReplicas, s.waitTimeout).
			WithHint(fmt.Sprintf("check the replication of Redis at %s (INFO replication on the master), then send the command again", s.addr))
	}
	return run, nil
}
