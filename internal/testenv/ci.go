// Package testenv starts the real services integration tests run against: a
// nats-server with JetStream (in-process), a redis-server process, and
// compose projects on the local Docker Engine. When a dependency is missing a
// test is skipped, except when the CI environment variable is set: there a
// missing dependency fails the test, so integration tests always run in CI.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run in CI, where skipping is a failure.
func InCI() bool { return os.Getenv("CI") != "" }

// Unavailable skips t because a dependency is missing, or fails it in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("integration dependency unavailable in CI: "+format, args...)
	}
	t.Skipf("integration dependency unavailable: "+format, args...)
}

// Integration skips t under -short (outside CI), so `go test -short` runs
// only the unit tests.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() && !InCI() {
		t.Skip("integration test skipped with -short")
	}
}
