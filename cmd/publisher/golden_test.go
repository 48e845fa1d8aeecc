package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
)

// update rewrites the golden text files from the golden events.
var update = flag.Bool("update", false, "rewrite testdata/golden/*.txt from the events beside them")

// goldenDir holds events a real worker sent (TestCaptureGolden), and
// the text the publisher prints for them.
const goldenDir = "testdata/golden"

// goldenVariants are the renderings of a golden file, by the suffix of
// their text file: plain lines (not a terminal), the live view (stderr
// on a terminal: what is left on the screen), and --verbose.
var goldenVariants = []struct {
	suffix string
	only   func(name string) bool
	setup  func(r *renderer, term *bytes.Buffer, clock func() time.Time)
}{
	{".txt", func(string) bool { return true }, func(*renderer, *bytes.Buffer, func() time.Time) {}},
	{".live.txt", func(name string) bool {
		return strings.HasSuffix(name, "-result") || strings.HasSuffix(name, "-failed")
	},
		func(r *renderer, term *bytes.Buffer, clock func() time.Time) {
			r.live = &liveView{w: term, width: func() int { return 100 }, now: clock, action: r.action}
		}},
	{".verbose.txt", func(name string) bool { return name == "deploy-result" || name == "deploy-failed" },
		func(r *renderer, _ *bytes.Buffer, _ func() time.Time) { r.verbose = true }},
}

// renderGolden prints the events of one request as the publisher does,
// stdout and stderr on one terminal, with the clock at each event's
// time and times in UTC.
func renderGolden(t *testing.T, raw []json.RawMessage, setup func(r *renderer, term *bytes.Buffer, clock func() time.Time)) string {
	t.Helper()
	var term bytes.Buffer
	var now time.Time
	clock := func() time.Time { return now }
	var first events.Event
	if err := json.Unmarshal(raw[0], &first); err != nil {
		t.Fatal(err)
	}
	r := &renderer{out: &term, errw: &term, id: first.RequestID, action: first.Action, project: first.Project,
		now: clock, loc: time.UTC}
	setup(r, &term, clock)
	for _, e := range raw {
		var ev events.Event
		if err := json.Unmarshal(e, &ev); err != nil {
			t.Fatal(err)
		}
		if ts, err := time.Parse(time.RFC3339Nano, ev.TS); err == nil {
			now = ts
		}
		r.event(&ev, e)
	}
	r.stopLive()
	if r.live != nil {
		return strings.Join(screen(term.String()), "\n") + "\n"
	}
	return term.String()
}

// The golden events, rendered, are the golden text; -update rewrites it.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden events in " + goldenDir)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil || len(raw) == 0 {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range goldenVariants {
			if !v.only(name) {
				continue
			}
			t.Run(name+v.suffix, func(t *testing.T) {
				got := renderGolden(t, raw, v.setup)
				path := filepath.Join(goldenDir, name+v.suffix)
				if *update {
					if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test -run TestGolden ./cmd/publisher/ -update)", err)
				}
				if got != string(want) {
					t.Errorf("%s differs from the rendering of %s.json (-update rewrites it):\n--- got\n%s\n--- want\n%s", path, name, got, want)
				}
			})
		}
	}
}
