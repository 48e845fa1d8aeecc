package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/berth-ops/berth/events"
)

// Limits bound what one command and one user may hold, so that no user
// can delay another project's status: every command has a deadline, a
// logs command that follows runs in a lane of its own, and each user has
// a cap on the logs commands (the reads that can take long: a grep over
// many lines) it runs at once.
type Limits struct {
	// FollowSlots caps the logs commands that follow, on the whole worker;
	// a follow frees the read lane's slot it came in on. 16 by default.
	FollowSlots int
	// UserFollows caps one user's follows (4 by default); UserLogs one
	// user's other logs commands running at once (4 by default).
	UserFollows int
	UserLogs    int
	// ReadTimeout bounds a read (status, history, config.get, logs
	// without follow; 60 s by default); ConfigTimeout config.set and
	// config.delete (2 min); MutationTimeout a deploy, rollback, restart,
	// start or stop (1 h). A follow gets follow_s plus ReadTimeout.
	ReadTimeout     time.Duration
	ConfigTimeout   time.Duration
	MutationTimeout time.Duration
}

func (l *Limits) setDefaults() {
	l.FollowSlots = cmpOr(l.FollowSlots, 16)
	l.UserFollows = cmpOr(l.UserFollows, 4)
	l.UserLogs = cmpOr(l.UserLogs, 4)
	l.ReadTimeout = cmpOr(l.ReadTimeout, 60*time.Second)
	l.ConfigTimeout = cmpOr(l.ConfigTimeout, 2*time.Minute)
	l.MutationTimeout = cmpOr(l.MutationTimeout, time.Hour)
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// deadline is how long a command may run.
func (l *Limits) deadline(action string, follow time.Duration) time.Duration {
	switch {
	case follow > 0:
		return follow + l.ReadTimeout
	case events.IsFast(action):
		return l.ReadTimeout
	case action == events.ActionConfigSet || action == events.ActionConfigDelete:
		return l.ConfigTimeout
	}
	return l.MutationTimeout
}

// followOf reads follow_s of a logs command's args, leniently: the handler
// refuses what is wrong in them.
func followOf(action string, args json.RawMessage) time.Duration {
	if action != events.ActionLogs || len(args) == 0 {
		return 0
	}
	var a struct {
		FollowS float64 `json:"follow_s"`
	}
	if json.Unmarshal(args, &a) != nil || a.FollowS <= 0 {
		return 0
	}
	return time.Duration(a.FollowS * float64(time.Second))
}

// usage counts what runs, per user and in the follow lane.
type usage struct {
	mu       sync.Mutex
	follows  int
	perUser  map[string]int // logs commands that do not follow
	userFlws map[string]int
}

// admit takes a slot for a user's logs command (following or not), or
// says why it cannot run now. The returned function frees it.
func (u *usage) admit(l *Limits, user string, follow, logs bool) (func(), error) {
	if !follow && !logs {
		return func() {}, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.perUser == nil {
		u.perUser, u.userFlws = map[string]int{}, map[string]int{}
	}
	if follow {
		switch {
		case u.userFlws[user] >= l.UserFollows:
			return nil, events.Errorf(events.CodeConflict, "%s already follows the logs %d times, the most one user may", user, u.userFlws[user]).
				WithHint("wait for one of your follows to end, or follow for less time (follow_s)")
		case u.follows >= l.FollowSlots:
			return nil, events.Errorf(events.CodeConflict, "the worker already follows the logs %d times, the most it does at once", u.follows).
				WithHint("try again in a minute, or ask for the last lines without follow_s")
		}
		u.follows++
		u.userFlws[user]++
		return sync.OnceFunc(func() {
			u.mu.Lock()
			defer u.mu.Unlock()
			u.follows--
			u.userFlws[user]--
			if u.userFlws[user] == 0 {
				delete(u.userFlws, user)
			}
		}), nil
	}
	if u.perUser[user] >= l.UserLogs {
		return nil, events.Errorf(events.CodeConflict, "%s already reads logs %d times at once, the most one user may", user, u.perUser[user]).
			WithHint("wait for your earlier logs commands to be answered, then try again")
	}
	u.perUser[user]++
	return sync.OnceFunc(func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.perUser[user]--
		if u.perUser[user] == 0 {
			delete(u.perUser, user)
		}
	}), nil
}

// withDeadline bounds ctx by the command's deadline; its cause says so.
func withDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("the command ran for its whole time (%s)", d))
}
