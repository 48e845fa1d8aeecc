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
//	<prefix>{cfg}:project:<p>                   string, JSON of berth.Project
//	<prefix>{cfg}:projects                      set of configured project names
//	<prefix>{cfg}:claim:production:<h>          string, the project that owns a production directory (h: SHA-256 of its path)
//	<prefix>{cfg}:claim:compose:<name>          string, the project that owns a compose project name
//	<prefix>{<p>}:status                        string, JSON of berth.CachedStatus, with a TTL
//	<prefix>{<p>}:history                       list of JSON berth.HistoryEntry, newest at the head, capped
//	<prefix>{<p>}:lock                          hash of a project's mutation lock, with the lease as TTL:
//	                                            field owner (the lease owner), field info (JSON of berth.LockInfo)
//	<prefix>{confirm}:token:<token>             string, JSON of berth.Confirmation, with a TTL
//	<prefix>{confirm}:latest:<p>:<action>:<user> string, the token of the latest pending confirmation of the triple, with a TTL
//	<prefix>{confirm}:pending:<user>            sorted set of the user's pending tokens, scored by expiry (unix ms), with a TTL
//	<prefix>req:<user token>:<id>               string, JSON of berth.RequestRecord, with a TTL (a request is its user's)
//	<prefix>sig:<signature>                     string, the stream sequence of the command that used a signature, with a TTL
//
// Hash slots. On Redis Cluster, every key that one command, transaction or
// Lua script touches must hash to one slot, and only the part between the
// first '{' and '}' of a name is hashed. The layout groups keys so:
//
//   - {cfg}, the configuration registry: project configs, the set of
//     projects and the claims on production directories and compose
//     projects. config.set checks the claims of other projects and writes
//     a config with its claims in one script, so they share a slot. The
//     registry is small and read-mostly, so one shard holds it all.
//   - {<p>}, one slot per project for its hot keys: status cache, history
//     and lock, written by every operation on the project, so projects
//     spread over the shards.
//   - {confirm}, pending confirmations: a confirmation replaces the
//     previous one of its (project, action, user) and counts among its
//     user's pending ones, in one script. They are few (one per confirmed
//     command), so one slot holds them.
//   - Request records and signatures are read and written one key at a
//     time: their whole name is hashed, and they spread over the shards.
//
// A project's config and its status are in different slots, so
// GetProjectStatus reads them with two GETs in one pipeline (one round trip
// on a single Redis) rather than one MGET.
//
// Keys of the former layout, which had no slots (<prefix>project:<p>,
// <prefix>status:<p>...), are moved to these names by Store.Migrate.
//
// The store refuses tokens that contain ':', so {confirm}:token:<token> keys
// never hold a ':' after the token.
type Keys struct {
	prefix string
}

// Slot tags of the keys that scripts touch together (see Keys).
const (
	cfgSlot     = "{cfg}:"
	confirmSlot = "{confirm}:"
)

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

// projectSlot is the start of the keys of a project's own slot.
func (k Keys) projectSlot(project string) string { return k.prefix + "{" + project + "}:" }

// Project is the key of a project's config.
func (k Keys) Project(project string) string { return k.prefix + cfgSlot + "project:" + project }

// Projects is the key of the set of configured project names.
func (k Keys) Projects() string { return k.prefix + cfgSlot + "projects" }

// Status is the key of a project's cached status.
func (k Keys) Status(project string) string { return k.projectSlot(project) + "status" }

// Request is the key of the idempotency record of a user's request: two
// users' requests with the same id are two requests.
func (k Keys) Request(user, id string) string {
	return k.prefix + "req:" + events.UserToken(user) + ":" + id
}

// History is the key of a project's operation history.
func (k Keys) History(project string) string { return k.projectSlot(project) + "history" }

// Confirm is the key of a pending confirmation, by its token.
func (k Keys) Confirm(token string) string { return k.prefix + confirmSlot + "token:" + token }

// ConfirmFor is the key of the pending confirmation of one action on a
// project requested by one user.
func (k Keys) ConfirmFor(project, action, user string) string {
	return k.prefix + confirmSlot + "latest:" + project + ":" + action + ":" + user
}

// PendingFor is the key of the sorted set of a user's pending confirmation
// tokens, scored by their expiry in unix milliseconds.
func (k Keys) PendingFor(user string) string { return k.prefix + confirmSlot + "pending:" + user }

// ClaimProduction is the key naming the project that owns a production
// directory (absolute, clean).
func (k Keys) ClaimProduction(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return k.prefix + cfgSlot + "claim:production:" + hex.EncodeToString(sum[:])
}

// ClaimCompose is the key naming the project that owns a compose project
// name.
func (k Keys) ClaimCompose(name string) string { return k.prefix + cfgSlot + "claim:compose:" + name }

// Lock is the key of a project's operation lock.
func (k Keys) Lock(project string) string { return k.projectSlot(project) + "lock" }

// Signature is the key that marks a command signature as used (its value
// is the command's stream sequence), for replay protection.
func (k Keys) Signature(sig string) string { return k.prefix + "sig:" + sig }
