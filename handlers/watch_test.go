package handlers

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
)

// invalidationSpy is a memStore that records InvalidateStatus calls.
type invalidationSpy struct {
	*memStore
	mu  sync.Mutex
	got []string
}

func (s *invalidationSpy) InvalidateStatus(ctx context.Context, p string) error {
	s.mu.Lock()
	s.got = append(s.got, p)
	s.mu.Unlock()
	return s.memStore.InvalidateStatus(ctx, p)
}

// take returns the projects invalidated since the last take, sorted.
func (s *invalidationSpy) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	got := s.got
	s.got = nil
	slices.Sort(got)
	return got
}

// fakeWatcher is a ContainerWatcher the test drives: each WatchContainers
// call is handed to the test, which makes it deliver events and end.
type fakeWatcher struct {
	calls chan *fakeCall
}

type fakeCall struct {
	since time.Time
	at    time.Time // when the call began
	ops   chan fakeOp
}

type fakeOp struct {
	cp, action string
	at         time.Time
	end        error // ends the call when set
	done       chan struct{}
}

func (f *fakeWatcher) WatchContainers(ctx context.Context, since time.Time, fn func(string, string, time.Time)) error {
	c := &fakeCall{since: since, at: time.Now(), ops: make(chan fakeOp)}
	select {
	case f.calls <- c:
	case <-ctx.Done():
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case op := <-c.ops:
			if op.end != nil {
				close(op.done)
				return op.end
			}
			fn(op.cp, op.action, op.at)
			close(op.done)
		}
	}
}

func (f *fakeWatcher) next(t *testing.T) *fakeCall {
	t.Helper()
	select {
	case c := <-f.calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not connect again")
		return nil
	}
}

// event delivers an event and returns once the watch has handled it.
func (c *fakeCall) event(cp, action string, at time.Time) {
	op := fakeOp{cp: cp, action: action, at: at, done: make(chan struct{})}
	c.ops <- op
	<-op.done
}

func (c *fakeCall) end(err error) {
	op := fakeOp{end: err, done: make(chan struct{})}
	c.ops <- op
	<-op.done
}

func TestWatchEngine(t *testing.T) {
	st := &invalidationSpy{memStore: newMemStore()}
	for name, cp := range map[string]string{"shop": "shop-prod", "shop-mirror": "shop-prod", "blog": "blog"} {
		if err := st.PutProject(t.Context(), &berth.Project{Name: name, ComposeProject: cp}); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := NewService(st, &fakeEngine{}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	svc.Now = func() time.Time { return t0 }
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := zerolog.New(lockedBuffer{&logMu, &logs})
	ctx, cancel := context.WithCancel(log.WithContext(t.Context()))
	fw := &fakeWatcher{calls: make(chan *fakeCall)}
	ew := &engineWatch{s: svc, w: fw, backoffMin: 20 * time.Millisecond, backoffMax: 80 * time.Millisecond,
		mapEvery: time.Hour, missEvery: 100 * time.Millisecond}
	done := make(chan struct{})
	go func() { defer close(done); ew.run(ctx) }()

	// The first connection: every cached status is dropped before it, and
	// it asks for the events since the watch began.
	c := fw.next(t)
	if got := st.take(); !slices.Equal(got, []string{"blog", "shop", "shop-mirror"}) {
		t.Fatalf("invalidated before the first connection: %v", got)
	}
	if !c.since.Equal(t0) {
		t.Fatalf("first connection since %v, want %v", c.since, t0)
	}

	// An event invalidates the projects that run its compose project, and
	// only them.
	t1 := t0.Add(time.Second)
	c.event("shop-prod", "die", t1)
	if got := st.take(); !slices.Equal(got, []string{"shop", "shop-mirror"}) {
		t.Fatalf("die of shop-prod invalidated %v", got)
	}
	c.event("blog", "health_status: unhealthy", t1.Add(time.Millisecond))
	if got := st.take(); !slices.Equal(got, []string{"blog"}) {
		t.Fatalf("health_status of blog invalidated %v", got)
	}

	// A compose project Berth does not manage invalidates nothing.
	c.event("wiki-prod", "start", t1.Add(2*time.Millisecond))
	if got := st.take(); len(got) != 0 {
		t.Fatalf("an unmanaged compose project invalidated %v", got)
	}
	// Configured right after (within missEvery of the last look), it is
	// found: a new project name makes the map be read again.
	if err := st.PutProject(t.Context(), &berth.Project{Name: "wiki", ComposeProject: "wiki-prod"}); err != nil {
		t.Fatal(err)
	}
	c.event("wiki-prod", "kill", t1.Add(3*time.Millisecond))
	if got := st.take(); !slices.Equal(got, []string{"wiki"}) {
		t.Fatalf("kill of wiki-prod (configured since) invalidated %v", got)
	}
	// A project whose compose project config.set changed is found too, once
	// missEvery has passed since the map was read.
	if err := st.PutProject(t.Context(), &berth.Project{Name: "blog", ComposeProject: "blog-v2"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	c.event("blog-v2", "create", t1.Add(3*time.Millisecond))
	if got := st.take(); !slices.Equal(got, []string{"blog"}) {
		t.Fatalf("create of blog-v2 (blog's new compose project) invalidated %v", got)
	}

	// The stream ends: the watch reconnects after the back-off, asking for
	// the events since the last one it saw (the newest, even if an older
	// one came last), and drops every cached status first.
	last := t1.Add(3 * time.Millisecond)
	c.event("blog", "stop", t1) // an older event, replayed
	st.take()
	ended := time.Now()
	c.end(errors.New("unexpected EOF"))
	c = fw.next(t)
	if !c.since.Equal(last) {
		t.Fatalf("reconnected since %v, want the last event's time %v", c.since, last)
	}
	if gap := c.at.Sub(ended); gap < 20*time.Millisecond {
		t.Fatalf("reconnected after %v, before the back-off of 20ms", gap)
	}
	if got := st.take(); !slices.Equal(got, []string{"blog", "shop", "shop-mirror", "wiki"}) {
		t.Fatalf("invalidated on reconnect: %v", got)
	}

	// While connections fail at once, the back-off doubles up to its cap;
	// since stays the last event's time.
	var gaps []time.Duration
	for range 4 {
		ended := time.Now()
		c.end(errors.New("connection refused"))
		c = fw.next(t)
		gaps = append(gaps, c.at.Sub(ended))
		if !c.since.Equal(last) {
			t.Fatalf("since %v after a failed connection, want %v", c.since, last)
		}
	}
	for i, want := range []time.Duration{40, 80, 80, 80} {
		if gaps[i] < want*time.Millisecond {
			t.Fatalf("back-offs %v, want at least 40ms 80ms 80ms 80ms", gaps)
		}
	}
	// A connection that delivers a new event resets the back-off.
	c.event("blog", "start", last.Add(time.Second))
	ended = time.Now()
	c.end(errors.New("unexpected EOF"))
	c = fw.next(t)
	if gap := c.at.Sub(ended); gap >= 70*time.Millisecond {
		t.Fatalf("back-off after a working connection %v, want it reset to 20ms", gap)
	}
	if !c.since.Equal(last.Add(time.Second)) {
		t.Fatalf("since %v, want %v", c.since, last.Add(time.Second))
	}

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not return when its context ended")
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !bytes.Contains(logs.Bytes(), []byte(`"level":"warn"`)) || !bytes.Contains(logs.Bytes(), []byte("docker event stream ended")) {
		t.Errorf("the end of the stream was not logged as a warning:\n%s", logs.String())
	}
}

// TestWatchEngineUsesDefaults runs the exported entry point until its
// first connection.
func TestWatchEngineUsesDefaults(t *testing.T) {
	st := &invalidationSpy{memStore: newMemStore()}
	svc, err := NewService(st, &fakeEngine{}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	fw := &fakeWatcher{calls: make(chan *fakeCall)}
	done := make(chan struct{})
	go func() { defer close(done); svc.WatchEngine(ctx, fw) }()
	c := fw.next(t)
	ended := time.Now()
	c.end(errors.New("refused"))
	c = fw.next(t)
	if gap := c.at.Sub(ended); gap < watchBackoffMin {
		t.Fatalf("reconnected after %v, before the 100ms back-off", gap)
	}
	cancel()
	<-done
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
