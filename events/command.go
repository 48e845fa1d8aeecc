package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxUserLen is the longest accepted user identity.
const MaxUserLen = 128

// Command is the body of a command message. The subject, not the body, says
// which project and action it is for.
type Command struct {
	// ID is the request id; when empty the Nats-Msg-Id header is used, and
	// failing that an id derived from the stream sequence.
	ID string `json:"id,omitempty"`
	// User says who asks, as "<platform>:<id>" (telegram:123, github:octocat).
	User string `json:"user"`
	// Args holds the action-specific arguments, decoded by the handler.
	Args json.RawMessage `json:"args,omitempty"`
	// Confirm is "yes" or a confirmation token, for actions that need one.
	Confirm string `json:"confirm,omitempty"`
	// ReplyTo is an optional core-NATS subject that also gets the result.
	ReplyTo string `json:"reply_to,omitempty"`
}

// DecodeCommand decodes a command body strictly: unknown fields, trailing
// data and invalid values are bad_request errors that say what to fix.
func DecodeCommand(body []byte) (*Command, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, Errorf(CodeBadRequest, "the command body is empty").
			WithHint(`send a JSON object, at least {"user":"<platform>:<id>"}`)
	}
	if !utf8.Valid(body) {
		return nil, Errorf(CodeBadRequest, "the command body is not valid UTF-8").
			WithHint("encode the JSON body as UTF-8")
	}
	var c Command
	if err := DecodeStrict(body, &c); err != nil {
		return nil, Errorf(CodeBadRequest, "the command body is not a valid command: %s", err).
			WithHint(`fields are id, user, args, confirm, reply_to; see docs/protocol.md`)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the fields that do not depend on the action.
func (c *Command) Validate() error {
	if c.ID != "" && !ValidRequestID(c.ID) {
		return Errorf(CodeBadRequest, "id %q is not a valid request id", truncate(c.ID, 80)).
			WithHint("use 1 to 64 characters from A-Z a-z 0-9 _ -, or leave id out")
	}
	if c.User == "" {
		return Errorf(CodeBadRequest, "user is missing").
			WithHint(`say who asks, as "<platform>:<id>", for example "telegram:123456"`)
	}
	if utf8.RuneCountInString(c.User) > MaxUserLen || !printable(c.User) {
		return Errorf(CodeBadRequest, "user must be printable text of at most %d characters", MaxUserLen).
			WithHint(`use "<platform>:<id>", for example "github:octocat"`)
	}
	if c.Confirm != "" && (len(c.Confirm) > 128 || !printable(c.Confirm)) {
		return Errorf(CodeBadRequest, "confirm must be \"yes\" or a confirmation token").
			WithHint("copy the token from the confirm event, or send confirm: \"yes\"")
	}
	if c.ReplyTo != "" && !validSubject(c.ReplyTo) {
		return Errorf(CodeBadRequest, "reply_to %q is not a valid NATS subject", truncate(c.ReplyTo, 80)).
			WithHint("use a subject without spaces or wildcards, such as _INBOX.abc")
	}
	return nil
}

// DecodeStrict decodes exactly one JSON value from data into v, rejecting
// unknown fields and trailing data.
func DecodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return cleanJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("unexpected data after the JSON value")
	}
	return nil
}

// DecodeArgs decodes action arguments strictly into v. Missing or null args
// leave v unchanged.
func DecodeArgs(args json.RawMessage, v any) error {
	if len(bytes.TrimSpace(args)) == 0 || string(bytes.TrimSpace(args)) == "null" {
		return nil
	}
	if err := DecodeStrict(args, v); err != nil {
		return Errorf(CodeBadRequest, "args are not valid for this action: %s", err).
			WithHint("see docs/protocol.md for the arguments each action takes")
	}
	return nil
}

func cleanJSONError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	if strings.HasPrefix(msg, "cannot unmarshal") {
		msg = "wrong type: " + msg
	}
	return fmt.Errorf("%s", msg)
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func validSubject(s string) bool {
	if len(s) > 256 {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for _, r := range tok {
			if r <= ' ' || r == 0x7f || !unicode.IsPrint(r) {
				return false
			}
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
