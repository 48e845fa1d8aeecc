package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

// TestKillDeployAtRandomPoints kills the worker (SIGKILL) at random points
// of deploys of both sample projects, and checks after each kill, once a
// new worker has started and answered: production is exactly the old or
// exactly the new tree, the running containers and the image tags match
// it, the compose processes died with the worker, the lock is free, no
// journal is left, the deploy ran at most once; and at the end, that each
// request has exactly one result event.
//
// The seed is printed; BERTH_CRASH_SEED replays it, BERTH_CRASH_TRIALS
// sets the number of kills per project (default 11, 22 in all).
func TestKillDeployAtRandomPoints(t *testing.T) {
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("BERTH_CRASH_SEED"), 10, 64); err == nil {
		seed = s
	}
	trials := 11
	if n, err := strconv.Atoi(os.Getenv("BERTH_CRASH_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	t.Logf("seed %d (BERTH_CRASH_SEED=%d replays it), %d trials per project (half as many for the start-first rollouts of proxyapp)", seed, seed, trials)
	for _, fx := range []testenv.Fixture{testenv.SampleFixture, testenv.RealFixture, testenv.ProxyFixture} {
		t.Run(fx.String(), func(t *testing.T) {
			t.Parallel()
			killDeploys(t, fx, seed, trials)
		})
	}
}

// killDeploys runs the kill trials of TestKillDeployAtRandomPoints on one
// fixture.
func killDeploys(t *testing.T, fx testenv.Fixture, seed int64, trials int) {
	if fx == testenv.ProxyFixture {
		trials = max(trials/2, 1)
	}
	{
		rng := rand.New(rand.NewPCG(uint64(seed), uint64(fx)))
		h := newHarness(t, filepath.Clean(tempRoot(t)))
		h.stop()
		p := h.startProcess()
		d := setupFixture(t, h, "po", fx, map[string]any{"stabilize_s": 1})

		// How long a deploy takes here: the kills fall within it.
		d.write(t, "version.txt", "1.1.0\n")
		begin := time.Now()
		mustOK(t, deployNow(t, h, "po"))
		span := time.Since(begin)
		t.Logf("%s: a deploy takes %v", fx, span.Round(time.Millisecond))

		var ids []string
		outcomes := map[string]int{}
		for i := range trials {
			version := fmt.Sprintf("1.%d.%d", i+2, rng.IntN(100))
			d.write(t, "version.txt", version+"\n")
			if i%2 == 0 {
				d.write(t, fmt.Sprintf("trial/%d.txt", i), "trial file\n")
			} else {
				_ = os.Remove(filepath.Join(d.ws, fmt.Sprintf("trial/%d.txt", i-1)))
			}
			before := snapshot(t, d)
			cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
			id := fmt.Sprintf("kill%d-%d", fx, i)
			ids = append(ids, id)
			evs := h.subscribe("po", id)
			h.publish("po", events.ActionDeploy, events.Command{ID: id, User: "test:alice", Confirm: cd.Token})
			after := time.Duration(rng.Int64N(int64(span + span/2)))
			time.Sleep(after)
			p.kill(t)
			if left := waitUntagged(id+"/", 5*time.Second); len(left) > 0 {
				t.Fatalf("trial %d: compose processes outlived the killed worker: %v", i, left)
			}
			p = h.startProcess()
			res, _ := evs.result(t, 3*time.Minute)

			now := snapshot(t, d)
			newTree := now.equal(d.wsFiles(t))
			oldTree := now.equal(before)
			switch {
			case newTree == oldTree:
				t.Fatalf("trial %d (killed after %v): production is neither the old nor the new tree", i, after)
			case newTree && (res.OK == nil || !*res.OK):
				t.Fatalf("trial %d: the new tree but a failed result: %+v", i, res.Error)
			case oldTree && res.OK != nil && *res.OK:
				t.Fatalf("trial %d: the old tree but an ok result: %s", i, res.Data)
			}
			want := strings.TrimSpace(now.files["version.txt"])
			if v := d.sample.Served(t); v != want {
				t.Fatalf("trial %d: serving %q with version.txt %q", i, v, want)
			}
			checkSettled(t, h, d, "po")
			if n := releasesOf(t, h, id); n > 1 {
				t.Fatalf("trial %d: the deploy ran %d times", i, n)
			}
			d.checkUntouched(t)
			outcome := "old tree, " + errCode(res)
			if newTree {
				outcome = "new tree, ok"
			}
			outcomes[outcome]++
			t.Logf("trial %d: killed %v into the deploy: %s", i, after.Round(time.Millisecond), outcome)
			if oldTree {
				// The workspace stays ahead; the next trial deploys it all.
				continue
			}
		}
		time.Sleep(h.cfg.AckWait + 2*time.Second)
		for _, id := range ids {
			if n := h.storedResults("po", id); n != 1 {
				t.Errorf("%s: %d results stored, want exactly 1", id, n)
			}
		}
		t.Logf("%s: %d kills: %v", fx, trials, outcomes)
	}
}

// tree is the content of the files of production a deploy may change.
type tree struct{ files map[string]string }

// snapshot reads production's files, but the production-only ones.
func snapshot(t *testing.T, d *deployable) tree {
	t.Helper()
	out := tree{files: map[string]string{}}
	err := filepath.WalkDir(d.sample.Dir, func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(d.sample.Dir, p)
		if _, prodOnly := d.untouched[rel]; prodOnly || rel == "data" || strings.HasPrefix(rel, "data/") || de.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out.files[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wsFiles is what production holds after a deploy of the workspace.
func (d *deployable) wsFiles(t *testing.T) tree {
	t.Helper()
	ws := snapshot(t, &deployable{sample: &testenv.Sample{Dir: d.ws}, untouched: d.untouched})
	return ws
}

func (a tree) equal(b tree) bool {
	if len(a.files) != len(b.files) {
		return false
	}
	for k, v := range a.files {
		if w, ok := b.files[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// releasesOf counts the releases a request made.
func releasesOf(t *testing.T, h *harness, requestID string) int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(h.cfg.StateDir, "targets", "*", "releases", "*", "release.json"))
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(b, &r) == nil && r.RequestID == requestID {
			n++
		}
	}
	return n
}

// waitUntagged waits until no process carries BERTH_OP=<prefix>…, and
// returns those still left when timeout passes.
func waitUntagged(prefix string, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		left := tagged(prefix)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tagged lists the live processes (pid and command) whose environment
// holds BERTH_OP=<prefix>….
func tagged(prefix string) []string {
	dirs, _ := os.ReadDir("/proc")
	var out []string
	for _, de := range dirs {
		if _, err := strconv.Atoi(de.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", de.Name(), "stat"))
		if err != nil || bytes.Contains(stat[bytes.LastIndexByte(stat, ')'):], []byte(") Z")) {
			continue // gone, or a zombie
		}
		env, err := os.ReadFile(filepath.Join("/proc", de.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.HasPrefix(kv, []byte("BERTH_OP="+prefix)) {
				cmd, _ := os.ReadFile(filepath.Join("/proc", de.Name(), "cmdline"))
				out = append(out, de.Name()+" "+string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
				break
			}
		}
	}
	return out
}
