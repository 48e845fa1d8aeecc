package events

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// Kind is the kind of an event, also the last token of its subject.
type Kind string

// The event kinds.
const (
	KindAccepted Kind = "accepted"
	KindProgress Kind = "progress"
	KindLog      Kind = "log"
	KindConfirm  Kind = "confirm"
	KindResult   Kind = "result"
)

// Steps named by progress events.
const (
	StepPlan     = "plan"
	StepLock     = "lock"
	StepBackup   = "backup"
	StepSync     = "sync"
	StepBuild    = "build"
	StepPull     = "pull"
	StepUp       = "up"
	StepVerify   = "verify"
	StepRollback = "rollback"
	StepRestart  = "restart"
	StepStop     = "stop"
	StepFollow   = "follow"
)

// StreamCompose is the stream of a log line that docker compose printed
// while the request ran it (a build's output, say).
const StreamCompose = "compose"

// MaxLogChunk is the largest payload of log lines carried by one log event.
const MaxLogChunk = 64 * 1024

// Event is the body of every event. Fields after User depend on Kind.
type Event struct {
	RequestID string `json:"request_id"`
	Project   string `json:"project"`
	Action    string `json:"action"`
	Kind      Kind   `json:"kind"`
	Seq       uint64 `json:"seq"`
	TS        string `json:"ts"`
	User      string `json:"user"`

	// progress
	Step    string `json:"step,omitempty"`
	Message string `json:"message,omitempty"`
	Done    *int   `json:"done,omitempty"`
	Total   *int   `json:"total,omitempty"`

	// log
	Lines []LogLine `json:"lines,omitempty"`

	// confirm
	Token     string          `json:"token,omitempty"`
	ExpiresAt string          `json:"expires_at,omitempty"`
	Plan      json.RawMessage `json:"plan,omitempty"`

	// result
	OK         *bool           `json:"ok,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
	Error      *Error          `json:"error,omitempty"`
	DurationMS *int64          `json:"duration_ms,omitempty"`
}

// LogLine is one line of container output.
type LogLine struct {
	// Stream is "stdout" or "stderr" for a container's line, or
	// StreamCompose for a line of a compose run of the request.
	Stream string `json:"stream"`
	// TS is the engine's timestamp of the line (RFC 3339 with nanoseconds)
	// when timestamps were asked for.
	TS   string `json:"ts,omitempty"`
	Line string `json:"line"`
}

// Timestamp formats t as events carry it.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// AuditRecord is the body of an audit record on <prefix>.audit.<project>.<action>:
// one per command, refused ones included.
type AuditRecord struct {
	RequestID  string `json:"request_id"`
	Project    string `json:"project"`
	Action     string `json:"action"`
	User       string `json:"user"`
	Confirmer  string `json:"confirmer,omitempty"`
	TS         string `json:"ts"`
	OK         bool   `json:"ok"`
	ErrorCode  Code   `json:"error_code,omitempty"`
	PlanDigest string `json:"plan_digest,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	Delivery   uint64 `json:"delivery"`
	// Signed says whether the command carried a valid signature; KeyID
	// names the client key (empty for a shared secret).
	Signed bool   `json:"signed"`
	KeyID  string `json:"key_id,omitempty"`
	// ClaimedUser is the user a command claimed when it was refused before
	// its sender could be trusted (User is empty then).
	ClaimedUser string `json:"claimed_user,omitempty"`
}

// EncodedLen is the length of l encoded by encoding/json (json.Marshal),
// computed without encoding it.
func (l LogLine) EncodedLen() int {
	n := len(`{"stream":,"line":}`) + jsonStringLen(l.Stream) + jsonStringLen(l.Line)
	if l.TS != "" {
		n += len(`,"ts":`) + jsonStringLen(l.TS)
	}
	return n
}

// jsonStringLen is the length of s as a JSON string written by
// encoding/json: quoted, with <, > and & escaped for HTML, invalid UTF-8
// replaced by \ufffd, and U+2028 and U+2029 escaped.
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
