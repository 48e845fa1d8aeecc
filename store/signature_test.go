package store

import (
	"context"
	"testing"
	"time"

	"github.com/berth-ops/berth/internal/testenv"
)

func TestClaimSignature(t *testing.T) {
	s, err := New(Config{URL: testenv.Redis(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	claim := func(sig string, seq uint64) bool {
		t.Helper()
		ok, err := s.ClaimSignature(ctx, sig, seq, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !claim("v1=aa", 7) {
		t.Fatal("first claim refused")
	}
	if !claim("v1=aa", 7) {
		t.Fatal("a redelivery of the same message counted as a replay")
	}
	if claim("v1=aa", 8) {
		t.Fatal("another message with the same signature was accepted")
	}
	// A core message (no stream sequence) cannot be redelivered: the second
	// use of its signature is a replay.
	if !claim("v1=bb", 0) {
		t.Fatal("first claim of a core message refused")
	}
	if claim("v1=bb", 0) {
		t.Fatal("a core message's signature was accepted twice")
	}
}
