package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// devStoreRun is a dev store on a serving miniredis, as startDev makes
// it, with a client on it.
type devStoreRun struct {
	mr *miniredis.Miniredis
	ds *devStore
	ld devLoad
	rc *redis.Client
}

// runDevStore opens the dev store of dir and serves it; interval 0 keeps
// the default.
func runDevStore(t *testing.T, dir string, interval time.Duration, logs *strings.Builder) *devStoreRun {
	t.Helper()
	mr := miniredis.NewMiniRedis()
	mr.ClockTTL(true)
	log := zerolog.Nop()
	if logs != nil {
		log = zerolog.New(logs)
	}
	ds, ld, err := openDevStore(mr, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if interval > 0 {
		ds.interval = interval
	}
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ds.start()
	r := &devStoreRun{mr: mr, ds: ds, ld: ld, rc: redis.NewClient(&redis.Options{Addr: mr.Addr()})}
	t.Cleanup(r.close)
	return r
}

// close is the graceful stop: the client goes, the store saves, miniredis
// closes. It is idempotent.
func (r *devStoreRun) close() {
	_ = r.rc.Close()
	r.ds.close()
	r.mr.Close()
}

// devStoreFixture writes one key of every type Berth uses, with and
// without TTLs, and strings JSON cannot hold.
func devStoreFixture(t *testing.T, rc *redis.Client) {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rc.Set(ctx, "berth:project:po", `{"name":"po","strategy":"symlink"}`, 0).Err())
	must(rc.Set(ctx, "berth:status:po", `{"services":[]}`, time.Hour).Err())
	must(rc.Set(ctx, "berth:short", "soon gone", 1500*time.Millisecond).Err())
	must(rc.Set(ctx, "bin:\xff\xfe", "\x00\x01\xc3\x28 not utf-8", 0).Err())
	must(rc.Set(ctx, "empty", "", 0).Err())
	must(rc.HSet(ctx, "berth:lock:po", "owner", "w1/42", "info", `{"op":"deploy"}`).Err())
	must(rc.PExpire(ctx, "berth:lock:po", 30*time.Second).Err())
	must(rc.SAdd(ctx, "berth:projects", "po", "web", "zeta").Err())
	must(rc.ZAdd(ctx, "berth:pending:test:alice",
		redis.Z{Score: 1767225600123, Member: "tok1"}, redis.Z{Score: 0.1, Member: "tok2"},
		redis.Z{Score: math.Inf(1), Member: "never"}, redis.Z{Score: math.Inf(-1), Member: "always"}).Err())
	must(rc.PExpire(ctx, "berth:pending:test:alice", 10*time.Minute).Err())
	for i := range 5 {
		must(rc.LPush(ctx, "berth:history:po", fmt.Sprintf(`{"n":%d}`, i)).Err())
	}
}

// checkDevStoreFixture checks what devStoreFixture wrote, elapsed after
// it was written (the TTLs are that much shorter).
func checkDevStoreFixture(t *testing.T, mr *miniredis.Miniredis, elapsed time.Duration) {
	t.Helper()
	// berth:short, with its TTL of 1.5s, may or may not be there.
	wantKeys := []string{"berth:history:po", "berth:lock:po", "berth:pending:test:alice", "berth:project:po", "berth:projects", "berth:status:po", "bin:\xff\xfe", "empty"}
	if got := slices.DeleteFunc(mr.Keys(), func(k string) bool { return k == "berth:short" }); !slices.Equal(got, wantKeys) {
		t.Fatalf("keys %q, want %q", got, wantKeys)
	}
	get := func(k string) string {
		t.Helper()
		v, err := mr.Get(k)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return v
	}
	if v := get("berth:project:po"); v != `{"name":"po","strategy":"symlink"}` {
		t.Fatalf("project %q", v)
	}
	if v := get("bin:\xff\xfe"); v != "\x00\x01\xc3\x28 not utf-8" {
		t.Fatalf("binary value %q", v)
	}
	if v := get("empty"); v != "" {
		t.Fatalf("empty string %q", v)
	}
	if mr.HGet("berth:lock:po", "owner") != "w1/42" || mr.HGet("berth:lock:po", "info") != `{"op":"deploy"}` {
		t.Fatalf("lock hash %q %q", mr.HGet("berth:lock:po", "owner"), mr.HGet("berth:lock:po", "info"))
	}
	if m, _ := mr.Members("berth:projects"); !slices.Equal(m, []string{"po", "web", "zeta"}) {
		t.Fatalf("projects %q", m)
	}
	zs, _ := mr.SortedSet("berth:pending:test:alice")
	if len(zs) != 4 || zs["tok1"] != 1767225600123 || zs["tok2"] != 0.1 || !math.IsInf(zs["never"], 1) || !math.IsInf(zs["always"], -1) {
		t.Fatalf("pending zset %v", zs)
	}
	if l, _ := mr.List("berth:history:po"); !slices.Equal(l, []string{`{"n":4}`, `{"n":3}`, `{"n":2}`, `{"n":1}`, `{"n":0}`}) {
		t.Fatalf("history list %q", l)
	}
	// TTLs: kept, less the time gone by (and a little slack).
	for k, ttl := range map[string]time.Duration{
		"berth:status:po": time.Hour, "berth:lock:po": 30 * time.Second, "berth:pending:test:alice": 10 * time.Minute,
	} {
		got := mr.TTL(k)
		if got > ttl-elapsed+50*time.Millisecond || got < ttl-elapsed-3*time.Second {
			t.Errorf("%s: TTL %v, want about %v", k, got, ttl-elapsed)
		}
	}
	for _, k := range []string{"berth:project:po", "berth:projects", "berth:history:po", "empty"} {
		if got := mr.TTL(k); got != 0 {
			t.Errorf("%s: TTL %v, want none", k, got)
		}
	}
}

func TestDevStoreSnapshotRestoresEveryType(t *testing.T) {
	dir := t.TempDir()
	r := runDevStore(t, dir, time.Hour, nil)
	if r.ld.Found || r.ld.Corrupt != nil {
		t.Fatalf("fresh state dir: %+v", r.ld)
	}
	devStoreFixture(t, r.rc)
	written := time.Now()
	r.close()

	path := filepath.Join(dir, devStoreFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// The file is JSON, one key a line, the binary key in base64.
	raw := readFile(t, path)
	if !json.Valid([]byte(raw)) || strings.Count(raw, "\n") < 10 || !strings.Contains(raw, `"base64":true`) || !strings.Contains(raw, `"score":"+Inf"`) {
		t.Fatalf("snapshot file:\n%s", raw)
	}

	r2 := runDevStore(t, dir, time.Hour, nil)
	if !r2.ld.Found || r2.ld.Restored+r2.ld.Expired != 9 || r2.ld.Restored < 8 || r2.ld.SavedAt.Before(written) {
		t.Fatalf("load %+v", r2.ld)
	}
	checkDevStoreFixture(t, r2.mr, time.Since(written))
	// The restored store works through the protocol too.
	if v, err := r2.rc.LRange(context.Background(), "berth:history:po", 0, 0).Result(); err != nil || !slices.Equal(v, []string{`{"n":4}`}) {
		t.Fatalf("LRANGE after restore: %q %v", v, err)
	}
}

func TestDevStoreDropsExpiredKeys(t *testing.T) {
	dir := t.TempDir()
	r := runDevStore(t, dir, time.Hour, nil)
	devStoreFixture(t, r.rc)
	written := time.Now()
	r.close()
	snap, err := readDevSnapshot(filepath.Join(dir, devStoreFile))
	if err != nil {
		t.Fatal(err)
	}
	// Restored two seconds later: the short key has expired meanwhile; the
	// others keep their TTL, less the two seconds.
	mr := miniredis.NewMiniRedis()
	mr.ClockTTL(true)
	later := time.Now().Add(2 * time.Second)
	restored, expired := snap.restore(mr, later)
	if restored != 8 || expired != 1 {
		t.Fatalf("restored %d, expired %d; want 8, 1", restored, expired)
	}
	checkDevStoreFixture(t, mr, later.Sub(written))

	// Restored an hour later: only the keys without TTL are left.
	mr = miniredis.NewMiniRedis()
	if restored, expired = snap.restore(mr, time.Now().Add(time.Hour+time.Minute)); restored != 5 || expired != 4 {
		t.Fatalf("an hour later: restored %d, expired %d; want 5, 4", restored, expired)
	}
	if got := mr.Keys(); !slices.Equal(got, []string{"berth:history:po", "berth:project:po", "berth:projects", "bin:\xff\xfe", "empty"}) {
		t.Fatalf("keys an hour later: %q", got)
	}
}

func TestDevStoreSavesWhileRunningOnlyAfterWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, devStoreFile)
	r := runDevStore(t, dir, 50*time.Millisecond, nil)
	ctx := context.Background()
	if err := r.rc.Set(ctx, "berth:project:a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitSnapshot := func(key string) os.FileInfo {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if snap, err := readDevSnapshot(path); err == nil && slices.ContainsFunc(snap.Keys, func(k devKey) bool { return k.Key == key }) {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				return fi
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never saved while running", key)
			}
		}
	}
	waitSnapshot("berth:project:a")
	// A script that writes (as the store's are) is a change too.
	if err := r.rc.Eval(ctx, `return redis.call('SADD', KEYS[1], ARGV[1])`, []string{"berth:projects"}, "a").Err(); err != nil {
		t.Fatal(err)
	}
	waitSnapshot("berth:projects")
	time.Sleep(200 * time.Millisecond) // the second save after the change, if any
	before, _ := os.Stat(path)
	// Reads change nothing: the file is not written again.
	for range 10 {
		if err := r.rc.Get(ctx, "berth:project:a").Err(); err != nil {
			t.Fatal(err)
		}
		if err := r.rc.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := r.rc.SMembers(ctx, "berth:projects").Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if after, _ := os.Stat(path); !os.SameFile(before, after) {
		t.Fatal("the snapshot was rewritten after reads only")
	}
	// A write that changes nothing gives the same content: not rewritten.
	if err := r.rc.Set(ctx, "berth:project:a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if after, _ := os.Stat(path); !os.SameFile(before, after) {
		t.Fatal("the snapshot was rewritten though its content is the same")
	}
	// A delete is saved.
	if err := r.rc.Del(ctx, "berth:project:a").Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		snap, err := readDevSnapshot(path)
		if err == nil && !slices.ContainsFunc(snap.Keys, func(k devKey) bool { return k.Key == "berth:project:a" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a deleted key stays in the snapshot")
		}
	}
}

func TestDevStoreCorruptSnapshotMovedAside(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":        "this is not json",
		"empty":          "",
		"truncated":      `{"format":"berth-dev-store","version":1,"keys":[{"key":"a","type":"string","str`,
		"other format":   `{"format":"something-else","version":1,"keys":[]}`,
		"newer version":  `{"format":"berth-dev-store","version":99,"keys":[]}`,
		"unknown type":   `{"format":"berth-dev-store","version":1,"keys":[{"key":"a","type":"stream","list":["x"]}]}`,
		"wrong value":    `{"format":"berth-dev-store","version":1,"keys":[{"key":"a","type":"hash","list":["x"]}]}`,
		"no value":       `{"format":"berth-dev-store","version":1,"keys":[{"key":"a","type":"string"}]}`,
		"bad score":      `{"format":"berth-dev-store","version":1,"keys":[{"key":"a","type":"zset","zset":[{"member":"m","score":"NaN"}]}]}`,
		"bad base64":     `{"format":"berth-dev-store","version":1,"keys":[{"key":"!!","type":"string","string":"x","base64":true}]}`,
		"duplicate keys": `{"format":"berth-dev-store","version":1,"keys":[{"key":"a","type":"string","string":"x"},{"key":"a","type":"set","set":["y"]}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, devStoreFile)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runDevStore(t, dir, time.Hour, nil)
			if r.ld.Corrupt == nil || r.ld.Found || len(r.mr.Keys()) != 0 {
				t.Fatalf("load %+v, keys %q", r.ld, r.mr.Keys())
			}
			if !strings.HasPrefix(r.ld.MovedTo, path+".corrupt-") || readFile(t, r.ld.MovedTo) != content {
				t.Fatalf("corrupt snapshot not kept aside: %+v", r.ld)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("corrupt snapshot still in place: %v", err)
			}
			// The store works, and its next save is a good snapshot.
			if err := r.rc.Set(context.Background(), "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			r.close()
			if snap, err := readDevSnapshot(path); err != nil || len(snap.Keys) != 1 {
				t.Fatalf("snapshot after a corrupt one: %+v %v", snap, err)
			}
		})
	}
}

func TestDevStoreCorruptSnapshotSaidOnStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, devStoreFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &lockedWriter{w: &strings.Builder{}}
	d, err := startDev(&Config{DevNATS: "127.0.0.1:-1", StateDir: dir}, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	d.close()
	out := logs.String()
	moved, _ := filepath.Glob(filepath.Join(dir, devStoreFile+".corrupt-*"))
	if len(moved) != 1 || !strings.Contains(out, "starts EMPTY") || !strings.Contains(out, moved[0]) ||
		!strings.Contains(out, "DEVELOPMENT MODE") || !strings.Contains(out, filepath.Join(dir, devStoreFile)) {
		t.Fatalf("moved %v; logs:\n%s", moved, out)
	}
}

func TestDevStoreUnreadableSnapshotStopsStart(t *testing.T) {
	dir := t.TempDir()
	// Not corrupt, not readable: a directory where the file should be. An
	// empty store would replace it at the first save.
	if err := os.Mkdir(filepath.Join(dir, devStoreFile), 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, err := openDevStore(miniredis.NewMiniRedis(), dir, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "cannot read the dev store snapshot") {
		t.Fatalf("err %v", err)
	}
	if _, err := startDev(&Config{DevNATS: "127.0.0.1:-1", StateDir: dir}, zerolog.Nop()); err == nil {
		t.Fatal("dev mode started over an unreadable snapshot")
	}
}

func TestDevStoreNotStartedSavesNothing(t *testing.T) {
	dir := t.TempDir()
	r := runDevStore(t, dir, time.Hour, nil)
	devStoreFixture(t, r.rc)
	r.close()
	path := filepath.Join(dir, devStoreFile)
	before := readFile(t, path)
	// Dev mode that fails after loading (its miniredis never serves) must
	// not replace the snapshot with what it holds.
	ds, ld, err := openDevStore(miniredis.NewMiniRedis(), dir, zerolog.Nop())
	if err != nil || ld.Restored < 8 {
		t.Fatalf("%+v %v", ld, err)
	}
	ds.close()
	if readFile(t, path) != before {
		t.Fatal("a store that never started rewrote the snapshot")
	}
}

// TestDevStoreSurvivesRestart runs dev mode as `go run ./cmd/worker`
// does, configures a project, stops gracefully and starts again on the
// same state directory: configuration, history, request records and a
// pending confirmation are still there.
func TestDevStoreSurvivesRestart(t *testing.T) {
	stateDir := t.TempDir()
	start := func() (*harness, *lockedWriter) {
		t.Helper()
		cfg, w, logs := startDevWorker(t, stateDir, "--http-addr", "off", "--stabilize", "1s")
		h := &harness{t: t, cfg: cfg, w: w, subjects: events.NewSubjects(cfg.Prefix)}
		t.Cleanup(h.stop)
		var err error
		if h.nc, err = nats.Connect(w.NATSURL); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.nc.Close)
		if h.js, err = jetstream.New(h.nc); err != nil {
			t.Fatal(err)
		}
		return h, logs
	}

	h, _ := start()
	sample := configure(t, h, "po")
	cd, _ := plan(t, h, "po", events.ActionRestart, "test:alice", map[string]any{"services": []string{"worker"}})
	restartCmd := events.Command{ID: "restart-before-stop", User: "test:alice", Confirm: cd.Token}
	restarted, _ := h.send("po", events.ActionRestart, restartCmd)
	mustOK(t, restarted)
	// A confirmation left pending across the restart.
	pending, _ := plan(t, h, "po", events.ActionConfigDelete, "test:admin", nil)
	h.stop()

	path := filepath.Join(stateDir, devStoreFile)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot after a graceful stop: %v %v", fi, err)
	}

	h, logs := start()
	if out := logs.String(); !strings.Contains(out, "DEVELOPMENT MODE") || !strings.Contains(out, path) || !strings.Contains(out, `"redis_data_restored":true`) {
		t.Fatalf("the restarted worker does not say where the store's data is:\n%s", out)
	}
	res, _ := h.send("po", events.ActionConfigGet, events.Command{})
	mustOK(t, res)
	if got := decodeData[berth.Project](t, res); got.ComposeProject != sample.Project || got.UpdatedBy != "test:admin" || got.Strategy != "symlink" {
		t.Fatalf("config.get after restart: %+v", got)
	}
	res, _ = h.send("po", events.ActionHistory, events.Command{})
	mustOK(t, res)
	var hist struct {
		Entries []berth.HistoryEntry `json:"entries"`
	}
	if err := json.Unmarshal(res.Data, &hist); err != nil || len(hist.Entries) != 2 ||
		hist.Entries[0].Action != events.ActionRestart || hist.Entries[1].Action != events.ActionConfigSet {
		t.Fatalf("history after restart: %s", res.Data)
	}
	// The request record answers the same command again (past JetStream's
	// dedup: another Nats-Msg-Id), without restarting anything.
	evs := h.subscribe("po", restartCmd.ID)
	body, _ := json.Marshal(restartCmd)
	msg := &nats.Msg{Subject: h.subjects.Command("po", events.ActionRestart), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, "after-restart")
	if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	again, _ := evs.result(t, time.Minute)
	a, _ := json.Marshal(restarted)
	b, _ := json.Marshal(again)
	if string(a) != string(b) {
		t.Fatalf("the repeated command was not answered from its record:\nfirst  %s\nagain  %s", a, b)
	}
	// The confirmation planned before the stop is still valid.
	res, _ = confirm(t, h, "po", events.ActionConfigDelete, "test:admin", pending.Token)
	mustOK(t, res)
	if res, _ = h.send("po", events.ActionConfigGet, events.Command{}); errCode(res) != "not_found" {
		t.Fatalf("config.get after the confirmed delete: %+v", res)
	}
}

// BenchmarkDevStoreSave measures one save of a store of a few thousand
// keys shaped like Berth's: the whole save (dump, encoding, synced write of
// the file), and its parts.
func BenchmarkDevStoreSave(b *testing.B) {
	mr := miniredis.NewMiniRedis()
	mr.ClockTTL(true)
	ds, _, err := openDevStore(mr, b.TempDir(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer mr.Close()
	ds.start()
	defer ds.close()
	n := fillBerthLike(b, mr)
	keys, _, err := dumpDevStore(mr)
	if err != nil {
		b.Fatal(err)
	}
	body, err := encodeDevKeys(keys)
	if err != nil {
		b.Fatal(err)
	}
	file := devSnapshotFile(time.Now(), body)
	b.Run("save", func(b *testing.B) {
		for b.Loop() {
			ds.mu.Lock()
			ds.lastSave = time.Time{} // write every time
			ds.mu.Unlock()
			if err := ds.save(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "keys")
		b.ReportMetric(float64(len(file))/1e6, "MB")
	})
	b.Run("dump", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := dumpDevStore(mr); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := encodeDevKeys(keys); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("write", func(b *testing.B) {
		for b.Loop() {
			if err := writeFileAtomic(ds.path, file); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unchanged", func(b *testing.B) { // dump and compare, no write
		for b.Loop() {
			if err := ds.save(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fillBerthLike writes what a busy development store might hold: 50
// projects with 100 history entries each, their claims and status caches,
// and 3000 request records with their results.
func fillBerthLike(tb testing.TB, mrs *miniredis.Miniredis) int {
	tb.Helper()
	// The *RedisDB does not advance miniredis's TTL clock, which walks
	// every key with a TTL at each call through the Miniredis.
	mr := mrs.DB(0)
	entry := strings.Repeat("x", 300)
	result := strings.Repeat("r", 1000)
	for p := range 50 {
		name := fmt.Sprintf("project-%d", p)
		_ = mr.Set("berth:project:"+name, `{"name":"`+name+`","workspace":"/home/dev/`+name+`","production":"/srv/`+name+`","strategy":"symlink","services":["web","worker"]}`)
		_, _ = mr.SetAdd("berth:projects", name)
		_ = mr.Set("berth:claim:compose:"+name, name)
		_ = mr.Set("berth:claim:production:"+fmt.Sprintf("%064d", p), name)
		_ = mr.Set("berth:status:"+name, `{"services":[{"service":"web","state":"running"}]}`)
		mr.SetTTL("berth:status:"+name, 10*time.Second)
		for i := range 100 {
			_, _ = mr.Push("berth:history:"+name, fmt.Sprintf(`{"n":%d,"action":"deploy","detail":%q}`, i, entry))
		}
	}
	for i := range 3000 {
		k := fmt.Sprintf("berth:req:test_alice:%032d", i)
		_ = mr.Set(k, `{"id":"`+k+`","state":"done","result":"`+result+`"}`)
		mr.SetTTL(k, 24*time.Hour)
	}
	return len(mr.Keys())
}

func TestDevStoreSaveCost(t *testing.T) {
	if testing.Short() {
		t.Skip("measures")
	}
	r := runDevStore(t, t.TempDir(), time.Hour, nil)
	n := fillBerthLike(t, r.mr)
	const rounds = 3
	begin := time.Now()
	for range rounds {
		r.ds.mu.Lock()
		r.ds.lastSave = time.Time{}
		r.ds.mu.Unlock()
		if err := r.ds.save(); err != nil {
			t.Fatal(err)
		}
	}
	per := time.Since(begin) / rounds
	fi, _ := os.Stat(r.ds.path)
	t.Logf("one save of %d keys (%.1f MB): %v", n, float64(fi.Size())/1e6, per)
	// Far more than it takes; a save once a second must stay cheap.
	if per > 5*time.Second {
		t.Fatalf("a save takes %v", per)
	}
}
