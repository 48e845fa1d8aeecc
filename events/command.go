package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
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
	if strings.TrimSpace(c.User) == "" {
		return Errorf(CodeBadRequest, "user is missing").
			WithHint(`say who asks, as "<platform>:<id>", for example "telegram:123456"`)
	}
	if utf8.RuneCountInString(c.User) > MaxUserLen || !printable(c.User) || strings.TrimSpace(c.User) != c.User {
		return Errorf(CodeBadRequest, "user must be printable text of at most %d characters, without leading or trailing spaces", MaxUserLen).
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
// unknown fields, field names in another case than documented, duplicate
// fields, and trailing data. (encoding/json alone matches names without
// regard to case and keeps the last of duplicates, so {"user":"a","USER":"b"}
// would act for b: a parser differential with any bridge that checks user.)
func DecodeStrict(data []byte, v any) error {
	if err := checkObjectKeys(data, v); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if te := typeError(data, err); te != nil {
			return te
		}
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

// typeError says which field had a value of the wrong type, what it
// expects and what it got ("tail must be an integer, got \"abc\""), in
// the words of the protocol rather than Go's; nil for another error.
func typeError(data []byte, err error) error {
	var ute *json.UnmarshalTypeError
	if !errors.As(err, &ute) {
		return nil
	}
	if ute.Field == "" {
		return fmt.Errorf("it must be a JSON object, not a %s", ute.Value)
	}
	got := "a " + ute.Value
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) == nil {
		if raw, ok := fields[ute.Field]; ok {
			got = truncate(string(bytes.TrimSpace(raw)), 60)
		}
	}
	return fmt.Errorf("%s must be %s, got %s", ute.Field, jsonKind(ute.Type), got)
}

// jsonKind names what a Go type expects in JSON.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "another type"
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

// checkObjectKeys checks the top-level keys of a JSON object against the
// json names of struct v's fields: exact case, each at most once. Other
// JSON values (and non-struct targets) are left to the decoder.
func checkObjectKeys(data []byte, v any) error {
	allowed := jsonFieldNames(v)
	if allowed == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil // the decoder reports it
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := tok.(string)
		if !allowed[key] {
			return fmt.Errorf("unknown field %q", key)
		}
		if seen[key] {
			return fmt.Errorf("duplicate field %q", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// fieldNames caches jsonFieldNames per type: every command is decoded
// against the same few structs.
var fieldNames sync.Map // reflect.Type → map[string]bool

// jsonFieldNames returns the JSON names of a struct's fields, or nil
// when v does not point to a struct.
func jsonFieldNames(v any) map[string]bool {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	if names, ok := fieldNames.Load(t); ok {
		return names.(map[string]bool)
	}
	names := map[string]bool{}
	addFields(t.Elem(), names)
	fieldNames.Store(t, names)
	return names
}

func addFields(t reflect.Type, names map[string]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			addFields(f.Type, names)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names[name] = true
	}
}
