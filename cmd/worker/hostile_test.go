package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
)

// hostileDir holds the hostile-input corpus, relative to this package.
const hostileDir = "../../testdata/hostile"

// hostileCase is one file of testdata/hostile: a command as an attacker or
// a broken client would send it, and the structured refusal it must get.
//
// The body (raw_body, or body_b64 for bytes that are not UTF-8), the
// subject's project token and header values may hold placeholders:
//
//	{{ID}}      the case's request id, hostile-NNN (also its Nats-Msg-Id)
//	{{ROOT}}    a directory inside the worker's roots holding: escape -> /etc,
//	            escape-rel -> ../../../../../../../../etc, loop -> loop,
//	            ws/ (an empty directory), file.txt, and prod-evil/ whose
//	            compose.yml and evil.yml are symlinks to /etc/passwd
//	{{SAMPLE}}  the production directory of the configured sample project po
//	{{TOKEN}}   the confirmation token of the last setup step that returned one
//	{{NOW}}     the current Unix time in seconds (for Berth-Timestamp)
//	any key of "repeat": the string s repeated n times
//
// Values substituted into raw_body (paths, tokens) are JSON-escaped;
// repeated strings are inserted as they are, so they can build raw syntax.
type hostileCase struct {
	Name           string            `json:"name"`
	SubjectProject string            `json:"subject_project"`
	Action         string            `json:"action"`
	RawBody        *string           `json:"raw_body,omitempty"`
	BodyB64        string            `json:"body_b64,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	// Sign signs the case correctly with the worker's secret (in the
	// "signing" worker), for SignSubject when set (default: the case's
	// own subject); Replay first sends the same signed message once under
	// another Nats-Msg-Id, so the case itself is the replay.
	Sign        bool                     `json:"sign,omitempty"`
	SignSubject string                   `json:"sign_subject,omitempty"`
	Replay      bool                     `json:"replay,omitempty"`
	Repeat      map[string]hostileRepeat `json:"repeat,omitempty"`
	Setup       []hostileSetup           `json:"setup,omitempty"`
	ExpectCode  string                   `json:"expect_code"`
	ExpectInMsg string                   `json:"expect_in_message,omitempty"`
	// ExpectNoResult is for a subject no result can be published for
	// (an empty project token): the worker must stay silent, and serve on.
	ExpectNoResult bool `json:"expect_no_result,omitempty"`
	// ExpectRequestID is the request id the result must carry: "{{ID}}"
	// when empty, "*" for any (a Nats-Msg-Id the worker cannot use).
	ExpectRequestID string `json:"expect_request_id,omitempty"`
	// Worker says which worker the case runs against: "" for the default
	// one, where every user is an admin (as in development mode); "roles"
	// for one restarted with --admins test:admin, where project po grants
	// test:vera viewer, test:otto operator and test:ada admin.
	Worker string `json:"worker,omitempty"`
	// Needs names what the case waits for: "signing", or "fix:<what is
	// wrong>" for a bug the corpus found. Such cases are skipped unless
	// BERTH_HOSTILE_NEEDS lists the part before ':' (signing,fix).
	Needs string `json:"needs"`
	Note  string `json:"note,omitempty"`

	file string
	id   string
}

type hostileRepeat struct {
	S string `json:"s"`
	N int    `json:"n"`
}

// hostileSetup is a well-formed command sent before the case, as user on
// the case's project (or project), to create state the case abuses: a
// pending confirmation whose token becomes {{TOKEN}}, a done request, a
// second project. Its id and args may hold {{ID}}, {{ROOT}} and {{SAMPLE}}.
type hostileSetup struct {
	Action  string          `json:"action"`
	User    string          `json:"user"`
	ID      string          `json:"id,omitempty"`
	Project string          `json:"project,omitempty"`
	Args    json.RawMessage `json:"args,omitempty"`
}

func loadHostileCorpus(t *testing.T) []*hostileCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(hostileDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	if len(files) == 0 {
		t.Fatalf("no corpus files in %s", hostileDir)
	}
	var cases []*hostileCase
	seen := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := &hostileCase{file: filepath.Base(f)}
		if err := events.DecodeStrict(data, c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		num, _, ok := strings.Cut(c.file, "-")
		if !ok || num == "" || strings.Trim(num, "0123456789") != "" {
			t.Fatalf("%s: the name must be NNN-name.json", c.file)
		}
		c.id = "hostile-" + num
		if other, dup := seen[c.id]; dup {
			t.Fatalf("%s and %s have the same number", other, c.file)
		}
		seen[c.id] = c.file
		switch {
		case c.Name == "" || c.Action == "":
			t.Fatalf("%s: name and action are required", c.file)
		case c.SubjectProject == "" && !c.ExpectNoResult:
			t.Fatalf("%s: subject_project is required", c.file)
		case (c.RawBody == nil) == (c.BodyB64 == ""):
			t.Fatalf("%s: give exactly one of raw_body and body_b64", c.file)
		case c.ExpectNoResult && c.ExpectCode != "":
			t.Fatalf("%s: expect_no_result excludes expect_code", c.file)
		case !c.ExpectNoResult && !slices.Contains(events.Codes(), events.Code(c.ExpectCode)):
			t.Fatalf("%s: expect_code %q is not an error code", c.file, c.ExpectCode)
		case c.Worker != "" && c.Worker != "roles" && c.Worker != "signing":
			t.Fatalf("%s: worker %q is not known (\"\", \"roles\" or \"signing\")", c.file, c.Worker)
		}
		if c.BodyB64 != "" {
			if _, err := base64.StdEncoding.DecodeString(c.BodyB64); err != nil {
				t.Fatalf("%s: body_b64: %v", c.file, err)
			}
		}
		for k, r := range c.Repeat {
			if !strings.HasPrefix(k, "{{") || !strings.HasSuffix(k, "}}") || r.N < 1 || r.N > 1_000_000 || r.S == "" {
				t.Fatalf("%s: repeat %q must be {{NAME}} with s non-empty and 1 <= n <= 1000000", c.file, k)
			}
		}
		cases = append(cases, c)
	}
	return cases
}

// TestHostileCorpusWellFormed checks the corpus files alone (no services).
func TestHostileCorpusWellFormed(t *testing.T) {
	cases := loadHostileCorpus(t)
	runnable := 0
	for _, c := range cases {
		if c.Needs == "" {
			runnable++
		}
	}
	if len(cases) < 40 || runnable < 40 {
		t.Fatalf("the corpus has %d cases, %d runnable now; want at least 40 of each", len(cases), runnable)
	}
}

// hostileEnv is what the placeholders stand for.
type hostileEnv struct {
	root, sample string
}

func (c *hostileCase) expand(s string, env hostileEnv, token string, jsonEscape bool) string {
	esc := func(v string) string {
		if !jsonEscape {
			return v
		}
		b, _ := json.Marshal(v)
		return string(b[1 : len(b)-1])
	}
	for k, r := range c.Repeat {
		s = strings.ReplaceAll(s, k, strings.Repeat(r.S, r.N))
	}
	return strings.NewReplacer(
		"{{ID}}", esc(c.id),
		"{{ROOT}}", esc(env.root),
		"{{SAMPLE}}", esc(env.sample),
		"{{TOKEN}}", esc(token),
		"{{NOW}}", strconv.FormatInt(time.Now().Unix(), 10),
	).Replace(s)
}

func (c *hostileCase) body(env hostileEnv, token string) []byte {
	if c.BodyB64 != "" {
		b, _ := base64.StdEncoding.DecodeString(c.BodyB64)
		return b
	}
	return []byte(c.expand(*c.RawBody, env, token, true))
}

// skipReason says why a case does not run now, or "".
func (c *hostileCase) skipReason() string {
	if c.Needs == "" {
		return ""
	}
	kind, _, _ := strings.Cut(c.Needs, ":")
	for _, enabled := range strings.Split(os.Getenv("BERTH_HOSTILE_NEEDS"), ",") {
		if strings.TrimSpace(enabled) == kind {
			return ""
		}
	}
	return "needs " + c.Needs
}

// prepareHostileRoot lays out the directory {{ROOT}} names.
func prepareHostileRoot(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("/etc", filepath.Join(dir, "escape")))
	must(os.Symlink(strings.Repeat("../", 8)+"etc", filepath.Join(dir, "escape-rel")))
	must(os.Symlink("loop", filepath.Join(dir, "loop")))
	must(os.Mkdir(filepath.Join(dir, "ws"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "file.txt"), []byte("not a directory\n"), 0o644))
	// A production directory of its own for the cases that configure a
	// second project (one directory belongs to one project).
	must(os.Mkdir(filepath.Join(dir, "pc-prod"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "pc-prod", "compose.yml"), []byte("services:\n  app:\n    image: pc-app:latest\n"), 0o644))
	must(os.Mkdir(filepath.Join(dir, "prod-evil"), 0o755))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "prod-evil", "compose.yml")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "prod-evil", "evil.yml")))
}

// hostileTreeHash hashes a directory tree: every entry's path, type, mode, size,
// modification time, content and symlink target. Symlinks are not followed.
func hostileTreeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%q %v %d %d\n", rel, info.Mode(), info.Size(), info.ModTime().UnixNano())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "-> %q\n", target)
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			h.Write(sum[:])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("hash %s: %v", dir, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hostileDockerState describes the sample's containers: id, name, state,
// start time and restart count of each service.
func hostileDockerState(t *testing.T, h *harness, sample *testenv.Sample) string {
	t.Helper()
	res, _ := h.send("po", events.ActionStatus, events.Command{User: "test:admin", Args: args(t, map[string]any{"refresh": true})})
	mustOK(t, res)
	st := decodeData[handlers.StatusReport](t, res)
	var b strings.Builder
	for _, s := range st.Services {
		started := "-"
		if s.StartedAt != nil {
			started = s.StartedAt.UTC().Format(time.RFC3339Nano)
		}
		fmt.Fprintf(&b, "%s id=%s container=%s state=%s started=%s restarts=%d\n",
			s.Service, sample.ContainerID(t, s.Service), s.Container, s.State, started, s.RestartCount)
	}
	return b.String()
}

// hostileResult waits for the first result event on sub.
func hostileResult(sub *nats.Subscription, timeout time.Duration) (*events.Event, error) {
	ev, _, err := hostileResultOn(sub, timeout)
	return ev, err
}

// hostileResultOn is hostileResult, with the subject the result came on.
func hostileResultOn(sub *nats.Subscription, timeout time.Duration) (*events.Event, string, error) {
	deadline := time.Now().Add(timeout)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return nil, "", fmt.Errorf("no result within %v: %w", timeout, err)
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return nil, "", fmt.Errorf("undecodable event on %s: %v: %q", m.Subject, err, m.Data)
		}
		if ev.Kind == events.KindResult {
			return &ev, m.Subject, nil
		}
	}
}

// hostilePublish publishes a known action through JetStream, as a bot
// does. A subject no stream captures (an unknown action) goes out on core
// NATS, where the worker's catch-all subscription answers it: a JetStream
// publish would wait for a PubAck that never comes, since that
// subscription is a responder. A known action that no stream takes
// falls back to core NATS too. It says which way it used.
func hostilePublish(h *harness, msg *nats.Msg) (string, error) {
	if _, action, err := h.subjects.ParseCommand(msg.Subject); err != nil || !events.IsKnownAction(action) {
		if err := h.nc.PublishMsg(msg); err != nil {
			return "core", err
		}
		return "core", h.nc.Flush()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := h.js.PublishMsg(ctx, msg)
	if err == nil {
		return "jetstream", nil
	}
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
		return "jetstream", err
	}
	if err := h.nc.PublishMsg(msg); err != nil {
		return "core", err
	}
	return "core", h.nc.Flush()
}

// hostileCommand sends a well-formed command and waits for its result,
// failing t (not the harness's test) when there is none.
func hostileCommand(t *testing.T, h *harness, project, action string, cmd events.Command) *events.Event {
	t.Helper()
	if cmd.ID == "" {
		cmd.ID = "probe-" + hostileRandom(t)
	}
	sub, err := h.nc.SubscribeSync(h.subjects.Event(project, cmd.User, cmd.ID, events.KindResult))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(cmd)
	msg := &nats.Msg{Subject: h.subjects.Command(project, action), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, cmd.ID)
	h.sign(msg)
	if _, err := hostilePublish(h, msg); err != nil {
		t.Fatalf("publish %s: %v", msg.Subject, err)
	}
	res, err := hostileResult(sub, time.Minute)
	if err != nil {
		t.Fatalf("%s %s: %v", project, action, err)
	}
	return res
}

func hostileRandom(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestHostileCorpus sends every case of testdata/hostile to a real worker
// (real NATS, Redis, Docker, with the sample app configured as po) and
// checks that each gets its structured refusal with a hint, that the worker
// keeps serving after each, and that neither production's files nor the
// running containers changed.
func TestHostileCorpus(t *testing.T) {
	cases := loadHostileCorpus(t)
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	sample := configure(t, h, "po")
	env := hostileEnv{root: t.TempDir(), sample: sample.Dir}
	prepareHostileRoot(t, env.root)

	prodBefore, rootBefore := hostileTreeHash(t, sample.Dir), hostileTreeHash(t, env.root)
	dockerBefore := hostileDockerState(t, h, sample)

	passed, skipped, failed := 0, 0, 0
	var failures []string
	run := func(worker string) {
		for _, c := range cases {
			if c.Worker != worker {
				continue
			}
			ran := false
			ok := t.Run(strings.TrimSuffix(c.file, ".json"), func(t *testing.T) {
				ran = true
				if why := c.skipReason(); why != "" {
					t.Skip(why)
				}
				runHostileCase(t, h, c, env)
			})
			switch {
			case !ran: // filtered out by -run
			case !ok:
				failed++
				failures = append(failures, c.file)
			case c.skipReason() != "":
				skipped++
			default:
				passed++
			}
		}
	}
	run("")

	// The same worker with roles: only test:admin is a global admin, and
	// po names a viewer, an operator and a project admin.
	h.stop()
	h.cfg.Admins = []string{"test:admin"}
	h.start()
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": sample.Dir, "production": sample.Dir, "compose_project": sample.Project, "strategy": "symlink",
		"roles": map[string]string{"test:vera": "viewer", "test:otto": "operator", "test:ada": "admin"},
	})})
	mustOK(t, res)
	run("roles")

	// The same worker requiring signed commands.
	h.stop()
	h.cfg.Admins = []string{"*"}
	h.cfg.SignSecrets = [][]byte{[]byte("hostile-corpus-secret-0123456789")}
	h.cfg.SignWindow = 5 * time.Minute
	h.start()
	run("signing")

	if got := hostileTreeHash(t, sample.Dir); got != prodBefore {
		t.Errorf("the production directory %s changed during the corpus", sample.Dir)
	}
	if got := hostileTreeHash(t, env.root); got != rootBefore {
		t.Errorf("the hostile root %s changed during the corpus", env.root)
	}
	if got := hostileDockerState(t, h, sample); got != dockerBefore {
		t.Errorf("the containers changed during the corpus:\nbefore:\n%safter:\n%s", dockerBefore, got)
	}
	summary := fmt.Sprintf("hostile corpus: %d cases, %d passed, %d skipped", len(cases), passed, skipped)
	if failed > 0 {
		summary += fmt.Sprintf(", %d failed: %s", failed, strings.Join(failures, ", "))
	}
	t.Log(summary)
}

func runHostileCase(t *testing.T, h *harness, c *hostileCase, env hostileEnv) {
	project := c.expand(c.SubjectProject, env, "", false)
	token := ""
	for i, s := range c.Setup {
		p := project
		if s.Project != "" {
			p = s.Project
		}
		var a json.RawMessage
		if len(s.Args) > 0 {
			a = json.RawMessage(c.expand(string(s.Args), env, "", true))
		}
		res := hostileCommand(t, h, p, s.Action, events.Command{ID: c.expand(s.ID, env, "", false), User: s.User, Args: a})
		if res.Error != nil && res.Error.Code != events.CodeConfirmationRequired {
			t.Fatalf("setup step %d (%s as %s): %+v", i+1, s.Action, s.User, res.Error)
		}
		var cd handlers.ConfirmationData
		if json.Unmarshal(res.Data, &cd) == nil && cd.Token != "" {
			token = cd.Token
		}
	}

	body := c.body(env, token)
	msg := &nats.Msg{Subject: h.subjects.Command(project, c.Action), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, c.id)
	for k, v := range c.Headers {
		msg.Header.Set(k, c.expand(v, env, token, false))
	}
	if c.Sign {
		subject := msg.Subject
		if c.SignSubject != "" {
			subject = c.SignSubject
		}
		ts, sig := auth.Sign(h.cfg.SignSecrets[0], time.Now(), subject, body)
		msg.Header.Set(auth.HeaderTimestamp, ts)
		msg.Header.Set(auth.HeaderSignature, sig)
	}
	if c.Replay {
		first := &nats.Msg{Subject: msg.Subject, Data: body, Header: nats.Header{}}
		for k, v := range msg.Header {
			first.Header[k] = v
		}
		first.Header.Set(jetstream.MsgIDHeader, c.id+"-first")
		orig, err := h.nc.SubscribeSync(h.subjects.AllEvents())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hostilePublish(h, first); err != nil {
			t.Fatal(err)
		}
		if res, err := hostileResult(orig, time.Minute); err != nil || res.Error != nil {
			t.Fatalf("the original signed message was not served: %v %+v", err, res)
		}
		_ = orig.Unsubscribe()
	}
	// Every event: the result may come under an id the case cannot know
	// (a Nats-Msg-Id the worker cannot use), or a project token no
	// subscription can name. Cases run one at a time.
	sub, err := h.nc.SubscribeSync(h.subjects.AllEvents())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	via, err := hostilePublish(h, msg)
	if err != nil {
		t.Fatalf("publish %d bytes on %s (%s): %v", len(body), msg.Subject, via, err)
	}
	if c.ExpectNoResult {
		if res, err := hostileResult(sub, 3*time.Second); err == nil {
			t.Errorf("a result came for a subject that cannot be answered: %s", hostileDescribe(res))
		}
		hostileAlive(t, h)
		return
	}
	res, subject, err := hostileResultOn(sub, time.Minute)
	if err != nil {
		t.Fatalf("%s (sent via %s): %v", c.Name, via, err)
	}
	// A message whose sender cannot be trusted (undecodable, unsigned or
	// forged) is refused apart, under its stream sequence: never under the
	// user and id it claims.
	refusedApart := strings.Contains(subject, "."+events.RefusedTokenScope+".")
	t.Logf("%s via %s in %v: %s", c.Name, via, time.Since(began).Round(time.Millisecond), hostileDescribe(res))

	wantID := c.expand(c.ExpectRequestID, env, token, false)
	if wantID == "" {
		wantID = c.id
	}
	switch {
	case res.OK == nil || *res.OK:
		t.Errorf("result is ok, want %s; data %s", c.ExpectCode, hostileTruncate(res.Data))
	case res.Error == nil:
		t.Errorf("failed result without an error")
	default:
		if string(res.Error.Code) != c.ExpectCode {
			t.Errorf("error code %s, want %s: %s", res.Error.Code, c.ExpectCode, res.Error.Message)
		}
		if c.ExpectInMsg != "" && !strings.Contains(res.Error.Message, c.ExpectInMsg) {
			t.Errorf("error message %q does not contain %q", res.Error.Message, c.ExpectInMsg)
		}
		if strings.TrimSpace(res.Error.Hint) == "" {
			t.Errorf("error %s has no hint", res.Error.Code)
		}
	}
	switch {
	case refusedApart && (!refusedRef.MatchString(res.RequestID) || res.User != ""):
		t.Errorf("a refusal apart under request id %q, user %q; want its message's reference and no user", res.RequestID, res.User)
	case refusedApart && c.ExpectRequestID != "" && c.ExpectRequestID != "*":
		t.Errorf("refused apart (%s), but the case expects the request id %q", subject, wantID)
	case !refusedApart && wantID != "*" && res.RequestID != wantID:
		t.Errorf("result under request id %q, want %q", res.RequestID, wantID)
	}
	if res.Project != project || res.Action != c.Action {
		t.Errorf("result for %s/%s, want %s/%s", res.Project, res.Action, project, c.Action)
	}

	hostileAlive(t, h)
}

// refusedRef is the request id of a refusal published apart: the command
// message's stream sequence, or a random id for one no stream keeps.
var refusedRef = regexp.MustCompile(`^(seq[0-9]+|r[0-9a-f]{32})$`)

// hostileAlive checks that the worker still answers a history command.
func hostileAlive(t *testing.T, h *harness) {
	t.Helper()
	alive := hostileCommand(t, h, "po", events.ActionHistory, events.Command{User: "test:admin", Args: json.RawMessage(`{"limit":1}`)})
	if alive.OK == nil || !*alive.OK {
		t.Fatalf("the worker no longer answers history after this case: %+v", alive.Error)
	}
}

func hostileDescribe(ev *events.Event) string {
	if ev.Error == nil {
		return fmt.Sprintf("ok=%v id=%s", ev.OK != nil && *ev.OK, ev.RequestID)
	}
	return fmt.Sprintf("%s id=%s: %s (%s)", ev.Error.Code, ev.RequestID, hostileTruncate([]byte(ev.Error.Message)), ev.Error.Hint)
}

func hostileTruncate(b []byte) string {
	const n = 300
	b = bytes.ToValidUTF8(b, []byte("?"))
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + fmt.Sprintf("…(%d bytes)", len(b))
}
