package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
	"github.com/rs/zerolog"
)

// The embedded Redis-compatible store of development mode (miniredis)
// holds its data in memory. A devStore keeps that data under the state
// directory across restarts: the snapshot file is loaded into miniredis
// before anyone can connect, rewritten (atomically) at most once per
// interval while commands that may change data arrive (a pre-hook of
// miniredis's server counts them: miniredis has no change notification),
// and once more when the dev servers close, after the worker's last write.

// devStoreFile is the snapshot's name in the state directory.
const devStoreFile = "dev-store.json"

// devStoreFormat and devStoreVersion mark a snapshot file.
const (
	devStoreFormat  = "berth-dev-store"
	devStoreVersion = 1
)

// devStoreInterval is how often the store is saved while it changes.
const devStoreInterval = time.Second

// devSnapshot is the content of the snapshot file.
type devSnapshot struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	SavedAt time.Time `json:"saved_at"`
	Keys    []devKey  `json:"keys"`
}

// devKey is one key with its value and absolute expiry. Exactly the field
// of its type is set. In the file, when the key or one of its strings is
// not valid UTF-8 (which a JSON string cannot hold), Base64 is set and the
// key and every string of the value are standard base64.
type devKey struct {
	Key       string            `json:"key"`
	Type      string            `json:"type"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	Base64    bool              `json:"base64,omitempty"`
	String    *string           `json:"string,omitempty"`
	Hash      map[string]string `json:"hash,omitempty"`
	Set       []string          `json:"set,omitempty"`
	ZSet      []devMember       `json:"zset,omitempty"`
	List      []string          `json:"list,omitempty"`
}

// devMember is a member of a sorted set. Its score is a string because
// JSON numbers cannot hold +inf and -inf, which Redis scores can.
type devMember struct {
	Member string `json:"member"`
	Score  string `json:"score"`
}

// errDevStoreCorrupt marks a snapshot file that cannot be used.
var errDevStoreCorrupt = errors.New("dev store snapshot is corrupt")

// devLoad says what opening the store found.
type devLoad struct {
	Path     string
	Found    bool      // a snapshot was read
	SavedAt  time.Time // when it was written
	Restored int       // keys put into the store
	Expired  int       // keys dropped because their TTL ran out while stopped
	// MovedTo is where an unreadable snapshot was moved; Corrupt says why.
	MovedTo string
	Corrupt error
}

// devStore keeps a miniredis's database 0 in a snapshot file.
type devStore struct {
	mr       *miniredis.Miniredis
	path     string
	log      zerolog.Logger
	interval time.Duration

	// gen counts the commands that may have changed data, as the
	// pre-hook sees them arrive.
	gen  atomic.Uint64
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex // one save at a time; guards the fields below
	lastSum  [sha256.Size]byte
	lastSave time.Time
	skipped  []string
	failing  bool
	closed   bool
}

// openDevStore loads the snapshot under stateDir into mr, which must not
// be serving yet. A missing snapshot starts the store empty; a corrupt one
// is moved aside (and the store starts empty). A snapshot that cannot be
// read for another reason (permissions, I/O) is an error: starting empty
// would overwrite it at the first save.
func openDevStore(mr *miniredis.Miniredis, stateDir string, log zerolog.Logger) (*devStore, devLoad, error) {
	s := &devStore{mr: mr, path: filepath.Join(stateDir, devStoreFile), log: log, interval: devStoreInterval}
	ld := devLoad{Path: s.path}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, ld, fmt.Errorf("state directory for the dev store: %w", err)
	}
	snap, err := readDevSnapshot(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, ld, nil
	case errors.Is(err, errDevStoreCorrupt):
		ld.Corrupt = err
		ld.MovedTo = s.path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
		if rerr := os.Rename(s.path, ld.MovedTo); rerr != nil {
			return nil, ld, fmt.Errorf("%w; and it cannot be moved aside (%v): move or delete %s to start with an empty store", err, rerr, s.path)
		}
		return s, ld, nil
	case err != nil:
		return nil, ld, fmt.Errorf("cannot read the dev store snapshot: %w (fix it, or move it away to start with an empty store)", err)
	}
	ld.Found, ld.SavedAt = true, snap.SavedAt
	ld.Restored, ld.Expired = snap.restore(mr, time.Now())
	return s, ld, nil
}

// start watches the commands of the serving miniredis and saves the store
// while it changes.
func (s *devStore) start() {
	srv := s.mr.Server()
	srv.SetPreHook(func(_ *server.Peer, cmd string, _ ...string) bool {
		if !devNoWrite[cmd] && !srv.IsReadOnlyCommand(cmd) {
			s.gen.Add(1)
		}
		return false
	})
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.run()
}

// devNoWrite are commands that change no data and that miniredis does not
// mark read-only. Any other command not marked read-only may change data.
var devNoWrite = map[string]bool{
	"PING": true, "ECHO": true, "HELLO": true, "AUTH": true, "CLIENT": true, "SELECT": true,
	"TIME": true, "INFO": true, "COMMAND": true, "QUIT": true, "RESET": true, "SCRIPT": true,
	"WATCH": true, "UNWATCH": true, "MULTI": true, "DISCARD": true,
	"SUBSCRIBE": true, "UNSUBSCRIBE": true, "PSUBSCRIBE": true, "PUNSUBSCRIBE": true, "PUBSUB": true, "PUBLISH": true,
}

// run saves the store once per interval while it may have changed. The
// pre-hook counts a write before it runs: a save may see the count of a
// write it does not hold yet, so a save is taken once more on the tick
// after the last change seen (and it writes the file only if the data
// differ).
func (s *devStore) run() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	seen, again := s.gen.Load(), false
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		g := s.gen.Load()
		if g == seen && !again {
			continue
		}
		again, seen = g != seen, g
		s.saveLogged()
	}
}

// saveLogged saves, saying when saving starts failing and when it works
// again.
func (s *devStore) saveLogged() {
	err := s.save()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && !s.failing:
		s.failing = true
		s.log.Error().Err(err).Str("path", s.path).Msg("cannot save the dev store; its changes are lost if the worker stops now (retrying every second while it changes)")
	case err == nil && s.failing:
		s.failing = false
		s.log.Info().Str("path", s.path).Msg("dev store saved again")
	}
}

// save writes a snapshot when the data differs from the last one written.
func (s *devStore) save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []devKey
	var skipped []string
	var err error
	// A dump crossed by a command that may write may hold half of a
	// multi-key update: take it again, a few times at most (a torn dump
	// written while commands keep coming is replaced a tick later, see run).
	for range 3 {
		g := s.gen.Load()
		if keys, skipped, err = dumpDevStore(s.mr); err == nil && s.gen.Load() == g {
			break
		}
	}
	if err != nil {
		return err
	}
	if len(skipped) > 0 && !slices.Equal(skipped, s.skipped) {
		s.log.Warn().Strs("keys", skipped).Str("path", s.path).Msg("the dev store keeps strings, hashes, sets, sorted sets and lists only: these keys are not saved")
	}
	s.skipped = skipped
	body, err := encodeDevKeys(keys)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	if sum == s.lastSum && !s.lastSave.IsZero() {
		return nil
	}
	if err := writeFileAtomic(s.path, devSnapshotFile(time.Now(), body)); err != nil {
		return err
	}
	s.lastSum, s.lastSave = sum, time.Now()
	return nil
}

// close stops the periodic saves and saves once more. Call it after the
// worker's last write and before miniredis closes. A store that was never
// started (dev mode failed to start) saves nothing: its empty data must
// not replace the snapshot.
func (s *devStore) close() {
	s.mu.Lock()
	if s.closed || s.stop == nil {
		s.closed = true
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	if err := s.save(); err != nil {
		s.mu.Lock()
		last := s.lastSave
		s.mu.Unlock()
		ev := s.log.Error().Err(err).Str("path", s.path)
		if !last.IsZero() {
			ev = ev.Time("last_saved", last)
		}
		ev.Msg("cannot save the dev store on stop: changes since its last save are lost")
	} else {
		s.log.Info().Str("path", s.path).Msg("dev store saved")
	}
}

// dumpDevStore reads every key of database 0 of mr, sorted by name, with
// its absolute expiry. It reads through miniredis's *RedisDB, which does not
// advance the TTL clock: a command that does (all of them, with ClockTTL)
// walks every key with a TTL, and a dump by commands (a Lua script, say)
// would take time quadratic in the keys. The price is that the dump is not
// one atomic step: the caller retries a dump that commands may have
// crossed. Keys of a type Berth does not use (streams, HyperLogLogs) are
// left out and named in skipped.
func dumpDevStore(mr *miniredis.Miniredis) (keys []devKey, skipped []string, err error) {
	// A TTL read below counts from the last tick, this one or a later one:
	// adding it to a time taken before gives an expiry no later than the
	// true one.
	now := time.Now()
	db := mr.DB(0)
	names := db.Keys()
	keys = make([]devKey, 0, len(names))
	for _, k := range names {
		dk := devKey{Key: k, Type: db.Type(k)}
		var err error
		switch dk.Type {
		case "":
			continue // gone since Keys
		case "string":
			var v string
			if v, err = db.Get(k); err == nil {
				dk.String = &v
			}
		case "hash":
			var fields []string
			if fields, err = db.HKeys(k); err == nil {
				dk.Hash = make(map[string]string, len(fields))
				for _, f := range fields {
					dk.Hash[f] = db.HGet(k, f)
				}
			}
		case "set":
			dk.Set, err = db.Members(k)
			slices.Sort(dk.Set)
		case "zset":
			var members []string
			var scores map[string]float64
			if members, err = db.ZMembers(k); err == nil {
				scores, err = db.SortedSet(k)
			}
			for _, m := range members {
				dk.ZSet = append(dk.ZSet, devMember{Member: m, Score: strconv.FormatFloat(scores[m], 'g', -1, 64)})
			}
		case "list":
			dk.List, err = db.List(k)
		default:
			skipped = append(skipped, k)
			continue
		}
		if errors.Is(err, miniredis.ErrKeyNotFound) {
			continue // gone meanwhile
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read key %q of the dev store: %w", k, err)
		}
		if dk.String == nil && len(dk.Hash) == 0 && len(dk.Set) == 0 && len(dk.ZSet) == 0 && len(dk.List) == 0 {
			continue // emptied meanwhile: Redis has no empty collections, nor may the file
		}
		if ttl := db.TTL(k); ttl > 0 {
			at := now.Add(ttl).UTC().Truncate(time.Millisecond)
			dk.ExpiresAt = &at
		}
		keys = append(keys, dk)
	}
	return keys, skipped, nil
}

// encodeDevKeys encodes keys for the file, one key a line.
func encodeDevKeys(keys []devKey) ([]byte, error) {
	if len(keys) == 0 {
		return []byte("[]"), nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	b.WriteString("[\n")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",\n")
		}
		if err := enc.Encode(k.encoded()); err != nil {
			return nil, fmt.Errorf("encode key %q of the dev store: %w", k.Key, err)
		}
		b.Truncate(b.Len() - 1) // Encode's newline
	}
	b.WriteString("\n]")
	return b.Bytes(), nil
}

// devSnapshotFile is the file's content around keys, the output of
// encodeDevKeys.
func devSnapshotFile(savedAt time.Time, keys []byte) []byte {
	head, _ := json.Marshal(struct {
		Format  string    `json:"format"`
		Version int       `json:"version"`
		SavedAt time.Time `json:"saved_at"`
	}{devStoreFormat, devStoreVersion, savedAt.UTC()})
	out := make([]byte, 0, len(head)+len(keys)+16)
	out = append(out, head[:len(head)-1]...)
	out = append(out, `,"keys":`...)
	out = append(out, keys...)
	return append(out, "}\n"...)
}

// encoded returns k as written in the file: base64 when one of its
// strings is not valid UTF-8.
func (k devKey) encoded() devKey {
	valid := utf8.ValidString(k.Key) && (k.String == nil || utf8.ValidString(*k.String))
	for f, v := range k.Hash {
		valid = valid && utf8.ValidString(f) && utf8.ValidString(v)
	}
	for _, l := range [][]string{k.Set, k.List} {
		for _, v := range l {
			valid = valid && utf8.ValidString(v)
		}
	}
	for _, m := range k.ZSet {
		valid = valid && utf8.ValidString(m.Member)
	}
	if valid {
		return k
	}
	return k.mapStrings(func(s string) (string, error) { return base64.StdEncoding.EncodeToString([]byte(s)), nil }, true)
}

// decoded returns k as held in the store, from its form in the file.
func (k devKey) decoded() (devKey, error) {
	if !k.Base64 {
		return k, nil
	}
	var bad error
	d := k.mapStrings(func(s string) (string, error) {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil && bad == nil {
			bad = err
		}
		return string(b), err
	}, false)
	return d, bad
}

// mapStrings returns k with f applied to the key and every string of its
// value (not to scores), and Base64 set to b64.
func (k devKey) mapStrings(f func(string) (string, error), b64 bool) devKey {
	m := func(s string) string { out, _ := f(s); return out }
	ms := func(l []string) []string {
		if l == nil {
			return nil
		}
		out := make([]string, len(l))
		for i, s := range l {
			out[i] = m(s)
		}
		return out
	}
	out := devKey{Key: m(k.Key), Type: k.Type, ExpiresAt: k.ExpiresAt, Base64: b64, Set: ms(k.Set), List: ms(k.List)}
	if k.String != nil {
		s := m(*k.String)
		out.String = &s
	}
	if k.Hash != nil {
		out.Hash = make(map[string]string, len(k.Hash))
		for f, v := range k.Hash {
			out.Hash[m(f)] = m(v)
		}
	}
	for _, z := range k.ZSet {
		out.ZSet = append(out.ZSet, devMember{Member: m(z.Member), Score: z.Score})
	}
	return out
}

// readDevSnapshot reads and checks the snapshot at path. Every problem of
// its content wraps errDevStoreCorrupt.
func readDevSnapshot(path string) (*devSnapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", errDevStoreCorrupt, fmt.Sprintf(format, a...))
	}
	var snap devSnapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, corrupt("%v", err)
	}
	if snap.Format != devStoreFormat || snap.Version != devStoreVersion {
		return nil, corrupt("format %q version %d, want %q version %d", snap.Format, snap.Version, devStoreFormat, devStoreVersion)
	}
	seen := make(map[string]bool, len(snap.Keys))
	for i, k := range snap.Keys {
		d, err := k.decoded()
		if err != nil {
			return nil, corrupt("key #%d: bad base64: %v", i+1, err)
		}
		if err := d.check(); err != nil {
			return nil, corrupt("key %q: %v", d.Key, err)
		}
		if seen[d.Key] {
			return nil, corrupt("key %q appears twice", d.Key)
		}
		seen[d.Key] = true
		snap.Keys[i] = d
	}
	return &snap, nil
}

// check says whether k holds one non-empty value of its type.
func (k devKey) check() error {
	set := 0
	for _, b := range []bool{k.String != nil, k.Hash != nil, k.Set != nil, k.ZSet != nil, k.List != nil} {
		if b {
			set++
		}
	}
	var ok bool
	switch k.Type {
	case "string":
		ok = k.String != nil
	case "hash":
		ok = len(k.Hash) > 0
	case "set":
		ok = len(k.Set) > 0
	case "zset":
		ok = len(k.ZSet) > 0
		for _, m := range k.ZSet {
			if f, err := strconv.ParseFloat(m.Score, 64); err != nil || math.IsNaN(f) {
				return fmt.Errorf("score %q of %q is not a number", m.Score, m.Member)
			}
		}
	case "list":
		ok = len(k.List) > 0
	default:
		return fmt.Errorf("unknown type %q", k.Type)
	}
	if !ok || set != 1 {
		return fmt.Errorf("a %s needs its value, and only it", k.Type)
	}
	return nil
}

// restore puts the snapshot's keys into mr, with the TTL left at now; keys
// whose expiry has passed are dropped. It returns the keys restored and
// dropped.
func (snap *devSnapshot) restore(mr *miniredis.Miniredis, now time.Time) (restored, expired int) {
	db := mr.DB(0)
	for _, k := range snap.Keys {
		var ttl time.Duration
		if k.ExpiresAt != nil {
			if ttl = k.ExpiresAt.Sub(now); ttl <= 0 {
				expired++
				continue
			}
		}
		// Errors of the direct API come from a key of another type, which
		// readDevSnapshot rules out (no key appears twice). The *RedisDB
		// does not advance the TTL clock: see dumpDevStore.
		switch k.Type {
		case "string":
			_ = db.Set(k.Key, *k.String)
		case "hash":
			fv := make([]string, 0, 2*len(k.Hash))
			for f, v := range k.Hash {
				fv = append(fv, f, v)
			}
			db.HSet(k.Key, fv...)
		case "set":
			_, _ = db.SetAdd(k.Key, k.Set...)
		case "zset":
			for _, m := range k.ZSet {
				f, _ := strconv.ParseFloat(m.Score, 64)
				_, _ = db.ZAdd(k.Key, f, m.Member)
			}
		case "list":
			_, _ = db.Push(k.Key, k.List...)
		}
		if ttl > 0 {
			db.SetTTL(k.Key, ttl)
		}
		restored++
	}
	return restored, expired
}

// writeFileAtomic replaces path with data (mode 0600): a temporary file in
// the same directory, synced, renamed over path, and the directory synced.
// A crash leaves the old file or the new one, never a mix.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
