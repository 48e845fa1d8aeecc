package docker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/berth-ops/berth/events"
)

// frame builds one multiplexed frame.
func frame(stream byte, payload string) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = stream
	binary.BigEndian.PutUint32(b[4:], uint32(len(payload)))
	return append(b, payload...)
}

func frames(fs ...[]byte) []byte { return bytes.Join(fs, nil) }

func collect(t *testing.T, r io.Reader, timestamps bool) []events.LogLine {
	t.Helper()
	var got []events.LogLine
	if err := Demux(r, timestamps, func(l events.LogLine) error {
		got = append(got, l)
		return nil
	}); err != nil {
		t.Fatalf("Demux: %v", err)
	}
	return got
}

func out(line string) events.LogLine { return events.LogLine{Stream: StreamStdout, Line: line} }
func errl(line string) events.LogLine {
	return events.LogLine{Stream: StreamStderr, Line: line}
}

func equalLines(t *testing.T, got, want []events.LogLine) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d lines %q, want %d %q", len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestDemuxBasic(t *testing.T) {
	stream := frames(
		frame(1, "hello\n"),
		frame(2, "oops\r\n"),
		frame(1, "a\nb\n\nc\n"),
	)
	equalLines(t, collect(t, bytes.NewReader(stream), false), []events.LogLine{
		out("hello"), errl("oops"), out("a"), out("b"), out(""), out("c"),
	})
}

func TestDemuxReadsOneByteAtATime(t *testing.T) {
	// Split headers and payloads at every byte.
	stream := frames(frame(1, "first line\nsecond "), frame(2, "err\n"), frame(1, "line\n"))
	got := collect(t, iotest.OneByteReader(bytes.NewReader(stream)), false)
	equalLines(t, got, []events.LogLine{out("first line"), errl("err"), out("second line")})

	got = collect(t, iotest.HalfReader(bytes.NewReader(stream)), false)
	equalLines(t, got, []events.LogLine{out("first line"), errl("err"), out("second line")})
}

func TestDemuxLineSpanningFramesWithInterleavedStderr(t *testing.T) {
	stream := frames(
		frame(1, "par"),
		frame(2, "e1 start "),
		frame(1, "tial "),
		frame(2, "e1 end\ne2\n"),
		frame(1, "done\nnext"),
		frame(1, "\n"),
	)
	equalLines(t, collect(t, bytes.NewReader(stream), false), []events.LogLine{
		errl("e1 start e1 end"), errl("e2"), out("partial done"), out("next"),
	})
}

func TestDemuxFlushesPartialLinesAtEOF(t *testing.T) {
	// Both streams end without "\n": the line that started first is
	// passed on first.
	stream := frames(frame(2, "err tail"), frame(1, "out tail"))
	equalLines(t, collect(t, bytes.NewReader(stream), false), []events.LogLine{
		errl("err tail"), out("out tail"),
	})
	stream = frames(frame(1, "x\nout tail"), frame(2, "err tail"))
	equalLines(t, collect(t, bytes.NewReader(stream), false), []events.LogLine{
		out("x"), out("out tail"), errl("err tail"),
	})
}

func TestDemuxEmptyStreamAndEmptyFrames(t *testing.T) {
	equalLines(t, collect(t, bytes.NewReader(nil), false), nil)
	stream := frames(frame(1, ""), frame(1, "a\n"), frame(2, ""))
	equalLines(t, collect(t, bytes.NewReader(stream), false), []events.LogLine{out("a")})
}

func TestDemuxHugeLine(t *testing.T) {
	huge := strings.Repeat("x", MaxLineBytes+1000)
	// In one frame, and spread over frames of 16 KiB (as the log drivers
	// split long messages).
	for name, stream := range map[string][]byte{
		"one frame":  frames(frame(1, huge+"\n"), frame(1, "after\n")),
		"split":      splitFrames(1, huge+"\n", 16<<10, "after\n"),
		"no newline": frames(frame(1, huge)),
	} {
		t.Run(name, func(t *testing.T) {
			got := collect(t, bytes.NewReader(stream), false)
			if len(got) < 1 {
				t.Fatal("no line")
			}
			l := got[0].Line
			if !strings.HasPrefix(l, strings.Repeat("x", MaxLineBytes)) || !strings.Contains(l, "truncated") ||
				!strings.Contains(l, "1000 more bytes") || len(l) > MaxLineBytes+100 {
				t.Errorf("huge line: len %d, end %q", len(l), l[len(l)-60:])
			}
			if name != "no newline" {
				equalLines(t, got[1:], []events.LogLine{out("after")})
			}
		})
	}
}

func TestDemuxTruncationKeepsUTF8Valid(t *testing.T) {
	line := strings.Repeat("x", MaxLineBytes-1) + "é" + "tail\n" // é straddles the cap
	got := collect(t, bytes.NewReader(frame(1, line)), false)
	if len(got) != 1 {
		t.Fatalf("got %d lines", len(got))
	}
	l := got[0].Line
	if !strings.HasPrefix(l, strings.Repeat("x", MaxLineBytes-1)+" … [line truncated") {
		t.Errorf("line end %q", l[MaxLineBytes-10:])
	}
	if !strings.Contains(l, "6 more bytes") { // the 2 bytes of é and "tail"
		t.Errorf("line end %q", l[MaxLineBytes-10:])
	}
}

func splitFrames(stream byte, payload string, size int, rest ...string) []byte {
	var b []byte
	for len(payload) > 0 {
		n := min(size, len(payload))
		b = append(b, frame(stream, payload[:n])...)
		payload = payload[n:]
	}
	for _, r := range rest {
		b = append(b, frame(stream, r)...)
	}
	return b
}

func TestDemuxTimestamps(t *testing.T) {
	const ts1 = "2026-01-02T03:04:05.123456789Z"
	const ts2 = "2026-01-02T03:04:06.000000001Z"
	stream := frames(
		frame(1, ts1+" hello world\n"),
		frame(2, ts2+" on stderr\n"),
		frame(1, ts2+" \n"), // an empty line
		// A message the log driver split in two: each part is stamped.
		frame(1, ts1+" first half, "),
		frame(1, ts2+" second half\n"),
		frame(1, "not-a-timestamp line\n"),
	)
	equalLines(t, collect(t, bytes.NewReader(stream), true), []events.LogLine{
		{Stream: StreamStdout, TS: ts1, Line: "hello world"},
		{Stream: StreamStderr, TS: ts2, Line: "on stderr"},
		{Stream: StreamStdout, TS: ts2, Line: ""},
		{Stream: StreamStdout, TS: ts1, Line: "first half, second half"},
		{Stream: StreamStdout, Line: "not-a-timestamp line"},
	})

	// Without timestamps asked for, nothing is split off.
	got := collect(t, bytes.NewReader(frame(1, ts1+" hello\n")), false)
	equalLines(t, got, []events.LogLine{out(ts1 + " hello")})
}

func TestDemuxStopsOnCallbackError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Demux(bytes.NewReader(frames(frame(1, "a\nb\nc\n"))), false, func(events.LogLine) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Fatalf("err %v after %d lines, want stop after 2", err, n)
	}
}

func TestDemuxMalformed(t *testing.T) {
	// A raw (TTY) stream is not made of frames.
	err := Demux(strings.NewReader("hello world, this is raw output\n"), false, func(events.LogLine) error { return nil })
	if !errors.Is(err, ErrNotMultiplexed) {
		t.Errorf("raw stream: %v, want ErrNotMultiplexed", err)
	}
	// Truncated header and payload: the lines read so far are passed on.
	var got []events.LogLine
	keep := func(l events.LogLine) error { got = append(got, l); return nil }
	stream := frames(frame(1, "whole\n"), frame(1, "cut short\n"))
	if err := Demux(bytes.NewReader(stream[:len(stream)-4]), false, keep); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated payload: %v", err)
	}
	equalLines(t, got, []events.LogLine{out("whole"), out("cut sh")})
	got = nil
	if err := Demux(bytes.NewReader(stream[:len(frame(1, "whole\n"))+3]), false, keep); err == nil {
		t.Error("truncated header: no error")
	}
	equalLines(t, got, []events.LogLine{out("whole")})
	// An error frame of the engine.
	err = Demux(bytes.NewReader(frames(frame(1, "a\n"), frame(3, "Error grabbing logs: boom\n"))), false, keep)
	if err == nil || !strings.Contains(err.Error(), "Error grabbing logs: boom") {
		t.Errorf("system error frame: %v", err)
	}
}

func TestRawLines(t *testing.T) {
	var got []events.LogLine
	err := rawLines(iotest.OneByteReader(strings.NewReader("one\r\ntwo\n\nthree")), false, func(l events.LogLine) error {
		got = append(got, l)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	equalLines(t, got, []events.LogLine{out("one"), out("two"), out(""), out("three")})
}

func TestDemuxAllocations(t *testing.T) {
	// One allocation per line (its string) plus a constant: the read
	// buffer, the splitters.
	var stream []byte
	const lines = 1000
	for i := range lines {
		stream = append(stream, frame(byte(1+i%2), "2026-01-02T03:04:05.123456789Z some log line of moderate length\n")...)
	}
	r := bytes.NewReader(stream)
	n := 0
	allocs := testing.AllocsPerRun(20, func() {
		r.Reset(stream)
		if err := Demux(r, true, func(events.LogLine) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > lines+10 {
		t.Errorf("%v allocations for %d lines", allocs, lines)
	}
}

func BenchmarkDemux(b *testing.B) {
	var stream []byte
	for i := range 1000 {
		stream = append(stream, frame(byte(1+i%2), "2026-01-02T03:04:05.123456789Z some log line of moderate length\n")...)
	}
	r := bytes.NewReader(stream)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(stream)
		if err := Demux(r, true, func(events.LogLine) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
