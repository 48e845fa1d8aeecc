package store

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

var _ berth.Confirmations = (*Store)(nil)

// newPlanHint is the hint of a confirmation token that is unknown, expired
// or already used.
const newPlanHint = "ask for a new plan by sending the command without confirm"

// putConfirmScript stores a confirmation and makes it the latest of its
// (project, action, user) triple, atomically.
//
// KEYS: confirm:<token>, confirm:<p>:<action>:<user>, pending:<user>.
// ARGV: the JSON, keep (ms), the token, its expiry (unix ms, the score in
// pending), the prefix of the confirm:<token> keys.
//
// The previous token of the triple is deleted by building its key from
// ARGV[5]: that key cannot be declared in KEYS before the script reads it.
// Every key of a confirmation is in the {confirm} hash slot (see Keys), so
// the undeclared key is in the slot of the declared ones, which Redis
// Cluster allows. pending:<user> lives as long as the longest keep it was
// given.
var putConfirmScript = redis.NewScript(`
local old = redis.call('GET', KEYS[2])
if old and old ~= ARGV[3] then
	redis.call('DEL', ARGV[5] .. old)
	redis.call('ZREM', KEYS[3], old)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) then
	redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return 1
`)

// takeConfirmScript deletes a confirmation if it still exists, with the
// latest pointer of its triple when that still points to it, and removes it
// from the user's pending tokens. It returns 1 when it deleted it, 0 when
// the confirmation was gone.
//
// KEYS: confirm:<token>, confirm:<p>:<action>:<user>, pending:<user>.
// ARGV: the token.
var takeConfirmScript = redis.NewScript(`
if redis.call('DEL', KEYS[1]) == 0 then
	return 0
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
	redis.call('DEL', KEYS[2])
end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
`)

// validToken reports whether token can name a confirmation: it is not empty
// and holds no ':', so that its key cannot be that of a triple.
func validToken(token string) bool {
	return token != "" && !strings.Contains(token, ":")
}

// checkConfirmation rejects a confirmation the store cannot key.
func checkConfirmation(c *berth.Confirmation) error {
	switch {
	case c == nil:
		return events.Errorf(events.CodeBadRequest, "no confirmation given")
	case !validToken(c.Token):
		return events.Errorf(events.CodeBadRequest, "confirmation token %q is empty or holds ':'", c.Token)
	case c.Project == "" || c.Action == "" || c.User == "":
		return events.Errorf(events.CodeBadRequest,
			"confirmation %q needs a project, an action and a user", c.Token)
	}
	return nil
}

// PutConfirmation stores c under its token for keep and makes it the latest
// pending confirmation of (c.Project, c.Action, c.User), deleting the
// confirmation the triple pointed to before, atomically. c counts as
// pending for the user until c.ExpiresAt (until now+keep when ExpiresAt is
// zero). keep should exceed c's validity, so that an expired token can be
// told apart from an unknown one.
func (s *Store) PutConfirmation(ctx context.Context, c *berth.Confirmation, keep time.Duration) error {
	if err := checkTTL("put confirmation", keep); err != nil {
		return err
	}
	if err := checkConfirmation(c); err != nil {
		return err
	}
	b, err := marshal(c)
	if err != nil {
		return events.Errorf(events.CodeInternal, "encode confirmation %q: %v", c.Token, err)
	}
	expires := c.ExpiresAt
	if expires.IsZero() {
		expires = time.Now().Add(keep)
	}
	keys := []string{s.keys.Confirm(c.Token), s.keys.ConfirmFor(c.Project, c.Action, c.User), s.keys.PendingFor(c.User)}
	err = putConfirmScript.Run(ctx, s.rdb, keys,
		b, keep.Milliseconds(), c.Token, expires.UnixMilli(), s.keys.Confirm("")).Err()
	if err != nil {
		return s.fail("put confirmation "+c.Token, err)
	}
	return nil
}

// PeekConfirmation returns the confirmation of a token, or CodeNotFound when
// the token is unknown, expired (past its keep), taken or replaced.
func (s *Store) PeekConfirmation(ctx context.Context, token string) (*berth.Confirmation, error) {
	missing := func() error {
		return notFound(newPlanHint, "no pending confirmation for token %q", token)
	}
	if !validToken(token) {
		return nil, missing()
	}
	var c berth.Confirmation
	if err := s.getJSON(ctx, "peek confirmation "+token, s.keys.Confirm(token), &c); err != nil {
		if errors.Is(err, redis.Nil) {
			return nil, missing()
		}
		return nil, err
	}
	return &c, nil
}

// LatestConfirmation returns the token of the latest pending confirmation of
// (project, action, user), or CodeNotFound.
func (s *Store) LatestConfirmation(ctx context.Context, project, action, user string) (string, error) {
	token, err := s.rdb.Get(ctx, s.keys.ConfirmFor(project, action, user)).Result()
	if errors.Is(err, redis.Nil) {
		return "", notFound(newPlanHint,
			"no pending confirmation of %s on project %q by %q", action, project, user)
	}
	if err != nil {
		return "", s.fail("get latest confirmation of "+action+" on "+project, err)
	}
	return token, nil
}

// TakeConfirmation deletes the confirmation of c.Token, the latest pointer
// of its triple when that still names it, and its place among the user's
// pending tokens, atomically. It returns true for the one caller that
// deleted it, and false when it was already gone: taken by another request,
// replaced, or past its keep.
func (s *Store) TakeConfirmation(ctx context.Context, c *berth.Confirmation) (bool, error) {
	if err := checkConfirmation(c); err != nil {
		return false, err
	}
	keys := []string{s.keys.Confirm(c.Token), s.keys.ConfirmFor(c.Project, c.Action, c.User), s.keys.PendingFor(c.User)}
	n, err := takeConfirmScript.Run(ctx, s.rdb, keys, c.Token).Int()
	if err != nil {
		return false, s.fail("take confirmation "+c.Token, err)
	}
	return n == 1, nil
}

// PendingConfirmations counts a user's pending confirmations: those put and
// neither taken nor replaced, whose ExpiresAt is still ahead. It drops the
// expired ones from the user's set as it counts.
func (s *Store) PendingConfirmations(ctx context.Context, user string) (int, error) {
	key := s.keys.PendingFor(user)
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	var card *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.ZRemRangeByScore(ctx, key, "-inf", now)
		card = pipe.ZCard(ctx, key)
		return nil
	})
	if err != nil {
		return 0, s.fail("count pending confirmations of "+user, err)
	}
	return int(card.Val()), nil
}
