// Package auth signs and verifies Berth commands with HMAC-SHA256.
//
// A signed command carries two NATS headers:
//
//	Berth-Timestamp: <Unix seconds, decimal>
//	Berth-Signature: v1=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<subject>.<body>")>
//
// The subject is part of the signed message, so a command signed for one
// project and action cannot be replayed on another; the timestamp bounds how
// long a captured command can be replayed at all (the Verifier's window,
// five minutes by default). docs/security.md describes the scheme for
// clients in other languages.
package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"

	"github.com/berth-ops/berth/events"
)

// The header names of a signed command.
const (
	// HeaderTimestamp holds the signing time in Unix seconds, in decimal.
	HeaderTimestamp = "Berth-Timestamp"
	// HeaderSignature holds SignaturePrefix followed by the lowercase hex
	// HMAC-SHA256 of "<timestamp>.<subject>.<body>".
	HeaderSignature = "Berth-Signature"
	// HeaderKey names the client key the command is signed with (a key of
	// the worker's --sign-keys file); without it, the worker's shared
	// --sign-secrets are tried.
	HeaderKey = "Berth-Key"
)

// SignaturePrefix names the signature scheme in HeaderSignature's value.
const SignaturePrefix = "v1="

// DefaultWindow is how far a command's timestamp may lie from the
// verifier's clock, in either direction, when Verifier.Window is not set.
const DefaultWindow = 5 * time.Minute

// MinSecretLen is the shortest secret ParseSecrets accepts, in bytes. A
// Verifier secret shorter than this never matches.
const MinSecretLen = 16

// maxTimestampDigits bounds the length of a timestamp header (Unix seconds
// fit in 11 digits until the year 5138).
const maxTimestampDigits = 12

// hint tells a client whose command was refused what to do.
const hint = "sign the command with HMAC-SHA256 over '<ts>.<subject>.<body>' and send Berth-Timestamp " +
	"(Unix seconds) and Berth-Signature (v1=<lowercase hex>) headers; see docs/security.md"

// Sign returns the values of the HeaderTimestamp and HeaderSignature
// headers for a command with body published on subject at ts.
func Sign(secret []byte, ts time.Time, subject string, body []byte) (timestampHeader, signatureHeader string) {
	timestampHeader = strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	writeSigned(mac, timestampHeader, subject, body)
	return timestampHeader, SignaturePrefix + hex.EncodeToString(mac.Sum(nil))
}

// writeSigned writes the signed message "<ts>.<subject>.<body>" to h.
func writeSigned(h hash.Hash, ts, subject string, body []byte) {
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write([]byte(subject))
	h.Write([]byte{'.'})
	h.Write(body)
}

// Key is a client's signing key: its secret, and whom its holder may
// speak for. A key of the --sign-keys file has an ID (sent in HeaderKey)
// and names its users and projects; a shared --sign-secrets secret has no
// ID and may speak for any user on any project.
type Key struct {
	ID     string
	Secret []byte
	// Users are the users the key may sign for: exact names, or prefixes
	// ending in "*" ("telegram:*"), or "*". Nil: any user.
	Users []string
	// Projects are the projects it may act on, as Users; nil: any.
	Projects []string
}

// Allows reports whether the key may speak for user on project; the error
// is unauthorized and names the key.
func (k *Key) Allows(user, project string) error {
	if k.Users != nil && !matchAny(k.Users, user) {
		return refuse("key %s may not sign for user %q", k.name(), user).
			WithHint("sign with a key that may speak for this user, or add the user to the key's users in the worker's --sign-keys file")
	}
	if project != "" && k.Projects != nil && !matchAny(k.Projects, project) {
		return refuse("key %s may not sign for project %s", k.name(), project).
			WithHint("sign with a key of this project, or add the project to the key's projects in the worker's --sign-keys file")
	}
	return nil
}

func (k *Key) name() string {
	if k.ID == "" {
		return "(a shared secret)"
	}
	return strconv.Quote(k.ID)
}

// matchAny reports whether s matches one of patterns: equal, or starting
// with a pattern's text before its final "*".
func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(s, prefix) || p == s {
			return true
		}
	}
	return false
}

// Signed is a command whose signature a Verifier accepted: the signature
// (which identifies this signed message, for replay refusal) and the key.
type Signed struct {
	Sig string
	Key *Key
}

// Verifier checks the signatures of commands. A nil Verifier, or one
// without secrets or keys, accepts every command: signing is off.
type Verifier struct {
	// Secrets are the shared secrets (--sign-secrets). Every one is tried
	// for a command without HeaderKey, so during a rotation both the old
	// and the new secret are accepted.
	Secrets [][]byte
	// Keys are the clients' keys (--sign-keys), chosen by HeaderKey.
	Keys []Key
	// Window is how far the timestamp may lie from Now, in either
	// direction; DefaultWindow when zero or negative.
	Window time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// Enabled reports whether v checks signatures.
func (v *Verifier) Enabled() bool { return v != nil && (len(v.Secrets) > 0 || len(v.Keys) > 0) }

// Verify checks the signature headers of a command with body received on
// subject. header is the message's header (a nats.Header can be passed
// as is). It returns the signature header's value, which identifies this
// signed command so that the caller can refuse a replay within the window,
// and the key that signed it, which says whom the sender may speak for.
//
// When v is not Enabled, Verify returns nil, nil. Otherwise a missing or
// malformed header, an unknown key, a timestamp outside the window, or a
// signature that no candidate secret produces is an *events.Error with
// code events.CodeUnauthorized; it never says which secret, or which part
// of the message, failed to match.
func (v *Verifier) Verify(subject string, header map[string][]string, body []byte) (*Signed, error) {
	if !v.Enabled() {
		return nil, nil
	}
	ts, sig, want, err := v.parse(header)
	if err != nil {
		return nil, err
	}
	candidates, err := v.candidates(header)
	if err != nil {
		return nil, err
	}
	key := match(candidates, ts, subject, body, want)
	if key == nil {
		return nil, refuse("the %s header does not match the command", HeaderSignature)
	}
	return &Signed{Sig: sig, Key: key}, nil
}

// parse reads and checks the timestamp and signature headers.
func (v *Verifier) parse(header map[string][]string) (ts, sig string, want []byte, err error) {
	ts, okTS := headerValue(header, HeaderTimestamp)
	sig, okSig := headerValue(header, HeaderSignature)
	switch {
	case !okTS && !okSig:
		return "", "", nil, refuse("the command is not signed: it has no %s and %s headers", HeaderTimestamp, HeaderSignature)
	case !okTS:
		return "", "", nil, refuse("the command has no single %s header", HeaderTimestamp)
	case !okSig:
		return "", "", nil, refuse("the command has no single %s header", HeaderSignature)
	}
	sent, err := parseTimestamp(ts)
	if err != nil {
		return "", "", nil, refuse("the %s header is not Unix seconds in decimal", HeaderTimestamp)
	}
	want, ok := parseSignature(sig)
	if !ok {
		return "", "", nil, refuse("the %s header is not %s followed by 64 lowercase hex digits", HeaderSignature, SignaturePrefix)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	window := v.Window
	if window <= 0 {
		window = DefaultWindow
	}
	nowS := now().Unix()
	if skew := nowS - sent; skew > int64(window/time.Second) || -skew > int64(window/time.Second) {
		return "", "", nil, refuse("the %s header is more than %s away from the worker's clock", HeaderTimestamp, window).
			WithHint("sign each command when it is sent, and keep the clocks in sync (NTP); " + hint)
	}
	return ts, sig, want, nil
}

// candidates are the keys a command may be signed with: the one its
// HeaderKey names, or the shared secrets.
func (v *Verifier) candidates(header map[string][]string) ([]Key, error) {
	id, named := headerValue(header, HeaderKey)
	if !named {
		if _, present := header[HeaderKey]; present {
			return nil, refuse("the command has more than one %s header", HeaderKey)
		}
		keys := make([]Key, 0, len(v.Secrets))
		for _, s := range v.Secrets {
			keys = append(keys, Key{Secret: s})
		}
		if len(keys) == 0 {
			return nil, refuse("the command names no key: send the %s header with the id of your key", HeaderKey)
		}
		return keys, nil
	}
	for i := range v.Keys {
		if v.Keys[i].ID == id {
			return v.Keys[i : i+1], nil
		}
	}
	return nil, refuse("the key named in %s is not known to the worker", HeaderKey)
}

// match returns the candidate whose secret produces want, or nil. Every
// candidate is tried, without stopping at a match, so the time taken does
// not tell which secret matched, or whether one did early.
func match(candidates []Key, ts, subject string, body, want []byte) *Key {
	var found *Key
	for i := range candidates {
		mac := hmac.New(sha256.New, candidates[i].Secret)
		writeSigned(mac, ts, subject, body)
		if hmac.Equal(mac.Sum(nil), want) && len(candidates[i].Secret) >= MinSecretLen && found == nil {
			found = &candidates[i]
		}
	}
	return found
}

// VerifyEvent checks the signature of an event a worker published with
// its event secret (the same headers and scheme as a command's, see Sign),
// whatever its age: replayed events are old. A missing, malformed or
// wrong signature is an unauthorized error.
func VerifyEvent(secrets [][]byte, subject string, header map[string][]string, body []byte) error {
	v := &Verifier{Secrets: secrets, Now: func() time.Time { return time.Unix(0, 0) }, Window: time.Duration(1<<63 - 1)}
	ts, ok := headerValue(header, HeaderTimestamp)
	if ok {
		if sent, err := parseTimestamp(ts); err == nil {
			v.Now = func() time.Time { return time.Unix(sent, 0) }
		}
	}
	_, err := v.Verify(subject, map[string][]string{HeaderTimestamp: header[HeaderTimestamp], HeaderSignature: header[HeaderSignature]}, body)
	return err
}

// refuse returns an unauthorized error with the signing hint.
func refuse(format string, args ...any) *events.Error {
	return events.Errorf(events.CodeUnauthorized, format, args...).WithHint(hint)
}

// headerValue returns the only value of header key. The key is matched
// exactly first, then without regard to case (bridges from HTTP may
// change it). A header given more than once is not a value.
func headerValue(header map[string][]string, key string) (string, bool) {
	vals, found := header[key]
	if !found {
		for k, vs := range header {
			if strings.EqualFold(k, key) {
				if found {
					return "", false // the header twice, in different cases
				}
				vals, found = vs, true
			}
		}
	}
	if len(vals) != 1 || vals[0] == "" {
		return "", false
	}
	return vals[0], true
}

// parseTimestamp parses decimal Unix seconds: digits only, no sign.
func parseTimestamp(s string) (int64, error) {
	if len(s) == 0 || len(s) > maxTimestampDigits {
		return 0, fmt.Errorf("bad length")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a digit")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// parseSignature decodes "v1=<64 lowercase hex digits>".
func parseSignature(s string) ([]byte, bool) {
	h, ok := strings.CutPrefix(s, SignaturePrefix)
	if !ok || len(h) != 2*sha256.Size {
		return nil, false
	}
	for i := 0; i < len(h); i++ {
		if !(h[i] >= '0' && h[i] <= '9' || h[i] >= 'a' && h[i] <= 'f') {
			return nil, false // upper case would let one signature have two spellings
		}
	}
	b, err := hex.DecodeString(h)
	return b, err == nil
}

// ParseSecrets parses a comma-separated list of secrets. Each is plain
// text, or "hex:<hex digits>", or "base64:<standard or URL-safe base64,
// padded or not>"; spaces around each are ignored. Each must be at least
// MinSecretLen bytes once decoded. An empty or all-blank s gives no
// secrets (signing off). Errors name a secret by its position, never by
// its value.
func ParseSecrets(s string) ([][]byte, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([][]byte, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		which := fmt.Sprintf("secret %d of %d", i+1, len(parts))
		var b []byte
		switch {
		case p == "":
			return nil, fmt.Errorf("%s is empty", which)
		case strings.HasPrefix(p, "hex:"):
			var err error
			if b, err = hex.DecodeString(p[len("hex:"):]); err != nil {
				return nil, fmt.Errorf("%s: the text after hex: is not hexadecimal", which)
			}
		case strings.HasPrefix(p, "base64:"):
			var ok bool
			if b, ok = decodeBase64(p[len("base64:"):]); !ok {
				return nil, fmt.Errorf("%s: the text after base64: is not base64", which)
			}
		default:
			b = []byte(p)
		}
		if len(b) < MinSecretLen {
			return nil, fmt.Errorf("%s is %d bytes: use at least %d (32 random bytes is good: openssl rand -hex 32, then hex:<output>)",
				which, len(b), MinSecretLen)
		}
		out = append(out, b)
	}
	return out, nil
}

// decodeBase64 decodes standard or URL-safe base64, padded or not.
func decodeBase64(s string) ([]byte, bool) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}
