package natsbus

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ReplicasError says that the NATS servers cannot keep a stream with the
// replica count asked for: a single server keeps one copy, a cluster at
// most one per server.
type ReplicasError struct {
	Stream   string
	Replicas int
	// Clustered is false when the server runs without a cluster.
	Clustered bool
	Err       error
}

func (e *ReplicasError) Error() string {
	if !e.Clustered {
		return fmt.Sprintf("declare stream %s with %d replicas: the NATS server is not part of a cluster, so it keeps one copy: "+
			"start the worker with --replicas 1 (BERTH_REPLICAS=1), or connect it to a JetStream cluster of at least %d servers: %v",
			e.Stream, e.Replicas, e.Replicas, e.Err)
	}
	return fmt.Sprintf("declare stream %s with %d replicas: the NATS cluster has fewer than %d JetStream servers up: "+
		"start the missing servers, or give --replicas (BERTH_REPLICAS) no larger than the cluster: %v",
		e.Stream, e.Replicas, e.Replicas, e.Err)
}

func (e *ReplicasError) Unwrap() error { return e.Err }

// JetStream's error codes for a replica count the servers cannot place.
const (
	errCodeNoPeers              = 10005 // no suitable peers for placement
	errCodeInsufficientResource = 10023
	errCodeReplicasUnclustered  = 10074 // replicas > 1 not supported in non-clustered mode
	errCodeClusterUnavailable   = 10008 // JetStream system temporarily unavailable
	errCodeReplicasExceedStream = 10126 // consumer config replica count exceeds parent stream
)

func isAPIError(err error, code jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == code
}

// ValidReplicas reports whether n is a replica count Berth declares: an
// odd count of 1, 3 or 5, as JetStream's Raft groups want a majority.
func ValidReplicas(n int) bool { return n == 1 || n == 3 || n == 5 }

// streamError names the stream whose declaration failed, and turns a
// replica count the servers cannot keep into a ReplicasError.
func (t Topology) streamError(stream string, err error) error {
	var apiErr *jetstream.APIError
	if t.Replicas > 1 && errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeReplicasUnclustered:
			return &ReplicasError{Stream: stream, Replicas: t.Replicas, Err: err}
		case errCodeNoPeers, errCodeInsufficientResource:
			return &ReplicasError{Stream: stream, Replicas: t.Replicas, Clustered: true, Err: err}
		}
	}
	return fmt.Errorf("declare stream %s: %w", stream, err)
}
