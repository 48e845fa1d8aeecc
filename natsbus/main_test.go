package natsbus

import (
	"os"
	"testing"

	"github.com/berth-ops/berth/internal/testenv"
)

// TestMain serves as a NATS cluster node when testenv started this binary
// as one.
func TestMain(m *testing.M) {
	testenv.ServeNATSNode()
	os.Exit(m.Run())
}
