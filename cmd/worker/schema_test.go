package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
)

// schemaDir holds the protocol's JSON Schemas (draft 2020-12).
var schemaDir = filepath.Join("..", "..", "docs", "schemas")

// schemaSet is every schema of docs/schemas, compiled, by path relative to
// schemaDir ("event.json", "args/logs.json").
type schemaSet map[string]*jsonschema.Schema

var (
	schemasOnce sync.Once
	schemas     schemaSet
	schemasErr  error
)

// loadSchemas compiles docs/schemas. Each file is registered under its
// $id, so the references between them resolve without a network; formats
// (date-time) are asserted, not only annotated.
func loadSchemas(t *testing.T) schemaSet {
	t.Helper()
	schemasOnce.Do(func() { schemas, schemasErr = compileSchemas() })
	if schemasErr != nil {
		t.Fatal(schemasErr)
	}
	return schemas
}

func compileSchemas() (schemaSet, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	ids := map[string]string{}
	err := filepath.WalkDir(schemaDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		doc, err := jsonschema.UnmarshalJSON(f)
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		rel, _ := filepath.Rel(schemaDir, path)
		rel = filepath.ToSlash(rel)
		id, _ := doc.(map[string]any)["$id"].(string)
		if !strings.HasSuffix(id, "/docs/schemas/"+rel) {
			return fmt.Errorf("%s: $id %q does not end with /docs/schemas/%s", path, id, rel)
		}
		ids[rel] = id
		return c.AddResource(id, doc)
	})
	if err != nil {
		return nil, err
	}
	set := schemaSet{}
	for rel, id := range ids {
		s, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %v", rel, err)
		}
		set[rel] = s
	}
	return set, nil
}

// validate checks the JSON document raw against schema rel.
func (s schemaSet) validate(rel string, raw []byte) error {
	sch, ok := s[rel]
	if !ok {
		return fmt.Errorf("no schema %s", rel)
	}
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(string(raw)))
	if err != nil {
		return err
	}
	return sch.Validate(v)
}

// captured is one message the worker published.
type captured struct {
	subject string
	data    []byte
}

// capture records every message on subject.
func capture(t *testing.T, nc *nats.Conn, subject string) func() []captured {
	t.Helper()
	var mu sync.Mutex
	var got []captured
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		mu.Lock()
		got = append(got, captured{m.Subject, append([]byte(nil), m.Data...)})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() []captured {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestSchemaWorkerMessages validates the real events and audit records a
// worker publishes, for the commands a bot sends in a day, against
// docs/schemas; and the commands themselves against the command and
// args schemas.
func TestSchemaWorkerMessages(t *testing.T) {
	sch := loadSchemas(t)
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	evs := capture(t, h.nc, h.subjects.AllEvents())
	audits := capture(t, h.nc, h.subjects.Prefix+".audit.>")

	var sent []events.Command
	var actions []string
	send := func(project, action string, cmd events.Command) events.Event {
		t.Helper()
		if cmd.User == "" {
			cmd.User = "test:alice"
		}
		res, _ := h.send(project, action, cmd)
		sent = append(sent, cmd)
		actions = append(actions, action)
		return res
	}

	// A project with a workspace to deploy from.
	d := setupDeployable(t, h, "po", nil)
	send("po", events.ActionConfigGet, events.Command{})
	mustOK(t, send("po", events.ActionStatus, events.Command{}))
	mustOK(t, send("po", events.ActionStatus, events.Command{})) // cached
	mustOK(t, send("po", events.ActionStatus, events.Command{Args: args(t, map[string]any{"refresh": true})}))
	mustOK(t, send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"tail": 5, "timestamps": true, "service": "web"})}))
	mustOK(t, send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"tail": 1, "follow_s": 2, "service": "worker"})}))
	mustOK(t, send("po", events.ActionHistory, events.Command{Args: args(t, map[string]any{"limit": 5})}))
	// Refused: bad args, an unknown project.
	if res := send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"tail": 20000})}); errCode(res) != "bad_request" {
		t.Fatalf("tail 20000: %+v", res)
	}
	if res := send("nope", events.ActionStatus, events.Command{}); errCode(res) != "not_found" {
		t.Fatalf("unknown project: %+v", res)
	}
	// A body that is not a command: its result has no user.
	if res, _ := h.sendRaw("po", events.ActionStatus, "bad-body-1", []byte(`{"user":"t:1","confirmm":"yes"}`), time.Minute); errCode(res) != "bad_request" {
		t.Fatalf("unknown field: %+v", res)
	}
	// An unknown action, answered from the core subscription.
	unknown := h.subscribe("po", "unknown-1")
	if err := h.nc.Publish(h.subjects.Command("po", "explode"), []byte(`{"id":"unknown-1","user":"t:1"}`)); err != nil {
		t.Fatal(err)
	}
	if res, _ := unknown.result(t, time.Minute); errCode(res) != "bad_request" {
		t.Fatalf("unknown action: %+v", res)
	}

	// A deploy: plan (confirm event, confirmation_required), then confirmed
	// (progress of every step, with done/total).
	d.write(t, "version.txt", "2.0.0\n")
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	sent = append(sent, events.Command{User: "test:alice"})
	actions = append(actions, events.ActionDeploy)
	res, _ := confirm(t, h, "po", events.ActionDeploy, "test:alice", cd.Token)
	sent = append(sent, events.Command{User: "test:alice", Confirm: cd.Token})
	actions = append(actions, events.ActionDeploy)
	mustOK(t, res)
	// A restart plan, left unconfirmed.
	plan(t, h, "po", events.ActionRestart, "test:alice", map[string]any{"services": []string{"worker"}})
	sent = append(sent, events.Command{User: "test:alice", Args: args(t, map[string]any{"services": []string{"worker"}})})
	actions = append(actions, events.ActionRestart)

	// The commands this test sent (valid ones) fit the command schema and
	// their action's args schema.
	for i, cmd := range sent {
		body, _ := json.Marshal(cmd)
		if err := sch.validate("command.json", body); err != nil {
			t.Errorf("command %s %s: %v", actions[i], body, err)
		}
		if len(cmd.Args) > 0 && !(actions[i] == events.ActionLogs && strings.Contains(string(cmd.Args), "20000")) {
			if err := sch.validate("args/"+actions[i]+".json", cmd.Args); err != nil {
				t.Errorf("args of %s %s: %v", actions[i], cmd.Args, err)
			}
		}
	}
	if err := sch.validate("args/logs.json", []byte(`{"tail":20000}`)); err == nil {
		t.Errorf("args/logs.json accepts tail 20000, which the worker refuses")
	}

	// Every audit record is published after its result: wait for them.
	results := 0
	for _, m := range evs() {
		if strings.HasSuffix(m.subject, ".result") {
			results++
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(audits()) < results && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}

	kinds := map[string]int{}
	steps := map[string]bool{}
	for _, m := range evs() {
		if err := sch.validate("event.json", m.data); err != nil {
			t.Errorf("event on %s does not fit event.json:\n%s\n%v", m.subject, m.data, err)
		}
		var ev events.Event
		if err := json.Unmarshal(m.data, &ev); err != nil {
			t.Fatal(err)
		}
		kinds[string(ev.Kind)]++
		if ev.Kind == events.KindProgress && ev.Total != nil {
			steps[ev.Step] = true
		}
		if ev.Kind == events.KindResult && ev.Error != nil {
			raw, _ := json.Marshal(ev.Error)
			if err := sch.validate("error.json", raw); err != nil {
				t.Errorf("error %s: %v", raw, err)
			}
		}
	}
	for _, k := range []string{"accepted", "progress", "log", "confirm", "result"} {
		if kinds[k] == 0 {
			t.Errorf("no %s event was captured: %v", k, kinds)
		}
	}
	if !steps[events.StepVerify] {
		t.Errorf("no verify progress with done/total was captured: %v", steps)
	}
	got := audits()
	if len(got) < results {
		t.Errorf("%d audit records for %d results", len(got), results)
	}
	for _, m := range got {
		if err := sch.validate("audit.json", m.data); err != nil {
			t.Errorf("audit record on %s does not fit audit.json:\n%s\n%v", m.subject, m.data, err)
		}
	}
	t.Logf("validated %d events (%v) and %d audit records", len(evs()), kinds, len(got))
}

// TestSchemaRejects checks that the schemas are strict: unknown fields,
// fields of another kind, missing fields and unknown codes fail.
func TestSchemaRejects(t *testing.T) {
	sch := loadSchemas(t)
	ok := map[string]string{
		"command.json": `{"id":"r1","user":"telegram:42","args":{"tail":5},"confirm":"yes","reply_to":"_INBOX.abc"}`,
		"event.json": `{"request_id":"r1","project":"po","action":"status","kind":"result","seq":2,"ts":"2026-11-27T07:05:27.41Z",` +
			`"user":"cli:bob","ok":false,"duration_ms":3,"error":{"code":"not_found","message":"no project po","hint":"config.set it"}}`,
		"audit.json": `{"request_id":"r1","project":"po","action":"deploy","user":"cli:bob","confirmer":"cli:ann","ts":"2026-11-27T07:05:27Z",` +
			`"ok":true,"plan_digest":"abc","duration_ms":3,"delivery":1,"signed":true}`,
		"args/logs.json":   `{"service":"web","tail":100,"since":"10m","timestamps":true,"grep":"error","follow_s":30}`,
		"data/logs.json":   `{"service":"web","container":"po-web-1","lines":[{"stream":"stderr","line":"x"}],"count":1}`,
		"data/status.json": `{"project":"po","compose_project":"po","services":[],"summary":{"containers":0,"running":0,"healthy":0,"unhealthy":0,"starting":0,"stopped":0,"missing":0},"taken_at":"2026-11-27T07:05:27Z","cached":false}`,
	}
	for rel, doc := range ok {
		if err := sch.validate(rel, []byte(doc)); err != nil {
			t.Fatalf("%s rejects a valid document %s: %v", rel, doc, err)
		}
		// The negative check: one unknown field more, and it fails.
		bad := strings.TrimSuffix(doc, "}") + `,"surprise":1}`
		if err := sch.validate(rel, []byte(bad)); err == nil {
			t.Errorf("%s accepts an unknown field: %s", rel, bad)
		}
	}
	for name, c := range map[string]struct{ rel, doc string }{
		"command without user":    {"command.json", `{"id":"r1"}`},
		"command id with a dot":   {"command.json", `{"user":"a:1","id":"a.b"}`},
		"user with spaces around": {"command.json", `{"user":" a:1"}`},
		"reply_to wildcard":       {"command.json", `{"user":"a:1","reply_to":"x.>"}`},
		"args not an object":      {"command.json", `{"user":"a:1","args":[1]}`},
		"accepted with a token": {"event.json", `{"request_id":"r1","project":"po","action":"status","kind":"accepted","seq":1,` +
			`"ts":"2026-11-27T07:05:27Z","user":"a:1","token":"tttttttttttttttttttttttttttttttttttt"}`},
		"progress without step": {"event.json", `{"request_id":"r1","project":"po","action":"deploy","kind":"progress","seq":2,"ts":"2026-11-27T07:05:27Z","user":"a:1","message":"x"}`},
		"failed result without error": {"event.json", `{"request_id":"r1","project":"po","action":"status","kind":"result","seq":2,` +
			`"ts":"2026-11-27T07:05:27Z","user":"a:1","ok":false,"duration_ms":1}`},
		"unknown error code": {"event.json", `{"request_id":"r1","project":"po","action":"status","kind":"result","seq":2,` +
			`"ts":"2026-11-27T07:05:27Z","user":"a:1","ok":false,"duration_ms":1,"error":{"code":"oops","message":"x"}}`},
		"status data with an unknown service field": {"event.json", `{"request_id":"r1","project":"po","action":"status","kind":"result","seq":2,` +
			`"ts":"2026-11-27T07:05:27Z","user":"a:1","ok":true,"duration_ms":1,"data":{"project":"po","compose_project":"po",` +
			`"services":[{"service":"web","state":"running","uptime_s":1,"restart_count":0,"exit_code":0,"cpu":3}],` +
			`"summary":{"containers":1,"running":1,"healthy":0,"unhealthy":0,"starting":0,"stopped":0,"missing":0},"taken_at":"2026-11-27T07:05:27Z","cached":false}}`},
		"bad timestamp":             {"event.json", `{"request_id":"r1","project":"po","action":"status","kind":"accepted","seq":1,"ts":"yesterday","user":"a:1"}`},
		"seq 0":                     {"event.json", `{"request_id":"r1","project":"po","action":"status","kind":"accepted","seq":0,"ts":"2026-11-27T07:05:27Z","user":"a:1"}`},
		"log stream":                {"event.json", `{"request_id":"r1","project":"po","action":"logs","kind":"log","seq":2,"ts":"2026-11-27T07:05:27Z","user":"a:1","lines":[{"stream":"stdin","line":"x"}]}`},
		"audit not ok without code": {"audit.json", `{"request_id":"r1","project":"po","action":"deploy","user":"a:1","ts":"2026-11-27T07:05:27Z","ok":false,"duration_ms":3,"delivery":1,"signed":false}`},
		"logs tail 0":               {"args/logs.json", `{"tail":0}`},
		"config.get args":           {"args/config.get.json", `{"x":1}`},
		"unknown strategy":          {"args/config.set.json", `{"workspace":"/a","production":"/b","strategy":"rsync"}`},
		"relative path":             {"args/config.set.json", `{"workspace":"a","production":"/b"}`},
		"bad role":                  {"args/config.set.json", `{"workspace":"/a","production":"/b","roles":{"a:1":"root"}}`},
	} {
		if err := sch.validate(c.rel, []byte(c.doc)); err == nil {
			t.Errorf("%s: %s accepts %s", name, c.rel, c.doc)
		}
	}
}

// jsonNames returns the JSON field names of struct type t.
func jsonNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// schemaProps returns the property names of the object at pointer (a
// JSON pointer into the file, "" for its root) of schema file rel.
func schemaProps(t *testing.T, rel, pointer string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(schemaDir, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	var node any
	if err := json.Unmarshal(b, &node); err != nil {
		t.Fatal(err)
	}
	for _, tok := range strings.Split(strings.Trim(pointer, "/"), "/") {
		if tok == "" {
			continue
		}
		node = node.(map[string]any)[tok]
	}
	props, _ := node.(map[string]any)["properties"].(map[string]any)
	var names []string
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// TestSchemaMatchesGoTypes keeps the schemas in step with the Go types the
// worker encodes and decodes: a field added to one and not the other fails.
func TestSchemaMatchesGoTypes(t *testing.T) {
	loadSchemas(t) // they compile
	for _, c := range []struct {
		rel, pointer string
		typ          any
	}{
		{"command.json", "", events.Command{}},
		{"event.json", "", events.Event{}},
		{"event.json", "/$defs/log_line", events.LogLine{}},
		{"error.json", "", events.Error{}},
		{"audit.json", "", events.AuditRecord{}},
		{"args/config.set.json", "", handlers.ConfigSetArgs{}},
		{"args/config.get.json", "", struct{}{}},
		{"args/config.delete.json", "", struct{}{}},
		{"args/status.json", "", handlers.StatusArgs{}},
		{"args/logs.json", "", handlers.LogsArgs{}},
		{"args/history.json", "", handlers.HistoryArgs{}},
		{"args/restart.json", "", handlers.RestartArgs{}},
		{"args/deploy.json", "", handlers.DeployArgs{}},
		{"args/rollback.json", "", handlers.RollbackArgs{}},
		{"args/start.json", "", handlers.StartArgs{}},
		{"args/stop.json", "", handlers.StopArgs{}},
		{"args/releases.json", "", struct{}{}},
		{"data/status.json", "", handlers.StatusReport{}},
		{"data/status.json", "/$defs/service", handlers.ServiceStatus{}},
		{"data/status.json", "/properties/summary", handlers.StatusSummary{}},
		{"data/status.json", "/properties/behind", handlers.Behind{}},
		{"data/status.json", "/properties/release", handlers.LiveRelease{}},
		{"data/logs.json", "", handlers.LogsResult{}},
		{"data/history.json", "/properties/entries/items", berth.HistoryEntry{}},
		{"data/confirmation.json", "", handlers.ConfirmationData{}},
	} {
		got := schemaProps(t, c.rel, c.pointer)
		want := jsonNames(reflect.TypeOf(c.typ))
		if !slices.Equal(got, want) {
			t.Errorf("%s%s has properties %v; the Go type %T has fields %v", c.rel, c.pointer, got, c.typ, want)
		}
	}
	for _, a := range events.Actions() {
		if _, err := os.Stat(filepath.Join(schemaDir, "args", a+".json")); err != nil {
			t.Errorf("no args schema for action %s", a)
		}
	}
	// The closed set of error codes, in error.json and audit.json.
	var codes []string
	for _, c := range events.Codes() {
		codes = append(codes, string(c))
	}
	for _, rel := range []string{"error.json", "audit.json"} {
		b, _ := os.ReadFile(filepath.Join(schemaDir, rel))
		var doc struct {
			Properties map[string]struct {
				Enum []string `json:"enum"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		key := "code"
		if rel == "audit.json" {
			key = "error_code"
		}
		if got := doc.Properties[key].Enum; !slices.Equal(got, codes) {
			t.Errorf("%s %s enum %v, want events.Codes() %v", rel, key, got, codes)
		}
	}
}
