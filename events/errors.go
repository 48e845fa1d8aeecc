package events

import (
	"errors"
	"fmt"
)

// Code is one of the closed set of error codes a result can carry.
type Code string

// The error codes. docs/protocol.md describes each one.
const (
	CodeBadRequest           Code = "bad_request"
	CodeUnauthorized         Code = "unauthorized"
	CodeForbidden            Code = "forbidden"
	CodeNotFound             Code = "not_found"
	CodeConflict             Code = "conflict"
	CodeConfirmationRequired Code = "confirmation_required"
	CodeConfirmationInvalid  Code = "confirmation_invalid"
	CodeConfirmationExpired  Code = "confirmation_expired"
	CodePlanChanged          Code = "plan_changed"
	CodeDockerUnavailable    Code = "docker_unavailable"
	CodeStoreUnavailable     Code = "store_unavailable"
	CodeTimeout              Code = "timeout"
	CodeBuildFailed          Code = "build_failed"
	CodeHealthFailed         Code = "health_failed"
	CodeInternal             Code = "internal"
	// CodeUnavailable: the project's host has no worker answering.
	CodeUnavailable Code = "unavailable"
)

// Codes lists every error code.
func Codes() []Code {
	return []Code{
		CodeBadRequest, CodeUnauthorized, CodeForbidden, CodeNotFound, CodeConflict,
		CodeConfirmationRequired, CodeConfirmationInvalid, CodeConfirmationExpired,
		CodePlanChanged, CodeDockerUnavailable, CodeStoreUnavailable, CodeTimeout,
		CodeBuildFailed, CodeHealthFailed, CodeInternal, CodeUnavailable,
	}
}

// Error is the structured error carried by a result: a code from the closed
// set, a message saying what went wrong, and a hint saying what to do next.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	// Data carries machine-readable details (the lock holder of a conflict,
	// the valid actions of a bad_request). It is not part of Error().
	Data map[string]any `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return string(e.Code) + ": " + e.Message
	}
	return string(e.Code) + ": " + e.Message + " (" + e.Hint + ")"
}

// Errorf returns an *Error with code, a formatted message and no hint.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithHint returns e with its hint set.
func (e *Error) WithHint(hint string) *Error { e.Hint = hint; return e }

// With returns e with a detail added.
func (e *Error) With(key string, v any) *Error {
	if e.Data == nil {
		e.Data = map[string]any{}
	}
	e.Data[key] = v
	return e
}

// ErrorCode returns the code of the first *Error in err's chain, CodeInternal
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// AsError converts any error into an *Error; errors without a code become
// internal errors whose message is the error text.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: err.Error(),
		Hint: "this is a bug or an unexpected failure; check the worker log for this request id"}
}
