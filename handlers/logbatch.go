package handlers

import (
	"sync"
	"time"

	"github.com/berth-ops/berth/events"
)

// logBatcher groups followed log lines into log events: a batch goes out
// when it nears the chunk size or when it is older than the interval, so a
// chatty container does not produce an event per line.
type logBatcher struct {
	rep   Reporter
	mu    sync.Mutex
	buf   []events.LogLine
	size  int
	sent  int
	err   error
	stopC chan struct{}
	done  chan struct{}
}

func newLogBatcher(rep Reporter, every time.Duration) *logBatcher {
	b := &logBatcher{rep: rep, stopC: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.stopC:
				return
			case <-t.C:
				b.flush()
			}
		}
	}()
	return b
}

func (b *logBatcher) add(l events.LogLine) error {
	b.mu.Lock()
	b.buf = append(b.buf, l)
	b.size += len(l.Line) + len(l.TS) + 32
	full := b.size >= events.MaxLogChunk/2
	err := b.err
	b.mu.Unlock()
	if full {
		_, err = b.flush()
	}
	return err
}

// flush sends what is buffered and returns the number of lines sent so far.
func (b *logBatcher) flush() (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > 0 && b.err == nil {
		b.err = b.rep.Log(b.buf)
		b.sent += len(b.buf)
		b.buf, b.size = nil, 0
	}
	return b.sent, b.err
}

func (b *logBatcher) stop() {
	close(b.stopC)
	<-b.done
}
