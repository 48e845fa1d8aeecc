package events

import (
	"encoding/json"
	"testing"
)

func TestLogLineEncodedLen(t *testing.T) {
	for _, l := range []LogLine{
		{},
		{Stream: "stdout", Line: "plain text"},
		{Stream: "stderr", TS: "2026-11-27T10:00:00.123456789Z", Line: `quote " backslash \ tab 	 nl
 cr ` + "\r\b\f\x00\x1f\x7f"},
		{Stream: "stdout", Line: "<html> & </html>"},
		{Stream: "stdout", Line: "é ü 日本 😀 \u2028 \u2029"},
		{Stream: "stdout", Line: "bad \xff\xfe utf8 \xe2\x82 cut"},
	} {
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.EncodedLen(); got != len(b) {
			t.Errorf("EncodedLen(%q) = %d, json.Marshal gives %d bytes: %s", l.Line, got, len(b), b)
		}
	}
}

func FuzzLogLineEncodedLen(f *testing.F) {
	f.Add("stdout", "", "hello")
	f.Add("stderr", "2026-11-27T10:00:00Z", "<\xff\u2028\"\\\x01")
	f.Fuzz(func(t *testing.T, stream, ts, line string) {
		l := LogLine{Stream: stream, TS: ts, Line: line}
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.EncodedLen(); got != len(b) {
			t.Fatalf("EncodedLen = %d, json.Marshal gives %d bytes: %s", got, len(b), b)
		}
	})
}
