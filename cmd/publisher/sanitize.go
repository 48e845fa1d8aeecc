package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/berth-ops/berth/events"
)

// Every string that comes from the wire (an event's fields, the data of a
// result, a NATS server's error text) passes through sanitize before it
// reaches a terminal: a worker, a container's output or whoever can
// publish on the event subjects must not be able to move the cursor,
// rewrite lines already shown, retitle the window, hide text or make it
// read differently than it is.
//
// The rules:
//
//   - An SGR sequence (ESC [ digits ; : m: colours, bold, also "conceal")
//     is removed. Container logs are full of colours; shown as text they
//     would bury every line in noise, and removing one can hide nothing
//     (removing "conceal" reveals the text).
//   - Every other character that a terminal acts on instead of printing
//     is written as text, in the notation of Go's strconv.Quote: \x1b
//     for ESC (so ESC ] 0 ; t BEL shows as \x1b]0;t\a, and ESC [ 2 K as
//     \x1b[2K), \r, \b, \a (BEL), \f, \v, \x00…\x1f and \x7f for the other
//     C0 characters and DEL, \u0080…\u009f for the C1 characters (\u009b is
//     the one-character CSI), \xNN for each byte that is not valid UTF-8.
//     Shown rather than dropped, an attempt is visible, and the text
//     around it keeps its place.
//   - So are the characters that are invisible or change how the text
//     around them reads: every format character (Unicode category Cf:
//     the bidi embeddings, overrides and isolates U+202A–U+202E and
//     U+2066–U+2069, the marks U+200E, U+200F and U+061C, zero-width
//     spaces and joiners, U+FEFF, soft hyphens, the tag characters), the
//     line and paragraph separators U+2028 and U+2029, and the blank
//     "letters" U+115F, U+1160, U+3164, U+FFA0, U+034F, U+17B4, U+17B5,
//     as \u202e or \U000e0041.
//   - Tab is kept. A newline is kept only in a value meant to be several
//     lines (oneLine or multiLine, chosen per field by the caller), where
//     "\r\n" also becomes "\n"; elsewhere it is shown as \n, so a log
//     line or a progress message stays one line.
//
// One notation for bytes, C0, C1 and Unicode alike, and the one Go
// programmers know; caret notation (^[) has no form for U+202E or a stray
// byte. A backslash in the text is not escaped: log lines are full of
// them (paths, regular expressions, JSON), and the point is to keep the
// terminal safe, not to make the text reversible.
//
// sanitize is idempotent: its output holds no character it would change.

// lineMode says whether a value may span several lines.
type lineMode bool

const (
	oneLine   lineMode = false // a newline is shown as \n
	multiLine lineMode = true  // a newline is kept ("\r\n" becomes "\n")
)

// sanitize returns s safe to write on a terminal, by the rules above.
func sanitize(s string, mode lineMode) string {
	if isPlainASCII(s, mode) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c := s[i]
		if c == 0x1b {
			if n := sgrLen(s[i:]); n > 0 {
				i += n // a colour: dropped
				continue
			}
		}
		if c < utf8.RuneSelf {
			switch {
			case c == '\t':
				b.WriteByte(c)
			case c == '\n' && mode == multiLine:
				b.WriteByte(c)
			case c == '\r' && mode == multiLine && i+1 < len(s) && s[i+1] == '\n':
				// "\r\n": the newline alone
			case c < 0x20 || c == 0x7f:
				writeEscapedRune(&b, rune(c))
			default:
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, c)
		case unsafeRune(r):
			writeEscapedRune(&b, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// isPlainASCII reports whether s is printable ASCII, tabs (and newlines
// in multiLine mode) only: nothing to do.
func isPlainASCII(s string, mode lineMode) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 || c >= 0x7f) && c != '\t' && (c != '\n' || mode != multiLine) {
			return false
		}
	}
	return true
}

// sgrLen is the length of the SGR sequence (ESC [ params m, params of
// digits, ';' and ':') s starts with, or 0.
func sgrLen(s string) int {
	if len(s) < 3 || s[0] != 0x1b || s[1] != '[' {
		return 0
	}
	for j := 2; j < len(s); j++ {
		switch c := s[j]; {
		case c >= '0' && c <= '9' || c == ';' || c == ':':
		case c == 'm':
			return j + 1
		default:
			return 0
		}
	}
	return 0
}

// invisibleLetters are characters of other categories than Cf that
// show as nothing, or as a blank, and can disguise text.
var invisibleLetters = map[rune]bool{
	0x034f: true, // combining grapheme joiner
	0x115f: true, // Hangul choseong filler
	0x1160: true, // Hangul jungseong filler
	0x17b4: true, // Khmer vowel inherent aq
	0x17b5: true, // Khmer vowel inherent aa
	0x3164: true, // Hangul filler
	0xffa0: true, // halfwidth Hangul filler
}

// unsafeRune reports whether r, a valid rune at or above U+0080 (or DEL),
// must be escaped: a C1 control, a format character, a line or paragraph
// separator, or an invisible letter.
func unsafeRune(r rune) bool {
	switch {
	case r == 0x7f || r >= 0x80 && r <= 0x9f:
		return true
	case r == '\u2028' || r == '\u2029':
		return true
	case unicode.Is(unicode.Cf, r):
		return true
	}
	return invisibleLetters[r]
}

// writeEscapedRune writes r as strconv.Quote would escape it.
func writeEscapedRune(b *strings.Builder, r rune) {
	switch r {
	case '\a':
		b.WriteString(`\a`)
	case '\b':
		b.WriteString(`\b`)
	case '\f':
		b.WriteString(`\f`)
	case '\n':
		b.WriteString(`\n`)
	case '\r':
		b.WriteString(`\r`)
	case '\v':
		b.WriteString(`\v`)
	default:
		switch {
		case r < 0x80:
			fmt.Fprintf(b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			fmt.Fprintf(b, `\U%08x`, r)
		}
	}
}

// sanitizeEvent returns a copy of ev whose string fields are safe to
// print; the raw JSON of Plan and Data is sanitized where it is printed
// (renderJSON, renderStatus, renderLogsResult), after decoding, because
// JSON escapes (\u001b) decode to the characters themselves.
func sanitizeEvent(ev *events.Event) *events.Event {
	c := *ev
	c.RequestID = sanitize(ev.RequestID, oneLine)
	c.Project = sanitize(ev.Project, oneLine)
	c.Action = sanitize(ev.Action, oneLine)
	c.Kind = events.Kind(sanitize(string(ev.Kind), oneLine))
	c.TS = sanitize(ev.TS, oneLine)
	c.User = sanitize(ev.User, oneLine)
	c.Step = sanitize(ev.Step, oneLine)
	c.Message = sanitize(ev.Message, oneLine)
	c.Token = sanitize(ev.Token, oneLine)
	c.ExpiresAt = sanitize(ev.ExpiresAt, oneLine)
	if ev.Lines != nil {
		c.Lines = make([]events.LogLine, len(ev.Lines))
		for i, l := range ev.Lines {
			c.Lines[i] = sanitizeLogLine(l)
		}
	}
	if ev.Error != nil {
		e := *ev.Error
		e.Code = events.Code(sanitize(string(e.Code), oneLine))
		// A message may carry several lines of a command's output.
		e.Message = sanitize(e.Message, multiLine)
		e.Hint = sanitize(e.Hint, multiLine)
		c.Error = &e // Data (details) is printed as JSON, sanitized then
	}
	return &c
}

// sanitizeLogLine is l safe to print as one line: without the line's own
// line ending (a CRLF of a Windows program included), any other line
// break or carriage return shown as \n or \r.
func sanitizeLogLine(l events.LogLine) events.LogLine {
	return events.LogLine{
		Stream: sanitize(l.Stream, oneLine),
		TS:     sanitize(l.TS, oneLine),
		Line:   sanitize(strings.TrimRight(l.Line, "\r\n"), oneLine),
	}
}

// terminalSafeJSON returns the valid, compact JSON js with every
// character sanitize would escape written as a JSON escape instead
// (\u202e, \u009b, a surrogate pair above U+FFFF), and each byte that is
// not valid UTF-8 as \ufffd, as encoding/json writes it. The value is
// the same, but for those bytes. (encoding/json escapes the C0 controls,
// U+2028 and U+2029, but writes DEL, the C1 controls and the bidi and
// other format characters as they are; json.Compact keeps whatever the
// input held.) Such characters can only be inside strings, where a
// \u escape is always valid.
func terminalSafeJSON(js []byte) []byte {
	clean := true
	for _, c := range js {
		if c >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return js
	}
	out := make([]byte, 0, len(js)+16)
	for i := 0; i < len(js); {
		c := js[i]
		if c < utf8.RuneSelf && c != 0x7f {
			out = append(out, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(js[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = append(out, `\ufffd`...)
		case unsafeRune(r) && r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		case unsafeRune(r):
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, js[i:i+size]...)
		}
		i += size
	}
	return out
}
