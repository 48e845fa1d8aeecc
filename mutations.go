package berth

import (
	"context"
	"encoding/json"
	"time"

	"github.com/berth-ops/berth/events"
)

// Confirmation is a pending confirmation of a destructive command: the
// plan a user was shown, bound to user, project, action and plan digest.
type Confirmation struct {
	Token     string          `json:"token"`
	Project   string          `json:"project"`
	Action    string          `json:"action"`
	User      string          `json:"user"`
	RequestID string          `json:"request_id"`
	Args      json.RawMessage `json:"args,omitempty"`
	Digest    string          `json:"digest"`
	Plan      json.RawMessage `json:"plan,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	ExpiresAt time.Time       `json:"expires_at"`
}

// LockInfo says who holds a project's mutation lock.
type LockInfo struct {
	// Owner is the lease owner's unique id (checked on extend and release).
	Owner     string    `json:"owner"`
	RequestID string    `json:"request_id"`
	User      string    `json:"user"`
	Action    string    `json:"action"`
	Worker    string    `json:"worker"`
	Since     time.Time `json:"since"`
}

// Confirmations keeps pending confirmations.
//
// Methods return CodeStoreUnavailable when the store cannot be reached.
type Confirmations interface {
	// PutConfirmation stores c under its token and as the latest pending
	// confirmation of (project, action, user), replacing (and deleting) an
	// earlier pending one of the same triple. The keys live for keep,
	// which should exceed c's validity so an expired token can be told
	// apart from an unknown one.
	PutConfirmation(ctx context.Context, c *Confirmation, keep time.Duration) error
	// PeekConfirmation returns the confirmation of a token, or
	// CodeNotFound.
	PeekConfirmation(ctx context.Context, token string) (*Confirmation, error)
	// LatestConfirmation returns the token of the latest pending
	// confirmation of (project, action, user), or CodeNotFound.
	LatestConfirmation(ctx context.Context, project, action, user string) (string, error)
	// TakeConfirmation deletes a token's confirmation (and the latest
	// pointer to it) atomically, only if it still exists: it returns
	// false when another request took it first.
	TakeConfirmation(ctx context.Context, c *Confirmation) (bool, error)
	// PendingConfirmations counts a user's pending confirmations.
	PendingConfirmations(ctx context.Context, user string) (int, error)
}

// Locks are per-project mutation leases.
//
// Methods return CodeStoreUnavailable when the store cannot be reached.
type Locks interface {
	// AcquireLock takes project's lock for lease unless it is held; when
	// held it returns the holder and false.
	AcquireLock(ctx context.Context, project string, info *LockInfo, lease time.Duration) (*LockInfo, bool, error)
	// ExtendLock renews the lease if owner still holds it; it returns false
	// when the lock was lost (expired, or taken by another owner).
	ExtendLock(ctx context.Context, project, owner string, lease time.Duration) (bool, error)
	// ReleaseLock releases the lock if owner holds it.
	ReleaseLock(ctx context.Context, project, owner string) error
	// LockHolder returns the holder, or CodeNotFound.
	LockHolder(ctx context.Context, project string) (*LockInfo, error)
}

// Composer runs docker compose and manages images for deploys.
type Composer interface {
	// Compose runs `docker compose -p P -f F... <args>` in spec.Dir with an
	// argument vector, calling line for each output line (stdout and
	// stderr merged, in order as far as the pipes allow). A non-zero exit
	// is a *events.Error with the given failure code and the output's
	// tail; a missing compose plugin is CodeDockerUnavailable; ctx's
	// deadline is CodeTimeout.
	Compose(ctx context.Context, spec ComposeSpec, failCode events.Code, line func(string), args ...string) error
	// TagImage tags an image (by ID or reference) as ref (repo:tag).
	TagImage(ctx context.Context, image, ref string) error
	// RemoveImage removes a tag (never forcing removal of an image in use).
	RemoveImage(ctx context.Context, ref string) error
	// ImageID resolves a reference to its image ID, or CodeNotFound.
	ImageID(ctx context.Context, ref string) (string, error)
	// StopOperation kills every process of the compose runs marked with
	// tag (ComposeSpec.Tag) that is still alive, such as those a killed
	// worker left behind, and waits until they are gone. It returns how
	// many it killed.
	StopOperation(ctx context.Context, tag string) (int, error)
	// RemoveStrayContainers removes the containers of a compose project
	// that a recreate cut short left under Compose's temporary name
	// ("<id>_<name>"), which would make the next up fail. It returns
	// their names.
	RemoveStrayContainers(ctx context.Context, composeProject string) ([]string, error)
	// WatchImageTags calls fn with the reference of each image the engine
	// tags from since on (the engine replays the events it still holds),
	// until ctx ends; then it returns nil. It returns an error when the
	// stream cannot be opened or ends.
	WatchImageTags(ctx context.Context, since time.Time, fn func(ref string)) error
	// ContainerNetworks says which networks a container is on (none when
	// it is gone).
	ContainerNetworks(ctx context.Context, id string) ([]NetworkAttachment, error)
	// DisconnectContainer takes a container off networks, so that
	// Docker's DNS stops returning it; one it is not on is no error.
	DisconnectContainer(ctx context.Context, id string, nets []NetworkAttachment) error
	// ReconnectContainer puts a container back on the networks
	// DisconnectContainer took it off.
	ReconnectContainer(ctx context.Context, id string, nets []NetworkAttachment) error
	// StartContainer starts a created or stopped container.
	StartContainer(ctx context.Context, id string) error
	// RemoveContainer stops a container with a grace period after SIGTERM
	// (0: the engine's) and removes it; a missing container is no error.
	RemoveContainer(ctx context.Context, id string, grace time.Duration) error
}

// NetworkAttachment is a network a container was on, with its aliases
// there.
type NetworkAttachment struct {
	Network string   `json:"network"`
	Aliases []string `json:"aliases,omitempty"`
}
