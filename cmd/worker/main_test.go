package main

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth/internal/testenv"
)

// TestMain keeps go-redis's own dial-failure lines (the outage tests cause
// many) out of the test output. It serves as a NATS cluster node when
// testenv started this binary as one.
func TestMain(m *testing.M) {
	testenv.ServeNATSNode()
	redis.SetLogger(quietRedis{})
	os.Exit(m.Run())
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
