package events

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// DefaultPrefix is the subject prefix used when none is configured.
const DefaultPrefix = "berth"

// Actions, as they appear as the last tokens of a command subject.
const (
	ActionConfigSet    = "config.set"
	ActionConfigGet    = "config.get"
	ActionConfigDelete = "config.delete"
	ActionStatus       = "status"
	ActionLogs         = "logs"
	ActionRestart      = "restart"
	ActionDeploy       = "deploy"
	ActionRollback     = "rollback"
	ActionStart        = "start"
	ActionStop         = "stop"
	ActionHistory      = "history"
	ActionReleases     = "releases"
	ActionMove         = "move"
)

// Actions lists every known action in a stable order.
var actions = []string{
	ActionConfigSet, ActionConfigGet, ActionConfigDelete,
	ActionStatus, ActionLogs, ActionRestart, ActionDeploy, ActionRollback, ActionStart, ActionStop, ActionHistory, ActionReleases,
	ActionMove,
}

// FastActions are the read-only actions served by the fast consumer, so a
// long deploy never delays them.
var fastActions = []string{ActionStatus, ActionLogs, ActionConfigGet, ActionHistory, ActionReleases}

// Actions returns every known action.
func Actions() []string { return slices.Clone(actions) }

// FastActions returns the actions served by the fast lane.
func FastActions() []string { return slices.Clone(fastActions) }

// SlowActions returns the actions served by the slow lane.
func SlowActions() []string {
	var out []string
	for _, a := range actions {
		if !IsFast(a) {
			out = append(out, a)
		}
	}
	return out
}

// IsKnownAction reports whether a is one of Actions.
func IsKnownAction(a string) bool { return slices.Contains(actions, a) }

// IsFast reports whether a is served by the fast lane.
func IsFast(a string) bool { return slices.Contains(fastActions, a) }

var (
	projectRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	requestIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	userTokenRe = regexp.MustCompile(`^[A-Za-z0-9_@:+=-]{1,64}$`)
)

// UserToken is the subject token of a user: the user itself when it is
// 1 to 64 characters from A-Z a-z 0-9 _ @ : + = - ("telegram:123456",
// "github:octocat"), else "~" and 16 characters of base32 of its SHA-256.
// Two users never share a token; a token never starts with "~" but for
// a hashed one or RefusedTokenScope.
func UserToken(user string) string {
	if userTokenRe.MatchString(user) {
		return user
	}
	sum := sha256.Sum256([]byte(user))
	return "~" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:10]))
}

// ValidProject reports whether p follows the Compose project-name rule
// (lower-case letters, digits, '_' and '-', starting with a letter or digit,
// at most 63 characters).
func ValidProject(p string) bool { return len(p) <= 63 && projectRe.MatchString(p) }

// ValidRequestID reports whether id can be used as a subject token.
func ValidRequestID(id string) bool { return requestIDRe.MatchString(id) }

// Subjects builds and parses subjects under one prefix.
type Subjects struct{ Prefix string }

// NewSubjects returns Subjects for prefix, or DefaultPrefix when prefix is empty.
func NewSubjects(prefix string) Subjects {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Subjects{Prefix: prefix}
}

// Command is the subject a command for project and action is published on.
func (s Subjects) Command(project, action string) string {
	return s.Prefix + ".cmd." + project + "." + action
}

// HostCommand is the subject a command for project and action is routed
// to when host's worker runs it: <prefix>.host.<host>.cmd.<project>.<action>.
// Only workers publish there.
func (s Subjects) HostCommand(host, project, action string) string {
	return s.Prefix + ".host." + host + ".cmd." + project + "." + action
}

// HostCommandFilter matches action for every project routed to host.
func (s Subjects) HostCommandFilter(host, action string) string {
	return s.Prefix + ".host." + host + ".cmd.*." + action
}

// AllHostCommands matches every routed command of every host.
func (s Subjects) AllHostCommands() string { return s.Prefix + ".host.>" }

// ParseHostCommand splits <prefix>.host.<host>.cmd.<project>.<action>.
func (s Subjects) ParseHostCommand(subject string) (host, project, action string, err error) {
	rest, ok := strings.CutPrefix(subject, s.Prefix+".host.")
	// The action is the rest: config.set, config.get and config.delete
	// hold a dot.
	parts := strings.SplitN(rest, ".", 4)
	if !ok || len(parts) != 4 || parts[1] != "cmd" || parts[0] == "" || parts[2] == "" || parts[3] == "" {
		return "", "", "", fmt.Errorf("subject %q is not a routed command subject (%s.host.<host>.cmd.<project>.<action>)", subject, s.Prefix)
	}
	return parts[0], parts[2], parts[3], nil
}

// HostQuery is the subject a query of project is forwarded to when
// host's worker answers it: <prefix>.hq.<host>.<project>.<endpoint>.
func (s Subjects) HostQuery(host, project, endpoint string) string {
	return s.Prefix + ".hq." + host + "." + project + "." + endpoint
}

// ValidHost reports whether h can name a worker host: it is a subject
// token and a consumer name, so letters, digits, '-' and '_', at most 63.
func ValidHost(h string) bool {
	if h == "" || len(h) > 63 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// CommandFilter is the filter matching action for every project.
func (s Subjects) CommandFilter(action string) string { return s.Prefix + ".cmd.*." + action }

// AllCommands matches every command subject, known action or not.
func (s Subjects) AllCommands() string { return s.Prefix + ".cmd.>" }

// Event is the subject of one event of a request: a request is its
// user's, so the user's token (UserToken) scopes its events, and a request
// of another user with the same id can neither shadow nor answer for it.
func (s Subjects) Event(project, user, requestID string, kind Kind) string {
	return s.Prefix + ".evt." + project + "." + UserToken(user) + "." + requestID + "." + string(kind)
}

// RequestEvents matches every event of one request of user.
func (s Subjects) RequestEvents(project, user, requestID string) string {
	return s.Prefix + ".evt." + project + "." + UserToken(user) + "." + requestID + ".>"
}

// RefusedTokenScope is the user token of the events of commands whose
// sender could not be trusted (unsigned or forged when signatures are
// required, undecodable): their refusal is published under it, never
// under the user and id they claim.
const RefusedTokenScope = "~refused"

// Refused is the subject of the result of a command refused before its
// sender could be trusted; ref identifies the message (its stream
// sequence, "seq<N>", or a random id).
func (s Subjects) Refused(project, ref string) string {
	return s.Prefix + ".evt." + project + "." + RefusedTokenScope + "." + ref + "." + string(KindResult)
}

// AllEvents matches every event.
func (s Subjects) AllEvents() string { return s.Prefix + ".evt.>" }

// Audit is the subject of the audit record of one command.
func (s Subjects) Audit(project, action string) string {
	return s.Prefix + ".audit." + project + "." + action
}

// ParseCommand splits a command subject into project and action. The action
// may itself contain dots (config.set). It fails when the subject is not
// under this prefix's command space; it does not validate the project name
// or the action.
func (s Subjects) ParseCommand(subject string) (project, action string, err error) {
	rest, ok := strings.CutPrefix(subject, s.Prefix+".cmd.")
	if !ok {
		return "", "", fmt.Errorf("subject %q is not under %s.cmd", subject, s.Prefix)
	}
	project, action, ok = strings.Cut(rest, ".")
	if !ok || project == "" || action == "" {
		return "", "", fmt.Errorf("subject %q must be %s.cmd.<project>.<action>", subject, s.Prefix)
	}
	return project, action, nil
}
