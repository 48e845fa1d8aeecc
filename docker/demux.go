package docker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/berth-ops/berth/events"
)

// MaxLineBytes is the longest log line passed on; the rest of a longer line
// is dropped and a marker saying how much is appended.
const MaxLineBytes = 64 << 10

// The stream names of events.LogLine.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// The stream bytes of a multiplexed frame header.
const (
	frameStdin     = 0
	frameStdout    = 1
	frameStderr    = 2
	frameSystemErr = 3
)

// readBufSize is the read buffer of Demux and rawLines: frames of the
// json-file and local log drivers carry at most 16 KiB of message.
const readBufSize = 32 << 10

// ErrNotMultiplexed is returned by Demux for a stream that is not made of
// frames (the output of a container with a TTY, or not a log stream).
var ErrNotMultiplexed = errors.New("docker: log stream is not multiplexed")

// Demux splits a multiplexed log stream of the Docker Engine into lines and
// passes them to fn in the order they end.
//
// The stream is a sequence of frames: an 8-byte header {stream, 0, 0, 0,
// size as a big-endian uint32} (stream 1 is stdout, 2 stderr) and size
// bytes of output. Lines may span frames; each stream keeps its own
// partial line, so interleaved stdout and stderr do not mix. A line's
// trailing "\n" and "\r" are removed; a line longer than MaxLineBytes is
// truncated with a marker; a last line without "\n" is passed on at EOF.
//
// With timestamps (the stream was asked for with timestamps), each line's
// leading RFC 3339 timestamp goes to LogLine.TS; the timestamp the engine
// puts at the start of a frame that continues a line (a message the log
// driver split) is dropped.
//
// Demux returns nil at EOF, the error of fn as it is, the read error of r,
// or an error for a malformed stream. An error frame of the engine (stream
// 3) is returned as an error.
func Demux(r io.Reader, timestamps bool, fn func(events.LogLine) error) error {
	out := lineSplitter{stream: StreamStdout, timestamps: timestamps, fn: fn}
	errs := lineSplitter{stream: StreamStderr, timestamps: timestamps, fn: fn}
	flush := func() error {
		// The partial line that started first ends first.
		a, b := &out, &errs
		if b.partial && (!a.partial || b.startSeq < a.startSeq) {
			a, b = b, a
		}
		if err := a.flush(); err != nil {
			return err
		}
		return b.flush()
	}

	var hdr [8]byte
	buf := make([]byte, readBufSize)
	for seq := uint64(1); ; seq++ {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			switch err {
			case io.EOF:
				return flush()
			case io.ErrUnexpectedEOF:
				if ferr := flush(); ferr != nil {
					return ferr
				}
				return fmt.Errorf("docker: log stream truncated in a frame header")
			}
			return err
		}
		if hdr[1]|hdr[2]|hdr[3] != 0 || hdr[0] > frameSystemErr {
			return fmt.Errorf("%w: bad frame header %x", ErrNotMultiplexed, hdr)
		}
		size := int64(binary.BigEndian.Uint32(hdr[4:]))
		if hdr[0] == frameSystemErr {
			msg, err := io.ReadAll(io.LimitReader(r, min(size, MaxErrorOutput)))
			if err != nil {
				return err
			}
			return fmt.Errorf("docker: log stream error: %s", bytes.TrimSpace(msg))
		}
		sp := &out
		if hdr[0] == frameStderr {
			sp = &errs
		}
		for first := true; size > 0; first = false {
			k := int(min(size, int64(len(buf))))
			n, err := io.ReadFull(r, buf[:k])
			if n > 0 {
				if werr := sp.write(buf[:n], first, seq); werr != nil {
					return werr
				}
			}
			if err != nil {
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					if ferr := flush(); ferr != nil {
						return ferr
					}
					return fmt.Errorf("docker: log stream truncated in a frame")
				}
				return err
			}
			size -= int64(n)
		}
	}
}

// rawLines splits the raw output of a container with a TTY (no frames, all
// stdout) into lines, like Demux.
func rawLines(r io.Reader, timestamps bool, fn func(events.LogLine) error) error {
	sp := lineSplitter{stream: StreamStdout, timestamps: timestamps, fn: fn}
	buf := make([]byte, readBufSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := sp.write(buf[:n], false, 0); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return sp.flush()
		}
		if err != nil {
			return err
		}
	}
}

// lineSplitter assembles the lines of one stream.
type lineSplitter struct {
	stream     string
	timestamps bool
	fn         func(events.LogLine) error

	pend     []byte // the start of an unfinished line, at most MaxLineBytes
	partial  bool   // a line is unfinished (pend may be empty)
	dropped  int    // bytes of the unfinished line past MaxLineBytes
	startSeq uint64 // the frame the unfinished line started in
}

// write adds output; frameStart says chunk starts a frame (seq).
func (s *lineSplitter) write(chunk []byte, frameStart bool, seq uint64) error {
	if frameStart && s.partial && s.timestamps {
		// The log driver split a long line into messages, each of which
		// the engine stamps: keep the first stamp only.
		if i := bytes.IndexByte(chunk, ' '); i > 0 && looksLikeTimestamp(chunk[:i]) {
			chunk = chunk[i+1:]
		}
	}
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			if !s.partial {
				s.partial, s.startSeq = true, seq
			}
			s.add(chunk)
			return nil
		}
		line := chunk[:i]
		chunk = chunk[i+1:]
		if !s.partial {
			// The common case: a whole line in the chunk, no copy.
			dropped := 0
			if len(line) > MaxLineBytes {
				line, dropped = line[:MaxLineBytes], len(line)-MaxLineBytes
			}
			if err := s.emit(line, dropped); err != nil {
				return err
			}
			continue
		}
		s.add(line)
		err := s.emit(s.pend, s.dropped)
		s.pend, s.partial, s.dropped = s.pend[:0], false, 0
		if err != nil {
			return err
		}
	}
	return nil
}

// add appends to the unfinished line, up to MaxLineBytes.
func (s *lineSplitter) add(b []byte) {
	if room := MaxLineBytes - len(s.pend); len(b) > room {
		s.dropped += len(b) - room
		b = b[:room]
	}
	s.pend = append(s.pend, b...)
}

// flush passes on the unfinished line, if any.
func (s *lineSplitter) flush() error {
	if !s.partial {
		return nil
	}
	err := s.emit(s.pend, s.dropped)
	s.pend, s.partial, s.dropped = s.pend[:0], false, 0
	return err
}

// emit passes one line (without its "\n") to fn.
func (s *lineSplitter) emit(b []byte, dropped int) error {
	var line string
	if dropped > 0 {
		cut := cutIncompleteRune(b)
		dropped += len(b) - len(cut)
		line = string(cut) + " … [line truncated by berth: " + strconv.Itoa(dropped) + " more bytes]"
	} else {
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
		line = string(b)
	}
	ll := events.LogLine{Stream: s.stream, Line: line}
	if s.timestamps {
		if i := strings.IndexByte(line, ' '); i > 0 && looksLikeTimestamp(line[:i]) {
			ll.TS, ll.Line = line[:i], line[i+1:]
		} else if i < 0 && looksLikeTimestamp(line) {
			ll.TS, ll.Line = line, "" // an empty line
		}
	}
	return s.fn(ll)
}

// looksLikeTimestamp reports whether b has the shape of the engine's
// RFC 3339 timestamps (2006-01-02T15:04:05.000000000Z).
func looksLikeTimestamp[T string | []byte](b T) bool {
	if len(b) < len("2006-01-02T15:04:05Z") || len(b) > len("2006-01-02T15:04:05.000000000-07:00") {
		return false
	}
	return isDigits(b[0:4]) && b[4] == '-' && isDigits(b[5:7]) && b[7] == '-' &&
		isDigits(b[8:10]) && b[10] == 'T' && isDigits(b[11:13]) && b[13] == ':' &&
		isDigits(b[14:16]) && b[16] == ':' && isDigits(b[17:19])
}

func isDigits[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if b[i] < '0' || b[i] > '9' {
			return false
		}
	}
	return true
}

// cutIncompleteRune drops an incomplete UTF-8 sequence at the end of b
// (left by truncating a line).
func cutIncompleteRune(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			return b
		}
	}
	return b
}
