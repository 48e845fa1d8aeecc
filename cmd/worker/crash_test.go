package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
)

// TestCrashRecovery kills the worker (SIGKILL) inside each step of a deploy
// in turn, and of the rollback of a failing deploy. After a restart the
// production tree is fully the old or fully the new one, the services are
// up, and the request has exactly one result.
func TestCrashRecovery(t *testing.T) {
	for _, c := range []struct {
		step    string
		breaks  bool // the deploy fails health, so it rolls back
		newTree bool // a kill here may end with the new tree
	}{
		{step: events.StepBackup},
		{step: events.StepSync},
		{step: events.StepBuild},
		{step: events.StepUp},
		{step: events.StepVerify},
		{step: events.StepRollback, breaks: true},
	} {
		t.Run(c.step, func(t *testing.T) {
			h := newHarness(t, filepath.Clean(tempRoot(t)))
			h.stop() // the worker runs as a process, so it can be killed
			p := h.startProcess()
			d := setupDeployable(t, h, "po", nil)
			oldTree := treeHash(t, d.sample.Dir)
			d.write(t, "version.txt", "2.0.0\n")
			d.write(t, "a/one.txt", "one\n")
			d.write(t, "b/two.txt", "two\n")
			if c.breaks {
				d.write(t, "compose.yml", strings.Replace(d.read(t, "compose.yml"), `FAIL_HEALTH: "${FAIL_HEALTH:-0}"`, `FAIL_HEALTH: "1"`, 1))
			}
			cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)

			p.kill(t)
			p = h.startProcess("--test-pause-at", c.step, "--test-pause-for", "5m")
			id := "crash-" + c.step
			evs := h.subscribe("po", id)
			h.publish("po", events.ActionDeploy, events.Command{ID: id, User: "test:alice", Confirm: cd.Token})
			p.waitFor(t, "pausing (test hook)", 2*time.Minute)
			p.kill(t)

			p = h.startProcess()
			res, _ := evs.result(t, 3*time.Minute)
			got := treeHash(t, d.sample.Dir)
			newTree := got != oldTree
			if newTree {
				// Fully new: the workspace's files, production's own kept.
				for _, rel := range []string{"version.txt", "a/one.txt", "b/two.txt"} {
					if readFile(t, filepath.Join(d.sample.Dir, rel)) != d.read(t, rel) {
						t.Fatalf("killed in %s: production is neither old nor new (%s differs)", c.step, rel)
					}
				}
				if res.OK == nil || !*res.OK {
					t.Fatalf("new tree but a failed result: %+v", res.Error)
				}
			} else if res.OK != nil && *res.OK {
				t.Fatalf("old tree but an ok result: %s", res.Data)
			}
			d.checkUntouched(t)
			// Up again, whichever version.
			v := served(t, h, "po")
			if (newTree && v != "2.0.0") || (!newTree && v != "1.0.0") {
				t.Fatalf("serving %q with the %v tree", v, map[bool]string{true: "new", false: "old"}[newTree])
			}
			res2, _ := h.send("po", events.ActionStatus, events.Command{Args: args(t, map[string]any{"refresh": true})})
			st := decodeData[handlers.StatusReport](t, res2)
			if st.Summary.Running != 2 || st.Summary.Healthy != 1 {
				t.Fatalf("services after recovery: %+v", st.Summary)
			}
			// No journal, a free lock (also after a stop during the backup),
			// images that match the containers.
			checkSettled(t, h, d, "po")
			time.Sleep(h.cfg.AckWait + time.Second)
			if n := h.storedResults("po", id); n != 1 {
				t.Fatalf("%d results stored for the request, want exactly 1", n)
			}
			t.Logf("killed in %s: tree %s, result ok=%v %v", c.step, map[bool]string{true: "new", false: "old"}[newTree], res.OK != nil && *res.OK, res.Error)
		})
	}
}
