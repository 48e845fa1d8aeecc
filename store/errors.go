package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth/events"
)

// Redis error reply prefixes that mean the server cannot serve commands right
// now (loading its dataset, a read-only replica, a busy script, a cluster
// or a master failing over...).
var transientReplies = []string{"LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK", "NOREPLICAS"}

// Errors of go-redis's Sentinel and Cluster clients that mean no server
// can be reached; they wrap no network error.
var unreachableMessages = []string{
	"redis: all sentinels specified in configuration are unreachable",
	"redis: cluster has no nodes",
}

// Redis error reply prefixes that mean the credentials of the URL are wrong.
var authReplies = []string{"NOAUTH", "WRONGPASS", "NOPERM"}

// fail converts an error of the Redis client, from operation op (a few words
// such as "get project web"), into the error the store returns: a
// *events.Error with CodeStoreUnavailable when Redis cannot be reached, the
// cancellation error itself when ctx was canceled, and CodeInternal for
// anything else. It never returns nil for a non-nil err. redis.Nil must be
// handled by the caller, which knows what was missing.
func (s *Store) fail(op string, err error) error {
	var evErr *events.Error
	switch {
	case errors.As(err, &evErr):
		return err
	case errors.Is(err, context.Canceled):
		// The caller gave up; that says nothing about the store.
		return fmt.Errorf("store: %s: %w", op, err)
	case isUnavailable(err):
		return events.Errorf(events.CodeStoreUnavailable, "Redis is unavailable (%s): %v", op, err).
			WithHint(s.retryHint())
	case hasReplyPrefix(err, authReplies):
		return events.Errorf(events.CodeStoreUnavailable, "Redis refused the credentials (%s): %v", op, err).
			WithHint(fmt.Sprintf("check the user and password of the Redis URL of %s", s.addr))
	case hasReplyPrefix(err, transientReplies):
		return events.Errorf(events.CodeStoreUnavailable, "Redis cannot serve commands now (%s): %v", op, err).
			WithHint(s.retryHint())
	}
	return events.Errorf(events.CodeInternal, "Redis %s: %v", op, err).
		WithHint("this is a bug or an unexpected failure; check the worker log for this request id")
}

func (s *Store) retryHint() string {
	return fmt.Sprintf("check that Redis at %s is running and reachable; the command can be retried", s.addr)
}

// isUnavailable reports whether err means the connection to Redis failed:
// it could not be opened, broke, or did not answer in time.
func isUnavailable(err error) bool {
	if errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, redis.ErrPoolTimeout) ||
		errors.Is(err, redis.ErrPoolExhausted) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var recErr tls.RecordHeaderError
	if errors.As(err, &recErr) {
		return true
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return true
	}
	for _, m := range unreachableMessages {
		if strings.Contains(err.Error(), m) {
			return true
		}
	}
	return false
}

// hasReplyPrefix reports whether err is an error reply of the Redis server
// starting with one of prefixes.
func hasReplyPrefix(err error, prefixes []string) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	for _, p := range prefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// notFound returns the CodeNotFound error of a missing key.
func notFound(hint, format string, args ...any) error {
	return events.Errorf(events.CodeNotFound, format, args...).WithHint(hint)
}

// corrupt returns the error of a value that is not the JSON it should be.
func corrupt(key string, err error) error {
	return events.Errorf(events.CodeInternal, "Redis key %s holds invalid JSON: %v", key, err).
		WithHint("the stored value is corrupt; delete or rewrite the key")
}
