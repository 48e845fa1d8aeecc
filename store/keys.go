package store

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/berth-ops/berth/events"
)

// DefaultPrefix is the prefix of every key when Config.Prefix is empty.
const DefaultPrefix = "berth:"

// Keys names the Redis keys Berth uses, under one prefix. Every key name the
// store (or a later feature) touches comes from a method of Keys, so the
// layout of the database is described in this one file:
//
//	<prefix>project:<p>                     string, JSON of berth.Project
//	<prefix>projects                        set of configured project names
//	<prefix>status:<p>                      string, JSON of berth.CachedStatus, with a TTL
//	<prefix>req:<user token>:<id>           string, JSON of berth.RequestRecord, with a TTL (a request is its user's)
//	<prefix>history:<p>                     list of JSON berth.HistoryEntry, newest at the head, capped
//	<prefix>confirm:<token>                 string, JSON of berth.Confirmation, with a TTL
//	<prefix>confirm:<p>:<action>:<user>     string, the token of the latest pending confirmation of the triple, with a TTL
//	<prefix>pending:<user>                  sorted set of the user's pending tokens, scored by expiry (unix ms), with a TTL
//	<prefix>claim:production:<h>            string, the project that owns a production directory (h: SHA-256 of its path)
//	<prefix>claim:compose:<name>            string, the project that owns a compose project name
//	<prefix>lock:<p>                        hash of a project's mutation lock, with the lease as TTL:
//	                                        field owner (the lease owner), field info (JSON of berth.LockInfo)
//
// The store refuses tokens that contain ':', so confirm:<token> and
// confirm:<p>:<action>:<user> never collide.
type Keys struct {
	prefix string
}

// NewKeys returns the key names under prefix, or under DefaultPrefix when
// prefix is empty.
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{prefix: prefix}
}

// Prefix returns the prefix of every key.
func (k Keys) Prefix() string { return k.prefix }

// Project is the key of a project's config.
func (k Keys) Project(project string) string { return k.prefix + "project:" + project }

// Projects is the key of the set of configured project names.
func (k Keys) Projects() string { return k.prefix + "projects" }

// Status is the key of a project's cached status.
func (k Keys) Status(project string) string { return k.prefix + "status:" + project }

// Request is the key of the idempotency record of a user's request: two
// users' requests with the same id are two requests.
func (k Keys) Request(user, id string) string {
	return k.prefix + "req:" + events.UserToken(user) + ":" + id
}

// History is the key of a project's operation history.
func (k Keys) History(project string) string { return k.prefix + "history:" + project }

// Confirm is the key of a pending confirmation, by its token.
func (k Keys) Confirm(token string) string { return k.prefix + "confirm:" + token }

// ConfirmFor is the key of the pending confirmation of one action on a
// project requested by one user.
func (k Keys) ConfirmFor(project, action, user string) string {
	return k.prefix + "confirm:" + project + ":" + action + ":" + user
}

// PendingFor is the key of the sorted set of a user's pending confirmation
// tokens, scored by their expiry in unix milliseconds.
func (k Keys) PendingFor(user string) string { return k.prefix + "pending:" + user }

// ClaimProduction is the key naming the project that owns a production
// directory (absolute, clean).
func (k Keys) ClaimProduction(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return k.prefix + "claim:production:" + hex.EncodeToString(sum[:])
}

// ClaimCompose is the key naming the project that owns a compose project
// name.
func (k Keys) ClaimCompose(name string) string { return k.prefix + "claim:compose:" + name }

// Lock is the key of a project's operation lock.
func (k Keys) Lock(project string) string { return k.prefix + "lock:" + project }

// Signature is the key that marks a command signature as used (its value
// is the command's stream sequence), for replay protection.
func (k Keys) Signature(sig string) string { return k.prefix + "sig:" + sig }
