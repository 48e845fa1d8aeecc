package handlers

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/redact"
)

// logsRecorder is a Reporter that keeps the log events' lines; with err
// set its Log fails, like the reporter of a query (which has no events).
type logsRecorder struct {
	mu    sync.Mutex
	lines []events.LogLine
	err   error
}

func (r *logsRecorder) Progress(string, string, int, int)    {}
func (r *logsRecorder) Confirm(string, time.Time, any) error { return nil }
func (r *logsRecorder) Log(ls []events.LogLine) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.lines = append(r.lines, ls...)
	return nil
}

// The production .env value the log lines of the grep tests leak.
const logsEnvSecret = "Zq81-prodvalue"

// logsGrepService is a Service with the default redaction rules, project
// po whose production directory has a .env, and a running web container
// logging lines.
func logsGrepService(t *testing.T, lines []events.LogLine) (*Service, *fakeEngine) {
	t.Helper()
	root := t.TempDir()
	prod := filepath.Join(root, "prod")
	if err := os.Mkdir(prod, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(prod, ".env"), []byte("APP_ENV=production\nUPSTREAM_KEY="+logsEnvSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, en := newMemStore(), &fakeEngine{lines: lines}
	en.containers = []berth.Container{{ID: "c1", Service: "web", Name: "po-web-1", State: "running"}}
	svc, err := NewService(st, en, Config{Roots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Redactor, err = redact.New(nil, false); err != nil {
		t.Fatal(err)
	}
	p := sampleProject()
	p.Production = prod
	st.projects["po"] = p
	return svc, en
}

// runLogs runs logs with args and rep (nil: a recorder), and returns the
// result and the lines of the log events.
func runLogs(t *testing.T, svc *Service, args string, rep *logsRecorder) (*LogsResult, []events.LogLine, error) {
	t.Helper()
	if rep == nil {
		rep = &logsRecorder{}
	}
	out, err := svc.Logs(context.Background(), &Request{Project: "po", Args: json.RawMessage(args)}, rep)
	if err != nil {
		return nil, nil, err
	}
	return out.(*LogsResult), rep.lines, nil
}

func secretLogLines() []events.LogLine {
	return []events.LogLine{
		{Stream: "stdout", Line: "sampleapp starting mode=web version=1.2.3"},
		{Stream: "stdout", Line: "connecting to postgres://app:s3cretpass@db/app"},
		{Stream: "stdout", Line: "tick 1"},
		{Stream: "stderr", Line: "calling billing with " + logsEnvSecret + " as key"},
		{Stream: "stdout", Line: "tick 2"},
	}
}

// grep matches what the user may see, the redacted line: a pattern that
// is a prefix of a hidden secret matches nothing, in the result (tail
// with grep counts matching lines), when following, and on the query path.
func TestLogsGrepSeesOnlyRedactedText(t *testing.T) {
	hidden := []string{
		`s3cr`, `app:s3`, `s3cretpass`, `:s3c.*@`, `app:[s][3]`, `(?i)S3CRET`,
		`Zq8`, `with Zq81-p`, `Zq81-prodvalue`, `billing with [Z]`,
	}
	visible := map[string]int{ // pattern: matching lines among secretLogLines
		`REDACTED`:                 2,
		`\[REDACTED\]@db/app`:      1,
		`postgres://app:`:          1,
		`billing with \[REDACTED]`: 1,
		`^tick [0-9]+$`:            2,
	}
	modes := []struct {
		name, extra string
		rep         func() *logsRecorder
	}{
		{"tail", ``, nil},
		{"tail 1", `,"tail":1`, nil},
		{"query", ``, func() *logsRecorder {
			return &logsRecorder{err: events.Errorf(events.CodeBadRequest, "a query has no events")}
		}},
		{"follow", `,"follow_s":1`, nil},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			svc, _ := logsGrepService(t, secretLogLines())
			run := func(pattern string) (*LogsResult, []events.LogLine) {
				t.Helper()
				var rep *logsRecorder
				if m.rep != nil {
					rep = m.rep()
				}
				q, _ := json.Marshal(pattern)
				res, evLines, err := runLogs(t, svc, `{"grep":`+string(q)+m.extra+`}`, rep)
				if err != nil {
					t.Fatalf("grep %q: %v", pattern, err)
				}
				return res, evLines
			}
			for _, pattern := range hidden {
				res, evLines := run(pattern)
				if res.Count != 0 || len(res.Lines) != 0 || len(evLines) != 0 {
					t.Errorf("grep %q (a guess at a hidden secret) matched: count %d, lines %q, in events %q",
						pattern, res.Count, res.Lines, evLines)
				}
			}
			for pattern, n := range visible {
				res, evLines := run(pattern)
				got := append(append([]events.LogLine{}, res.Lines...), evLines...)
				if m.extra == `,"tail":1` {
					n = min(n, 1)
				}
				if m.extra == `,"follow_s":1` {
					n *= 2 // the fake engine sends its lines again when followed
				}
				if res.Count != n || len(got) != n {
					t.Errorf("grep %q: count %d, lines %q; want %d", pattern, res.Count, got, n)
				}
				for _, l := range got {
					if strings.Contains(l.Line, "s3cret") || strings.Contains(l.Line, logsEnvSecret) {
						t.Errorf("grep %q returned an unredacted line %q", pattern, l.Line)
					}
				}
			}
		})
	}
}

// grep's compiled program is bounded: a pattern whose repetitions blow it
// up is refused with bad_request, ordinary patterns pass.
func TestLogsGrepComplexityCap(t *testing.T) {
	lines := make([]events.LogLine, 50)
	for i := range lines {
		lines[i] = events.LogLine{Stream: "stdout", Line: "tick " + strconv.Itoa(i)}
		if i%2 == 1 {
			lines[i].Line = "request Timeout: error after 3 retries"
		}
	}
	svc, _ := logsGrepService(t, lines)
	for _, pattern := range []string{
		`(a{1,100}){1,100}`,   // the parser refuses it already (nested repeat count)
		`(?:a?){1000}a{1000}`, // 3002 instructions
		`(\w{1,30}){1,30}(\d{1,30}){1,30}`,
		strings.Repeat(`(?:x{1,30}){1,30}`, 20), // a 340-character pattern
	} {
		q, _ := json.Marshal(pattern)
		_, _, err := runLogs(t, svc, `{"grep":`+string(q)+`}`, nil)
		if events.ErrorCode(err) != events.CodeBadRequest {
			t.Errorf("grep %.60q: got %v, want bad_request", pattern, err)
			continue
		}
		if !strings.Contains(pattern, "100") && !strings.Contains(err.Error(), "too complex") {
			t.Errorf("grep %.60q: %v does not say the pattern is too complex", pattern, err)
		}
		if e := events.AsError(err); e == nil || e.Hint == "" {
			t.Errorf("grep %.60q: no hint in %v", pattern, err)
		} else {
			t.Logf("grep %.40q: %s (hint: %s)", pattern, e.Message, e.Hint)
		}
	}
	for pattern, n := range map[string]int{`error|warn`: 25, `^tick [0-9]+$`: 25, `(?i)timeout`: 25, `\pL+`: 50,
		`(?i)(error|warn|fatal|panic)`: 25, `a{1000}`: 0} {
		q, _ := json.Marshal(pattern)
		res, _, err := runLogs(t, svc, `{"grep":`+string(q)+`}`, nil)
		if err != nil || res.Count != n {
			t.Errorf("grep %q: %+v %v", pattern, res, err)
		} else if tr, _ := logsMeta(t, res); tr {
			t.Errorf("grep %q: truncated", pattern)
		}
	}
}

// A grep scans at most 64 MiB of log text per request: it stops there and
// answers what matched so far, truncated, with a note.
func TestLogsGrepScanCap(t *testing.T) {
	long := strings.Repeat("y", 64<<10-200) // a line of 64 KiB with its prefix
	var lines []events.LogLine
	for i := range 1100 { // 68.75 MiB
		line := "line " + strings.Repeat("0", 6-len(strconv.Itoa(i))) + strconv.Itoa(i) + " " + long
		if i%100 == 0 {
			line = "match " + line
		}
		lines = append(lines, events.LogLine{Stream: "stdout", Line: line})
	}
	svc, _ := logsGrepService(t, lines)
	svc.Config.MaxTail = 2000
	start := time.Now()
	res, evLines, err := runLogs(t, svc, `{"grep":"^match","tail":2000}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scanned in %v", time.Since(start))
	got := append(append([]events.LogLine{}, res.Lines...), evLines...)
	// 64 MiB holds the first 1026 lines: matches 0, 100, …, 1000.
	truncated, note := logsMeta(t, res)
	if !truncated || res.Count != 11 || len(got) != 11 || !strings.HasPrefix(got[10].Line, "match line 001000 ") {
		t.Fatalf("truncated %v, count %d, %d lines; want 11 lines up to line 1000, truncated", truncated, res.Count, len(got))
	}
	if !strings.Contains(note, "64 MiB") || !strings.Contains(note, "since") {
		t.Fatalf("note %q", note)
	}
	t.Logf("note: %s", note)

	// Under the cap nothing is truncated.
	svc, _ = logsGrepService(t, lines[:900])
	res, evLines, err = runLogs(t, svc, `{"grep":"^match","tail":100}`, nil)
	if err != nil || res.Count != 9 || len(res.Lines)+len(evLines) != 9 {
		t.Fatalf("%+v %v", res, err)
	}
	if truncated, note := logsMeta(t, res); truncated || note != "" {
		t.Fatalf("under the cap: truncated %v, note %q", truncated, note)
	}
}

// Following with grep counts toward the same cap: it stops following when
// the cap is reached.
func TestLogsGrepScanCapFollow(t *testing.T) {
	long := strings.Repeat("z", 64<<10-100)
	var lines []events.LogLine
	for i := range 600 { // 37.5 MiB, read twice: once for the tail, once followed
		lines = append(lines, events.LogLine{Stream: "stdout", Line: "match " + strconv.Itoa(i) + " " + long})
	}
	svc, en := logsGrepService(t, lines)
	svc.Config.MaxTail = 1000
	done := make(chan struct{})
	var (
		res *LogsResult
		err error
	)
	go func() {
		defer close(done)
		res, _, err = runLogs(t, svc, `{"grep":"^match","tail":1000,"follow_s":30}`, nil)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("logs did not stop at the cap")
	}
	if err != nil {
		t.Fatal(err)
	}
	truncated, note := logsMeta(t, res)
	if !en.lastLogs.Follow || !truncated || res.Count >= 1200 || res.Count < 1000 || note == "" {
		t.Fatalf("followed %v, truncated %v, count %d, note %q; want about 1026 lines, truncated", en.lastLogs.Follow, truncated, res.Count, note)
	}
}

// A complex pattern scans less: bytes × instructions is bounded too, so
// that a pattern near the instruction cap cannot run for minutes over
// 64 MiB ("[\s\S]{1000}x", 1003 instructions, took 61 s for 4 MiB of
// 16 KiB lines here: some 16 minutes for 64 MiB).
func TestLogsGrepWorkBudget(t *testing.T) {
	// Lines shorter than the pattern's 1000 characters fail fast, so
	// the test itself is quick.
	lines := make([]events.LogLine, 10000) // 2 MiB
	for i := range lines {
		ts := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
		lines[i] = events.LogLine{Stream: "stdout", TS: ts, Line: "x" + strings.Repeat("a", 199)}
	}
	svc, _ := logsGrepService(t, lines)
	res, evLines, err := runLogs(t, svc, `{"grep":"[\\s\\S]{1000}x|^x","tail":10000,"timestamps":true}`, nil) // 1006 instructions
	if err != nil {
		t.Fatal(err)
	}
	// (1 << 30) / 1006 bytes: 1042 KiB, 5336 lines.
	truncated, note := logsMeta(t, res)
	t.Logf("note: %s", note)
	if !truncated || res.Count != 5336 || !strings.Contains(note, "1042 KiB") {
		t.Fatalf("truncated %v, count %d, note %q; want 5336 lines, truncated at 1042 KiB", truncated, res.Count, note)
	}
	// With timestamps, the note says where to go on from.
	got := append(append([]events.LogLine{}, res.Lines...), evLines...)
	if last := lines[5335].TS; len(got) != 5336 || got[5335].TS != last || !strings.Contains(note, "since="+last) {
		t.Fatalf("note %q does not point after line 5335 (%s)", note, last)
	}
}

// logsMeta returns the result's truncated and note, read from its JSON.
func logsMeta(t *testing.T, res *LogsResult) (truncated bool, note string) {
	t.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Truncated bool   `json:"truncated"`
		Note      string `json:"note"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Truncated, m.Note
}
