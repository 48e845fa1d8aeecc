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
	b.size += lineBytes(l)
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

// logStreamChunk is how many bytes of lines (counted as logBytes does) a
// logStream is handed at a time: about one log event's worth.
const logStreamChunk = events.MaxLogChunk - 8*1024

// logStream sends lines as log events from its own goroutine, so that
// encoding and publishing them overlaps with reading the next ones.
type logStream struct {
	ch   chan []events.LogLine
	done chan struct{}
	sent int
	mu   sync.Mutex // guards err, which send reads while the goroutine runs
	err  error
}

// newLogStream starts a logStream; prepare (redaction) runs on each batch
// on the stream's goroutine before it is sent.
func newLogStream(rep Reporter, prepare func([]events.LogLine)) *logStream {
	s := &logStream{ch: make(chan []events.LogLine, 4), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		var err error
		for lines := range s.ch {
			if err != nil {
				continue // drain: the sender learns of it at its next send
			}
			prepare(lines)
			if err = rep.Log(lines); err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				continue
			}
			s.sent += len(lines) // read by close, after done
		}
	}()
	return s
}

// send queues lines, which the caller must not touch again; it returns
// the error of an earlier send, if any.
func (s *logStream) send(lines []events.LogLine) error {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.ch <- lines
	return nil
}

// close waits until every queued line is sent, and returns how many were
// and the first error.
func (s *logStream) close() (int, error) {
	close(s.ch)
	<-s.done
	return s.sent, s.err
}
