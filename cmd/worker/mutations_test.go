package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
)

// deployable is the sample app as a project with a separate workspace, and
// production files Berth must never touch.
type deployable struct {
	sample *testenv.Sample
	ws     string
	// untouched are production-only files and their contents.
	untouched map[string]string
}

func setupDeployable(t *testing.T, h *harness, project string, extraConfig map[string]any) *deployable {
	t.Helper()
	return setupFixture(t, h, project, testenv.SampleFixture, extraConfig)
}

// setupFixture brings up a fixture's sample project as a project with a
// separate workspace (a copy of production without its production-only
// files), adds production-only files Berth must never touch, and
// configures it.
func setupFixture(t *testing.T, h *harness, project string, fx testenv.Fixture, extraConfig map[string]any) *deployable {
	t.Helper()
	sample := testenv.SampleApp(t, testenv.WithFixture(fx))
	ws := filepath.Join(t.TempDir(), "workspace")
	copyTree(t, sample.Dir, ws)
	d := &deployable{sample: sample, ws: ws, untouched: map[string]string{
		".env":           "FAIL_HEALTH=0\nSECRET_TOKEN=s3cr3t\n",
		"data/db.txt":    "precious data\n",
		"data/sub/x.bin": "\x00\x01binary",
	}}
	for _, rel := range fx.ProductionOnly() {
		if err := os.RemoveAll(filepath.Join(ws, rel)); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Remove(filepath.Join(ws, "data"))
	for rel, content := range d.untouched {
		p := filepath.Join(sample.Dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, rel := range fx.ProductionOnly() {
		if _, ok := d.untouched[rel]; !ok {
			d.untouched[rel] = readFile(t, filepath.Join(sample.Dir, rel))
		}
	}
	cfg := map[string]any{"workspace": ws, "production": sample.Dir, "compose_project": sample.Project, "compose_files": sample.Files}
	for k, v := range extraConfig {
		cfg[k] = v
	}
	res, _ := h.send(project, events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, cfg)})
	mustOK(t, res)
	return d
}

// checkUntouched asserts the production-only files are byte for byte intact.
func (d *deployable) checkUntouched(t *testing.T) {
	t.Helper()
	for rel, want := range d.untouched {
		got, err := os.ReadFile(filepath.Join(d.sample.Dir, rel))
		if err != nil || string(got) != want {
			t.Fatalf("production file %s changed: %q, %v", rel, got, err)
		}
	}
}

func (d *deployable) write(t *testing.T, rel, content string) {
	t.Helper()
	p := filepath.Join(d.ws, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (d *deployable) read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.ws, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// served asks the sample app's web service which version it serves.
func served(t *testing.T, h *harness, project string) string {
	t.Helper()
	res, _ := h.send(project, events.ActionStatus, events.Command{Args: args(t, map[string]any{"refresh": true})})
	mustOK(t, res)
	st := decodeData[handlers.StatusReport](t, res)
	for _, s := range st.Services {
		if s.Service == "web" && len(s.Ports) > 0 {
			hostport, _, _ := strings.Cut(s.Ports[0], "->")
			resp, err := http.Get("http://" + hostport + "/")
			if err != nil {
				t.Fatalf("GET web: %v", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("web has no published port: %+v", st.Services)
	return ""
}

// plan sends a mutation without confirm and returns its confirmation.
func plan(t *testing.T, h *harness, project, action, user string, a any) (handlers.ConfirmationData, []events.Event) {
	t.Helper()
	cmd := events.Command{User: user}
	if a != nil {
		cmd.Args = args(t, a)
	}
	res, evs := h.send(project, action, cmd)
	if errCode(res) != "confirmation_required" {
		t.Fatalf("%s without confirm: %+v (%s)", action, res.Error, res.Data)
	}
	cd := decodeData[handlers.ConfirmationData](t, res)
	var confirm *events.Event
	for i := range evs {
		if evs[i].Kind == events.KindConfirm {
			confirm = &evs[i]
		}
	}
	if confirm == nil || confirm.Token != cd.Token || len(cd.Token) < 32 || confirm.ExpiresAt == "" {
		t.Fatalf("no confirm event matching the result: %+v", evs)
	}
	return cd, evs
}

func confirm(t *testing.T, h *harness, project, action, user, token string) (events.Event, []events.Event) {
	t.Helper()
	return h.send(project, action, events.Command{User: user, Confirm: token})
}

func TestDeployRollbackLifecycle(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	d := setupDeployable(t, h, "po", nil)
	if v := served(t, h, "po"); v != "1.0.0" {
		t.Fatalf("serving %q before any deploy", v)
	}

	// Nothing changed: nothing to confirm, nothing done.
	res, _ := h.send("po", events.ActionDeploy, events.Command{User: "test:alice"})
	mustOK(t, res)
	if dr := decodeData[handlers.DeployResult](t, res); dr.Changed {
		t.Fatalf("deploy without changes: %+v", dr)
	}

	// A new version: plan, confirm, see it served.
	d.write(t, "version.txt", "2.0.0\n")
	d.write(t, "extra/notes.txt", "added by the deploy\n")
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	var dp handlers.DeployPlan
	raw, _ := json.Marshal(cd.Plan)
	_ = json.Unmarshal(raw, &dp)
	if dp.Files.Modified != 1 || dp.Files.Added != 1 || dp.Files.Deleted != 0 || !dp.NeedsBuild ||
		!contains(dp.Files.ModifiedPaths, "version.txt") || !contains(dp.Files.AddedPaths, "extra/notes.txt") {
		t.Fatalf("plan %+v", dp)
	}
	if !contains(dp.Files.Kept, ".env") {
		t.Fatalf("plan does not list .env as kept: %+v", dp.Files.Kept)
	}
	res, evs := confirm(t, h, "po", events.ActionDeploy, "test:alice", "yes")
	mustOK(t, res)
	steps := map[string]bool{}
	for _, e := range evs {
		if e.Kind == events.KindProgress {
			steps[e.Step] = true
		}
	}
	for _, s := range []string{"backup", "sync", "build", "up", "verify"} {
		if !steps[s] {
			t.Fatalf("no progress for step %s: %v", s, steps)
		}
	}
	first := decodeData[handlers.DeployResult](t, res)
	if v := served(t, h, "po"); v != "2.0.0" {
		t.Fatalf("serving %q after deploying 2.0.0", v)
	}
	d.checkUntouched(t)
	t.Logf("deploy steps (ms): %v", first.StepsMS)

	// A change that breaks health is rolled back, with the reason.
	goodCompose := d.read(t, "compose.yml")
	d.write(t, "compose.yml", strings.Replace(goodCompose, `FAIL_HEALTH: "${FAIL_HEALTH:-0}"`, `FAIL_HEALTH: "1"`, 1))
	plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	res, _ = confirm(t, h, "po", events.ActionDeploy, "test:alice", "yes")
	if errCode(res) != "health_failed" || res.Error.Data["rolled_back"] != true {
		t.Fatalf("unhealthy deploy: %+v", res.Error)
	}
	fr := decodeData[handlers.DeployResult](t, res)
	if !fr.RolledBack || fr.Failure == nil || fr.Failure.Service != "web" || len(fr.Failure.LastLogs) == 0 {
		t.Fatalf("failure details: %s", res.Data)
	}
	if v := served(t, h, "po"); v != "2.0.0" {
		t.Fatalf("serving %q after a rolled-back deploy, want 2.0.0", v)
	}
	d.checkUntouched(t)
	d.write(t, "compose.yml", goodCompose)

	// A change that breaks the build is rolled back too.
	goodDockerfile := d.read(t, "Dockerfile")
	d.write(t, "Dockerfile", goodDockerfile+"COPY does-not-exist /nowhere\n")
	plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	res, _ = confirm(t, h, "po", events.ActionDeploy, "test:alice", "yes")
	if errCode(res) != "build_failed" || res.Error.Data["rolled_back"] != true {
		t.Fatalf("broken build: %+v", res.Error)
	}
	if b, _ := os.ReadFile(filepath.Join(d.sample.Dir, "Dockerfile")); string(b) != goodDockerfile {
		t.Fatalf("production Dockerfile not restored: %q", b)
	}
	if v := served(t, h, "po"); v != "2.0.0" {
		t.Fatalf("serving %q after a failed build", v)
	}
	d.write(t, "Dockerfile", goodDockerfile)

	// A file Berth deployed and the workspace dropped is deleted.
	if err := os.RemoveAll(filepath.Join(d.ws, "extra")); err != nil {
		t.Fatal(err)
	}
	d.write(t, "version.txt", "3.0.0\n")
	cd, _ = plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	raw, _ = json.Marshal(cd.Plan)
	_ = json.Unmarshal(raw, &dp)
	if dp.Files.Deleted != 1 || !contains(dp.Files.DeletedPaths, "extra/notes.txt") {
		t.Fatalf("plan does not delete the dropped file: %+v", dp.Files)
	}
	res, _ = confirm(t, h, "po", events.ActionDeploy, "test:alice", cd.Token)
	mustOK(t, res)
	if _, err := os.Stat(filepath.Join(d.sample.Dir, "extra/notes.txt")); !os.IsNotExist(err) {
		t.Fatalf("deployed file not deleted: %v", err)
	}
	if v := served(t, h, "po"); v != "3.0.0" {
		t.Fatalf("serving %q after deploying 3.0.0", v)
	}

	// Status says production is level with the workspace; then behind.
	res, _ = h.send("po", events.ActionStatus, events.Command{Args: args(t, map[string]any{"refresh": true})})
	if st := decodeData[handlers.StatusReport](t, res); st.Behind == nil || st.Behind.Files != 0 {
		t.Fatalf("status after deploy: behind %+v", st.Behind)
	}
	d.write(t, "new.txt", "x")
	res, _ = h.send("po", events.ActionStatus, events.Command{Args: args(t, map[string]any{"refresh": true})})
	if st := decodeData[handlers.StatusReport](t, res); st.Behind == nil || st.Behind.Files != 1 || st.Behind.Added != 1 {
		t.Fatalf("status with one new workspace file: behind %+v", st.Behind)
	}
	_ = os.Remove(filepath.Join(d.ws, "new.txt"))

	// Rollback: back to 2.0.0 (the release before), files and image.
	cd, _ = plan(t, h, "po", events.ActionRollback, "test:alice", nil)
	res, _ = confirm(t, h, "po", events.ActionRollback, "test:alice", "yes")
	mustOK(t, res)
	if v := served(t, h, "po"); v != "2.0.0" {
		t.Fatalf("serving %q after rollback, want 2.0.0", v)
	}
	if b, _ := os.ReadFile(filepath.Join(d.sample.Dir, "extra/notes.txt")); string(b) != "added by the deploy\n" {
		t.Fatalf("rollback did not restore the deleted file: %q", b)
	}
	// And once more: back to the original 1.0.0.
	plan(t, h, "po", events.ActionRollback, "test:alice", nil)
	res, _ = confirm(t, h, "po", events.ActionRollback, "test:alice", "yes")
	mustOK(t, res)
	if v := served(t, h, "po"); v != "1.0.0" {
		t.Fatalf("serving %q after the second rollback, want 1.0.0", v)
	}
	if _, err := os.Stat(filepath.Join(d.sample.Dir, "extra")); !os.IsNotExist(err) {
		t.Fatalf("rollback to the first state left the added directory: %v", err)
	}
	d.checkUntouched(t)
	res, _ = h.send("po", events.ActionRollback, events.Command{User: "test:alice"})
	if errCode(res) != "not_found" {
		t.Fatalf("rollback with nothing left to undo: %+v", res.Error)
	}

	// History: who asked, who confirmed, what happened.
	res, _ = h.send("po", events.ActionHistory, events.Command{Args: args(t, map[string]any{"limit": 50})})
	var hist struct {
		Entries []struct {
			Action, User, Confirmer string
			OK                      bool
			ErrorCode               string         `json:"error_code"`
			Details                 map[string]any `json:"details"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(res.Data, &hist); err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, e := range hist.Entries {
		summary = append(summary, fmt.Sprintf("%s:%v:%s", e.Action, e.OK, e.ErrorCode))
		if e.Action == "deploy" && e.OK && e.Details["release"] != nil && (e.Confirmer != "test:alice" || e.Details["plan_digest"] == nil || e.Details["steps_ms"] == nil) {
			t.Fatalf("deploy history entry without confirmer or digest: %+v", e)
		}
	}
	want := "rollback:false:not_found,rollback:true:,rollback:true:,deploy:true:,deploy:false:build_failed,deploy:false:health_failed,deploy:true:,deploy:true:,config.set:true:"
	if got := strings.Join(summary, ","); got != want {
		t.Fatalf("history\n got %s\nwant %s", got, want)
	}
}

func TestConfirmationRules(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	h.stop()
	h.cfg.ConfirmTTL = 3 * time.Second
	h.start()
	d := setupDeployable(t, h, "po", nil)
	d.write(t, "version.txt", "2.0.0\n")

	// Another user cannot confirm alice's plan, with "yes" or the token.
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	if res, _ := confirm(t, h, "po", events.ActionDeploy, "test:mallory", "yes"); errCode(res) != "confirmation_invalid" {
		t.Fatalf("yes by another user: %+v", res.Error)
	}
	if res, _ := confirm(t, h, "po", events.ActionDeploy, "test:mallory", cd.Token); errCode(res) != "confirmation_invalid" {
		t.Fatalf("token by another user: %+v", res.Error)
	}
	// The token is for deploy, not restart.
	if res, _ := confirm(t, h, "po", events.ActionRestart, "test:alice", cd.Token); errCode(res) != "confirmation_invalid" {
		t.Fatalf("deploy token on restart: %+v", res.Error)
	}
	// Expired.
	time.Sleep(time.Until(cd.ExpiresAt) + 100*time.Millisecond)
	if res, _ := confirm(t, h, "po", events.ActionDeploy, "test:alice", cd.Token); errCode(res) != "confirmation_expired" {
		t.Fatalf("expired token: %+v", res.Error)
	}

	// The plan changes between plan and confirm: nothing runs, a new plan comes back.
	cd, _ = plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	d.write(t, "version.txt", "2.0.1\n")
	res, _ := confirm(t, h, "po", events.ActionDeploy, "test:alice", cd.Token)
	if errCode(res) != "plan_changed" {
		t.Fatalf("changed plan: %+v", res.Error)
	}
	if v := served(t, h, "po"); v != "1.0.0" {
		t.Fatalf("a changed plan ran: serving %q", v)
	}
	fresh := decodeData[handlers.ConfirmationData](t, res)
	if fresh.Token == "" || fresh.Token == cd.Token {
		t.Fatalf("plan_changed without a new token: %s", res.Data)
	}
	res, _ = confirm(t, h, "po", events.ActionDeploy, "test:alice", fresh.Token)
	mustOK(t, res)
	// A used token is refused.
	if res, _ := confirm(t, h, "po", events.ActionDeploy, "test:alice", fresh.Token); errCode(res) != "confirmation_invalid" {
		t.Fatalf("reused token: %+v", res.Error)
	}

	// Second approver: alice cannot confirm her own restart; bob can.
	res, _ = h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": d.ws, "production": d.sample.Dir, "compose_project": d.sample.Project, "require_second_approver": true})})
	mustOK(t, res)
	cd, _ = plan(t, h, "po", events.ActionRestart, "test:alice", map[string]any{"services": []string{"worker"}})
	if cd.ConfirmBy != "another user" {
		t.Fatalf("confirm_by %q", cd.ConfirmBy)
	}
	if res, _ := confirm(t, h, "po", events.ActionRestart, "test:alice", cd.Token); errCode(res) != "confirmation_invalid" {
		t.Fatalf("self-approval: %+v", res.Error)
	}
	res, _ = confirm(t, h, "po", events.ActionRestart, "test:bob", cd.Token)
	mustOK(t, res)
}

func TestConcurrentDeploysConflict(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	d := setupDeployable(t, h, "po", nil)
	d.write(t, "version.txt", "2.0.0\n")
	a, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	b, _ := plan(t, h, "po", events.ActionDeploy, "test:bob", nil)
	var wg sync.WaitGroup
	results := make([]events.Event, 2)
	for i, c := range []struct{ user, token string }{{"test:alice", a.Token}, {"test:bob", b.Token}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = confirm(t, h, "po", events.ActionDeploy, c.user, c.token)
		}()
	}
	wg.Wait()
	var ok, conflict int
	for _, r := range results {
		switch {
		case r.OK != nil && *r.OK:
			ok++
		case errCode(r) == "conflict":
			conflict++
			holder, _ := r.Error.Data["holder"].(map[string]any)
			if holder["user"] == nil || holder["request_id"] == nil || holder["since"] == nil || !strings.Contains(r.Error.Message, "deploy") {
				t.Fatalf("conflict does not name the holder: %+v", r.Error)
			}
		case errCode(r) == "plan_changed":
			// The loser came second, after the winner deployed: the plan is empty now.
			ok += 0
		default:
			t.Fatalf("unexpected result %+v", r.Error)
		}
	}
	if ok != 1 || conflict != 1 {
		t.Fatalf("%d deploys ran and %d got conflict; want exactly one each", ok, conflict)
	}
}

func TestRestartEndToEnd(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	setupDeployable(t, h, "po", nil)
	before := containerStart(t, h, "po")
	cd, _ := plan(t, h, "po", events.ActionRestart, "test:alice", nil)
	raw, _ := json.Marshal(cd.Plan)
	var rp handlers.RestartPlan
	_ = json.Unmarshal(raw, &rp)
	if len(rp.Containers) != 2 || rp.DowntimeEstimateS <= 0 || !strings.Contains(rp.EstimateSource, "default") {
		t.Fatalf("restart plan %+v", rp)
	}
	res, _ := confirm(t, h, "po", events.ActionRestart, "test:alice", "yes")
	mustOK(t, res)
	rr := decodeData[handlers.RestartResult](t, res)
	if len(rr.Services) != 2 || rr.DowntimeS <= 0 {
		t.Fatalf("restart result %+v", rr)
	}
	after := containerStart(t, h, "po")
	for svc, t0 := range before {
		if !after[svc].After(t0) {
			t.Fatalf("%s was not restarted: %v then %v", svc, t0, after[svc])
		}
	}
	// The next plan's estimate is the measured downtime.
	cd, _ = plan(t, h, "po", events.ActionRestart, "test:alice", nil)
	raw, _ = json.Marshal(cd.Plan)
	_ = json.Unmarshal(raw, &rp)
	if rp.DowntimeEstimateS != rr.DowntimeS || strings.Contains(rp.EstimateSource, "default") {
		t.Fatalf("estimate %v from %q, want the measured %v", rp.DowntimeEstimateS, rp.EstimateSource, rr.DowntimeS)
	}
}

func containerStart(t *testing.T, h *harness, project string) map[string]time.Time {
	t.Helper()
	res, _ := h.send(project, events.ActionStatus, events.Command{Args: args(t, map[string]any{"refresh": true})})
	st := decodeData[handlers.StatusReport](t, res)
	out := map[string]time.Time{}
	for _, s := range st.Services {
		if s.StartedAt != nil {
			out[s.Service] = *s.StartedAt
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s || strings.TrimSuffix(x, "/") == strings.TrimSuffix(s, "/") {
			return true
		}
	}
	return false
}

// treeHash hashes a directory tree's paths, modes and contents.
func treeHash(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := de.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		if de.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// copyTree copies a directory of regular files.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		info, err := de.Info()
		if err != nil {
			return err
		}
		if de.IsDir() {
			return os.MkdirAll(dst, info.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSymlinkStrategy(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	sample := testenv.SampleApp(t)
	link := filepath.Join(t.TempDir(), "production")
	if err := os.Symlink(sample.Dir, link); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"workspace": sample.Dir, "production": link, "compose_project": sample.Project, "strategy": "copy"}
	if res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, cfg)}); errCode(res) != "bad_request" {
		t.Fatalf("copy onto the workspace itself: %+v", res.Error)
	}
	cfg["strategy"] = "symlink"
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, cfg)})
	mustOK(t, res)

	if err := os.WriteFile(filepath.Join(sample.Dir, "version.txt"), []byte("2.0.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	raw, _ := json.Marshal(cd.Plan)
	var dp handlers.DeployPlan
	_ = json.Unmarshal(raw, &dp)
	if dp.Strategy != "symlink" || !dp.NeedsBuild || contains(dp.Steps, "sync") {
		t.Fatalf("symlink plan %+v", dp)
	}
	res, _ = confirm(t, h, "po", events.ActionDeploy, "test:alice", "yes")
	mustOK(t, res)
	if v := served(t, h, "po"); v != "2.0.0" {
		t.Fatalf("serving %q after a symlink deploy", v)
	}
	// Rollback restores the image (the files are the workspace's own).
	plan(t, h, "po", events.ActionRollback, "test:alice", nil)
	res, _ = confirm(t, h, "po", events.ActionRollback, "test:alice", "yes")
	mustOK(t, res)
	if v := served(t, h, "po"); v != "1.0.0" {
		t.Fatalf("serving %q after rolling back a symlink deploy, want the old image's 1.0.0", v)
	}
}

func TestRegistryStrategyPullFailureRollsBack(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	sample := testenv.SampleApp(t)
	// The services run an image known by a registry reference; the registry
	// (a closed loopback port: nothing can be pulled here) is unreachable.
	ref := "127.0.0.1:1/berth-test/" + sample.Project + ":1"
	tagOut, err := execOut("docker", "tag", sample.Project+"-app:latest", ref)
	if err != nil {
		t.Fatalf("tag: %v %s", err, tagOut)
	}
	t.Cleanup(func() { _, _ = execOut("docker", "rmi", ref) })
	compose := readFile(t, filepath.Join(sample.Dir, "compose.yml"))
	compose = strings.ReplaceAll(compose, "image: ${COMPOSE_PROJECT_NAME:-sampleapp}-app:latest", "image: "+ref)
	compose = strings.Replace(compose, "    build: .\n", "", 1)
	if err := os.WriteFile(filepath.Join(sample.Dir, "compose.yml"), []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	sample.Compose(t, "up", "-d", "--wait")
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": sample.Dir, "production": sample.Dir, "compose_project": sample.Project, "strategy": "registry"})})
	mustOK(t, res)
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	raw, _ := json.Marshal(cd.Plan)
	var rp handlers.RegistryPlan
	_ = json.Unmarshal(raw, &rp)
	if rp.Strategy != "registry" || rp.Images["web"] != ref || !contains(rp.Steps, "pull") {
		t.Fatalf("registry plan %+v", rp)
	}
	res, _ = confirm(t, h, "po", events.ActionDeploy, "test:alice", "yes")
	if errCode(res) != "build_failed" || res.Error.Data["rolled_back"] != true {
		t.Fatalf("pull from an unreachable registry: %+v", res.Error)
	}
	if v := served(t, h, "po"); v != "1.0.0" {
		t.Fatalf("serving %q after a failed pull", v)
	}
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func TestRoles(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	h.stop()
	h.cfg.Admins = []string{"test:root"}
	h.start()
	sample := testenv.SampleApp(t)
	ws := filepath.Join(t.TempDir(), "ws")
	copyTree(t, sample.Dir, ws)
	cfg := map[string]any{"workspace": ws, "production": sample.Dir, "compose_project": sample.Project,
		"roles": map[string]string{"test:vera": "viewer", "test:otto": "operator", "test:ada": "admin"}}
	// Only a global admin configures a new project.
	if res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:ada", Args: args(t, cfg)}); errCode(res) != "forbidden" {
		t.Fatalf("config.set of a new project by a non-admin: %+v", res.Error)
	}
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:root", Args: args(t, cfg)})
	mustOK(t, res)

	for _, c := range []struct {
		user, action string
		args         any
		want         string // "" = not forbidden
	}{
		{"test:nobody", events.ActionStatus, nil, "forbidden"},
		{"test:nobody", events.ActionLogs, nil, "forbidden"},
		{"test:vera", events.ActionStatus, nil, ""},
		{"test:vera", events.ActionHistory, nil, ""},
		{"test:vera", events.ActionRestart, nil, "forbidden"},
		{"test:vera", events.ActionDeploy, nil, "forbidden"},
		{"test:otto", events.ActionRestart, nil, "confirmation_required"},
		{"test:otto", events.ActionConfigSet, cfg, "forbidden"},
		{"test:otto", events.ActionConfigDelete, nil, "forbidden"},
		{"test:ada", events.ActionConfigSet, cfg, ""},
		{"test:root", events.ActionStatus, nil, ""},
	} {
		cmd := events.Command{User: c.user}
		if c.args != nil {
			cmd.Args = args(t, c.args)
		}
		res, evs := h.send("po", c.action, cmd)
		if errCode(res) != c.want {
			t.Errorf("%s %s: got %q (%v), want %q", c.user, c.action, errCode(res), res.Error, c.want)
		}
		if c.want == "forbidden" && (len(evs) != 1 || res.Error.Hint == "") {
			t.Errorf("%s %s: forbidden after work began (%d events) or without a hint", c.user, c.action, len(evs))
		}
	}
	// Anonymous viewers: reads open to all, nothing more.
	cfg["anonymous_viewers"] = true
	res, _ = h.send("po", events.ActionConfigSet, events.Command{User: "test:ada", Args: args(t, cfg)})
	mustOK(t, res)
	if res, _ := h.send("po", events.ActionStatus, events.Command{User: "test:nobody"}); res.OK == nil || !*res.OK {
		t.Fatalf("anonymous viewer status: %+v", res.Error)
	}
	if res, _ := h.send("po", events.ActionRestart, events.Command{User: "test:nobody"}); errCode(res) != "forbidden" {
		t.Fatalf("anonymous viewer restart: %+v", res.Error)
	}
	// The refused restart left an audit record.
	ctx := context.Background()
	st, err := h.js.Stream(ctx, "BERTH_AUDIT")
	if err != nil {
		t.Fatal(err)
	}
	// Audit records are published after the result, asynchronously.
	var rec events.AuditRecord
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m, err := st.GetLastMsgForSubject(ctx, "berth.audit.po.restart")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.User == "test:nobody" || time.Now().After(deadline) {
			break
		}
	}
	if rec.User != "test:nobody" || rec.OK || rec.ErrorCode != events.CodeForbidden {
		t.Fatalf("audit record %+v", rec)
	}
}

func TestLogsNeverShowEnvSecrets(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	d := setupDeployable(t, h, "po", nil)
	// A production .env value that the app happens to print.
	if err := os.WriteFile(filepath.Join(d.sample.Dir, ".env"), []byte("FAIL_HEALTH=0\nLEAKY=this is stderr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, _ := h.send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"tail": 1000})})
	mustOK(t, res)
	body, _ := json.Marshal(res)
	if strings.Contains(string(body), "this is stderr") || !strings.Contains(string(body), "[REDACTED]") {
		t.Fatalf("a .env value reached the result: %s", body)
	}
}
