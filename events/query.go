package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Query is the body of a read-only query on <prefix>.q.<project>.<endpoint>:
// who asks, and the action's arguments. It has no record and no events:
// the reply is the answer.
type Query struct {
	// ID is accepted for symmetry with commands and ignored.
	ID   string          `json:"id,omitempty"`
	User string          `json:"user"`
	Args json.RawMessage `json:"args,omitempty"`
}

// DecodeQuery decodes a query body as strictly as a command body: a JSON
// object with user (required) and args; unknown fields, wrong types,
// invalid UTF-8 and trailing data are bad_request.
func DecodeQuery(body []byte) (*Query, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, Errorf(CodeBadRequest, "the query body is empty").
			WithHint(`send a JSON object, at least {"user":"<platform>:<id>"}`)
	}
	if !utf8.Valid(body) {
		return nil, Errorf(CodeBadRequest, "the query body is not valid UTF-8").
			WithHint("encode the JSON body as UTF-8")
	}
	var q Query
	if err := DecodeStrict(body, &q); err != nil {
		return nil, Errorf(CodeBadRequest, "the query body is not a valid query: %s", err).
			WithHint(`fields are user and args (id is accepted and ignored); see docs/protocol.md`)
	}
	if err := (&Command{User: q.User}).Validate(); err != nil {
		return nil, err
	}
	return &q, nil
}

// The query endpoints, as `nats micro info` lists them, and the command
// action each one answers for ("" for projects).
const (
	EndpointStatus   = "status"
	EndpointLogs     = "logs"
	EndpointConfig   = "config"
	EndpointHistory  = "history"
	EndpointReleases = "releases"
	EndpointProjects = "projects"
)

// QueryAction returns the action an endpoint answers for, and whether the
// endpoint exists; projects answers for no action.
func QueryAction(endpoint string) (string, bool) {
	switch endpoint {
	case EndpointStatus:
		return ActionStatus, true
	case EndpointLogs:
		return ActionLogs, true
	case EndpointConfig:
		return ActionConfigGet, true
	case EndpointHistory:
		return ActionHistory, true
	case EndpointReleases:
		return ActionReleases, true
	case EndpointProjects:
		return "", true
	}
	return "", false
}

// Query is the subject of a project's query endpoint.
func (s Subjects) Query(project, endpoint string) string {
	return s.Prefix + ".q." + project + "." + endpoint
}

// ProjectsQuery is the subject of the projects endpoint.
func (s Subjects) ProjectsQuery() string { return s.Prefix + ".q." + EndpointProjects }

// ParseQuery splits a query subject into project and endpoint; the
// projects endpoint has no project. It fails when the subject is not under
// this prefix's query space or names no known endpoint; it does not
// validate the project name.
func (s Subjects) ParseQuery(subject string) (project, endpoint string, err error) {
	rest, ok := strings.CutPrefix(subject, s.Prefix+".q.")
	if !ok {
		return "", "", fmt.Errorf("subject %q is not under %s.q", subject, s.Prefix)
	}
	if rest == EndpointProjects {
		return "", EndpointProjects, nil
	}
	project, endpoint, ok = strings.Cut(rest, ".")
	if _, known := QueryAction(endpoint); !ok || !known || endpoint == EndpointProjects || project == "" {
		return "", "", fmt.Errorf("subject %q must be %s.q.<project>.<endpoint> with endpoint status, logs, config, history or releases", subject, s.Prefix)
	}
	return project, endpoint, nil
}
