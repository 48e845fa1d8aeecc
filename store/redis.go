// Package store is the Redis implementation of berth.Store: project configs,
// the status cache, the idempotency records of requests and the operation
// history. keys.go describes the layout of the database.
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// DefaultHistoryCap is the number of history entries kept per project when
// Config.HistoryCap is zero.
const DefaultHistoryCap = 500

// Config configures a Store.
type Config struct {
	// URL locates Redis:
	//
	//	redis://[user:password@]host[:port][/db]       one server (rediss:// for TLS;
	//	unix://[user:password@]/path/to/socket[?db=N]   query parameters of go-redis's ParseURL)
	//	redis+sentinel://[user:password@]host[:port],host[:port]/master[/db][?sentinel_username=...&sentinel_password=...]
	//	redis+cluster://[user:password@]host[:port],host[:port]
	//
	// A Sentinel URL lists sentinels (port 26379 by default) and names
	// the master they watch; user and password are the Redis servers'.
	// A Cluster URL lists seed nodes (port 6379 by default) and has no
	// database: a cluster has only database 0. rediss+sentinel:// and
	// rediss+cluster:// use TLS.
	URL string
	// Prefix is prepended to every key; DefaultPrefix when empty. It must
	// not hold '{' or '}', which would change the hash slots of the keys.
	Prefix string
	// HistoryCap is the number of history entries kept per project;
	// DefaultHistoryCap when zero.
	HistoryCap int
	// DialTimeout and ReadTimeout, when not zero, override those of the URL
	// (which default to go-redis's 5 s and 3 s).
	DialTimeout, ReadTimeout time.Duration
	// WaitReplicas is how many replicas must acknowledge a write of
	// configuration (project configs and their claims) before it counts
	// as done, so that a failover cannot lose it. Zero means the default:
	// 1 with Sentinel and Cluster, none with a single server. Negative
	// means none.
	WaitReplicas int
	// WaitTimeout bounds the wait for those acknowledgements;
	// DefaultWaitTimeout when zero.
	WaitTimeout time.Duration
}

// DefaultWaitTimeout is how long a write of configuration waits for its
// replicas when Config.WaitTimeout is zero.
const DefaultWaitTimeout = time.Second

// setDefaults fills the zero fields that have a default.
func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.HistoryCap == 0 {
		c.HistoryCap = DefaultHistoryCap
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = DefaultWaitTimeout
	}
}

// Validate reports what is wrong with c, once its defaults are applied.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("store: the Redis URL is empty"))
	} else if _, err := parseURL(c.URL); err != nil {
		errs = append(errs, err)
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		errs = append(errs, fmt.Errorf("store: the key prefix %q holds '{' or '}': it would change the hash slots of the keys", c.Prefix))
	}
	if c.HistoryCap < 0 {
		errs = append(errs, fmt.Errorf("store: the history cap is %d, it must be positive", c.HistoryCap))
	}
	if c.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("store: the dial timeout is %v, it must not be negative", c.DialTimeout))
	}
	if c.ReadTimeout < 0 {
		errs = append(errs, fmt.Errorf("store: the read timeout is %v, it must not be negative", c.ReadTimeout))
	}
	if c.WaitTimeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("store: the replica wait timeout is %v, it must be at least 1ms", c.WaitTimeout))
	}
	return errors.Join(errs...)
}

// Store is the Redis implementation of berth.Store.
type Store struct {
	rdb        redis.UniversalClient
	mode       Mode
	keys       Keys
	historyCap int
	// waitReplicas replicas must acknowledge a write of configuration
	// within waitTimeout (none when 0).
	waitReplicas int
	waitTimeout  time.Duration
	addr         string // where Redis is, for messages; never the URL
}

var _ berth.Store = (*Store)(nil)

// New returns a Store for cfg. It does not connect: connections are opened
// on demand, and Ping checks that Redis answers.
//
// Each attempt of a command dials once (go-redis dials up to 5 times, 100
// ms apart, by default), and the command is retried (MaxRetries): with
// go-redis's default every command took about 2 s to fail while Redis was
// down, which is the time read-only commands wait before answering from
// Docker. Sentinel and Cluster clients send every command to a master.
func New(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	wait := cfg.WaitReplicas
	switch {
	case wait < 0:
		wait = 0
	case wait == 0 && t.mode != Single:
		wait = 1
	}
	return &Store{
		rdb:          newClient(t, cfg),
		mode:         t.mode,
		keys:         NewKeys(cfg.Prefix),
		historyCap:   cfg.HistoryCap,
		waitReplicas: wait,
		waitTimeout:  cfg.WaitTimeout,
		addr:         t.addr(),
	}, nil
}

// Close closes the connections to Redis.
func (s *Store) Close() error { return s.rdb.Close() }

// Client returns the underlying Redis client, for features that need
// commands the Store does not wrap. Use Keys for the key names, and keep
// the keys of one command, transaction or script in one hash slot.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Mode returns the kind of Redis deployment of the store.
func (s *Store) Mode() Mode { return s.mode }

// Keys returns the key names of the store.
func (s *Store) Keys() Keys { return s.keys }

// Addr describes where Redis is (host:port, socket path, or the sentinels
// or cluster nodes), without credentials.
func (s *Store) Addr() string { return s.addr }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// getJSON reads the JSON string at key into v. It returns redis.Nil itself
// when the key is missing, so that callers can say what was not found.
func (s *Store) getJSON(ctx context.Context, op, key string, v any) error {
	b, err := s.rdb.Get(ctx, key).Bytes()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return redis.Nil
		}
		return s.fail(op, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return corrupt(key, err)
	}
	return nil
}

// marshal encodes v as JSON without escaping <, > and &, so that the raw
// JSON a record carries (a result event) is stored byte for byte, compacted.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// checkTTL rejects a TTL that would store a key forever or not at all.
func checkTTL(op string, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return events.Errorf(events.CodeInternal, "store: %s: ttl %v is shorter than 1ms", op, ttl)
	}
	return nil
}

// GetProject returns a project's config, or CodeNotFound.
func (s *Store) GetProject(ctx context.Context, name string) (*berth.Project, error) {
	var p berth.Project
	if err := s.getJSON(ctx, "get project "+name, s.keys.Project(name), &p); err != nil {
		if errors.Is(err, redis.Nil) {
			return nil, projectNotFound(name)
		}
		return nil, err
	}
	return &p, nil
}

// GetProjects returns the configs of names with one MGET (their keys share
// the {cfg} slot, so it works on a Redis Cluster), in their order; nil for
// a project not configured or whose config cannot be decoded.
func (s *Store) GetProjects(ctx context.Context, names []string) ([]*berth.Project, error) {
	out := make([]*berth.Project, len(names))
	if len(names) == 0 {
		return out, nil
	}
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = s.keys.Project(n)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, s.fail("get projects", err)
	}
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue
		}
		var p berth.Project
		if json.Unmarshal([]byte(raw), &p) == nil {
			out[i] = &p
		}
	}
	return out, nil
}

// projectNotFound is the answer for a project that is not configured.
func projectNotFound(name string) error {
	return notFound("configure it with config.set", "project %q is not configured", name)
}

// putProjectScript stores a project's config and claims its production
// directory and compose project, unless another project claims either;
// it frees the claims of the project's former directory and name.
//
// KEYS (all in the {cfg} slot): project:<p>, projects,
// claim:production:<dir>, claim:compose:<name>, then the project's former
// claim keys. ARGV: name, config JSON.
// It returns the other project's name, or nil when it stored the config.
var putProjectScript = redis.NewScript(`
for i = 3, 4 do
	local holder = redis.call('GET', KEYS[i])
	if holder and holder ~= ARGV[1] then
		return holder
	end
end
for i = 5, #KEYS do
	if KEYS[i] ~= KEYS[3] and KEYS[i] ~= KEYS[4] and redis.call('GET', KEYS[i]) == ARGV[1] then
		redis.call('DEL', KEYS[i])
	end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('SET', KEYS[4], ARGV[1])
return false
`)

// PutProject creates or replaces a project's config and adds it to the set
// of projects, atomically. A production directory and a compose project
// belong to one project: when another project has p's, PutProject stores
// nothing and returns CodeConflict naming it.
func (s *Store) PutProject(ctx context.Context, p *berth.Project) error {
	if p == nil || p.Name == "" {
		return events.Errorf(events.CodeBadRequest, "a project needs a name")
	}
	b, err := marshal(p)
	if err != nil {
		return events.Errorf(events.CodeInternal, "encode project %q: %v", p.Name, err)
	}
	keys := []string{s.keys.Project(p.Name), s.keys.Projects(), s.keys.ClaimProduction(p.Production), s.keys.ClaimCompose(p.ComposeProject)}
	if old, err := s.GetProject(ctx, p.Name); err == nil {
		keys = append(keys, s.keys.ClaimProduction(old.Production), s.keys.ClaimCompose(old.ComposeProject))
	} else if events.ErrorCode(err) != events.CodeNotFound {
		return err
	}
	op := "put project " + p.Name
	cmd, err := s.writeConfig(ctx, op, putProjectScript, keys, p.Name, b)
	if err != nil {
		return err
	}
	holder, err := cmd.Text()
	switch {
	case errors.Is(err, redis.Nil):
		return nil
	case err != nil:
		return s.fail(op, err)
	}
	return events.Errorf(events.CodeConflict, "project %s already manages production directory %s or compose project %s", holder, p.Production, p.ComposeProject).
		With("project", holder).
		WithHint(fmt.Sprintf("a production directory and a compose project belong to one project: give %s its own, or delete %s first", p.Name, holder))
}

// deleteProjectScript removes a project's config, the project from the
// set, and the claims that are its.
//
// KEYS (all in the {cfg} slot): project:<p>, projects, then its claim keys.
// ARGV: name. It returns how many config keys it deleted (0 or 1).
var deleteProjectScript = redis.NewScript(`
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
for i = 3, #KEYS do
	if redis.call('GET', KEYS[i]) == ARGV[1] then
		redis.call('DEL', KEYS[i])
	end
end
return n
`)

// DeleteProject removes a project's config and the project from the set of
// projects, atomically, freeing its production directory and compose
// project, then its status cache (in another hash slot); its history stays.
// Deleting a missing project returns CodeNotFound.
func (s *Store) DeleteProject(ctx context.Context, name string) error {
	keys := []string{s.keys.Project(name), s.keys.Projects()}
	if old, err := s.GetProject(ctx, name); err == nil {
		keys = append(keys, s.keys.ClaimProduction(old.Production), s.keys.ClaimCompose(old.ComposeProject))
	} else if events.ErrorCode(err) != events.CodeNotFound {
		return err
	}
	op := "delete project " + name
	cmd, err := s.writeConfig(ctx, op, deleteProjectScript, keys, name)
	if err != nil {
		return err
	}
	n, err := cmd.Int()
	if err != nil {
		return s.fail(op, err)
	}
	// The config is gone whatever happens to the cache, which expires.
	if err := s.InvalidateStatus(ctx, name); err != nil {
		return err
	}
	if n == 0 {
		return notFound("list the configured projects with config.get",
			"project %q is not configured", name)
	}
	return nil
}

// ListProjects returns the configured project names, sorted; an empty, non-nil
// slice when there are none.
func (s *Store) ListProjects(ctx context.Context) ([]string, error) {
	names, err := s.rdb.SMembers(ctx, s.keys.Projects()).Result()
	if err != nil {
		return nil, s.fail("list projects", err)
	}
	if names == nil {
		names = []string{}
	}
	slices.Sort(names)
	return names, nil
}

// GetStatus returns the cached status of a project, or CodeNotFound when
// there is none or it expired.
func (s *Store) GetStatus(ctx context.Context, project string) (*berth.CachedStatus, error) {
	var st berth.CachedStatus
	if err := s.getJSON(ctx, "get status of "+project, s.keys.Status(project), &st); err != nil {
		if errors.Is(err, redis.Nil) {
			return nil, notFound("take a fresh status from the engine",
				"no cached status for project %q", project)
		}
		return nil, err
	}
	return &st, nil
}

// GetProjectStatus returns a project's config (or CodeNotFound) and its
// cached status in one pipeline: one round trip on a single server, one
// per node on a cluster (they are in different slots, see Keys). The
// status is nil when there is none, it expired, or it cannot be decoded (a
// fresh one replaces it).
func (s *Store) GetProjectStatus(ctx context.Context, name string) (*berth.Project, *berth.CachedStatus, error) {
	var cfg, status *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		cfg = pipe.Get(ctx, s.keys.Project(name))
		status = pipe.Get(ctx, s.keys.Status(name))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, s.fail("get project and status of "+name, err)
	}
	raw, err := cfg.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil, projectNotFound(name)
	} else if err != nil {
		return nil, nil, s.fail("get project "+name, err)
	}
	var p berth.Project
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, nil, corrupt(s.keys.Project(name), err)
	}
	raw, err = status.Bytes()
	if err != nil {
		return &p, nil, nil
	}
	var st berth.CachedStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return &p, nil, nil
	}
	return &p, &st, nil
}

// PutStatus caches the status of a project for ttl.
func (s *Store) PutStatus(ctx context.Context, project string, st *berth.CachedStatus, ttl time.Duration) error {
	if err := checkTTL("put status", ttl); err != nil {
		return err
	}
	b, err := marshal(st)
	if err != nil {
		return events.Errorf(events.CodeInternal, "encode status of %q: %v", project, err)
	}
	if err := s.rdb.Set(ctx, s.keys.Status(project), b, ttl).Err(); err != nil {
		return s.fail("put status of "+project, err)
	}
	return nil
}

// InvalidateStatus drops the cached status of a project, if any.
func (s *Store) InvalidateStatus(ctx context.Context, project string) error {
	if err := s.rdb.Del(ctx, s.keys.Status(project)).Err(); err != nil {
		return s.fail("invalidate status of "+project, err)
	}
	return nil
}

// beginScript returns the value at KEYS[1] if there is one; otherwise it sets
// KEYS[1] to ARGV[1] with a TTL of ARGV[2] milliseconds and returns nil.
var beginScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`)

// BeginRequest creates the record of a request unless one exists, atomically.
// It returns the existing record and false when one does, or rec and true.
// rec is stored as given; callers set its State (normally RequestRunning).
func (s *Store) BeginRequest(ctx context.Context, rec *berth.RequestRecord, ttl time.Duration) (*berth.RequestRecord, bool, error) {
	if err := checkTTL("begin request", ttl); err != nil {
		return nil, false, err
	}
	if rec == nil || rec.ID == "" {
		return nil, false, events.Errorf(events.CodeBadRequest, "a request record needs an id")
	}
	b, err := marshal(rec)
	if err != nil {
		return nil, false, events.Errorf(events.CodeInternal, "encode request %q: %v", rec.ID, err)
	}
	key := s.keys.Request(rec.User, rec.ID)
	old, err := beginScript.Run(ctx, s.rdb, []string{key}, b, ttl.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return rec, true, nil
	}
	if err != nil {
		return nil, false, s.fail("begin request "+rec.ID, err)
	}
	var existing berth.RequestRecord
	if err := json.Unmarshal([]byte(old), &existing); err != nil {
		return nil, false, corrupt(key, err)
	}
	return &existing, false, nil
}

// TakeOverRequest replaces the record of a request (of a worker that died)
// with rec, for ttl.
func (s *Store) TakeOverRequest(ctx context.Context, rec *berth.RequestRecord, ttl time.Duration) error {
	if err := checkTTL("take over request", ttl); err != nil {
		return err
	}
	if rec == nil || rec.ID == "" {
		return events.Errorf(events.CodeBadRequest, "a request record needs an id")
	}
	b, err := marshal(rec)
	if err != nil {
		return events.Errorf(events.CodeInternal, "encode request %q: %v", rec.ID, err)
	}
	if err := s.rdb.Set(ctx, s.keys.Request(rec.User, rec.ID), b, ttl).Err(); err != nil {
		return s.fail("take over request "+rec.ID, err)
	}
	return nil
}

// FinishRequest marks a request done with its result event, keeping it for
// ttl from now, in one write: rec is the record the caller began (or took
// over), stored with state done and the result. A record that expired
// meanwhile is created done. result must be valid JSON; it is stored
// byte for byte. rec itself is not modified.
func (s *Store) FinishRequest(ctx context.Context, rec *berth.RequestRecord, result json.RawMessage, ttl time.Duration) error {
	if err := checkTTL("finish request", ttl); err != nil {
		return err
	}
	if rec == nil || rec.ID == "" {
		return events.Errorf(events.CodeBadRequest, "a request record needs an id")
	}
	out, err := doneRecord(rec, result)
	if err != nil {
		return events.Errorf(events.CodeInternal, "encode the result of request %q: %v", rec.ID, err)
	}
	if err := s.rdb.Set(ctx, s.keys.Request(rec.User, rec.ID), out, ttl).Err(); err != nil {
		return s.fail("finish request "+rec.ID, err)
	}
	return nil
}

// doneRecord encodes rec done, with its result: the record without the
// result, then the result, byte for byte, as its last field (what a
// redelivery re-publishes is what was published). An invalid result is an
// error.
func doneRecord(rec *berth.RequestRecord, result json.RawMessage) ([]byte, error) {
	done := *rec
	done.State, done.Result = berth.RequestDone, nil
	out, err := marshal(&done)
	if err != nil || len(result) == 0 {
		return out, err
	}
	if !json.Valid(result) {
		return nil, errors.New("the result is not valid JSON")
	}
	out = append(out[:len(out)-1], `,"result":`...)
	out = append(out, result...)
	return append(out, '}'), nil
}

// GetRequest returns the record of a user's request, or CodeNotFound.
func (s *Store) GetRequest(ctx context.Context, user, id string) (*berth.RequestRecord, error) {
	var rec berth.RequestRecord
	if err := s.getJSON(ctx, "get request "+id, s.keys.Request(user, id), &rec); err != nil {
		if errors.Is(err, redis.Nil) {
			return nil, notFound("the record expired or the request never reached this worker",
				"no record of request %q", id)
		}
		return nil, err
	}
	return &rec, nil
}

// AppendHistory adds an entry at the head of a project's history and trims it
// to the store's cap, atomically.
func (s *Store) AppendHistory(ctx context.Context, project string, e *berth.HistoryEntry) error {
	b, err := marshal(e)
	if err != nil {
		return events.Errorf(events.CodeInternal, "encode history entry of %q: %v", project, err)
	}
	key := s.keys.History(project)
	_, err = s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.LPush(ctx, key, b)
		pipe.LTrim(ctx, key, 0, int64(s.historyCap)-1)
		return nil
	})
	if err != nil {
		return s.fail("append history of "+project, err)
	}
	return nil
}

// History returns the newest n entries of a project's history, newest first.
// A project without history (or n <= 0) gives an empty, non-nil slice: the
// history of a deleted project stays readable.
func (s *Store) History(ctx context.Context, project string, n int) ([]berth.HistoryEntry, error) {
	if n <= 0 {
		return []berth.HistoryEntry{}, nil
	}
	key := s.keys.History(project)
	raw, err := s.rdb.LRange(ctx, key, 0, int64(n)-1).Result()
	if err != nil {
		return nil, s.fail("read history of "+project, err)
	}
	out := make([]berth.HistoryEntry, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal([]byte(r), &out[i]); err != nil {
			return nil, corrupt(key, err)
		}
	}
	return out, nil
}
