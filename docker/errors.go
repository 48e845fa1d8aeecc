package docker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"

	"github.com/berth-ops/berth/events"
)

const codeNotFound = events.CodeNotFound

// mapErr turns an error of the Docker client into an *events.Error: an
// unreachable engine is CodeDockerUnavailable, a missing object
// CodeNotFound, an expired context CodeTimeout, an argument the engine
// rejects CodeBadRequest. Other errors are wrapped with what was being done.
func (e *Engine) mapErr(err error, what string) error {
	if err == nil {
		return nil
	}
	var ee *events.Error
	if errors.As(err, &ee) {
		return ee
	}
	switch {
	case client.IsErrConnectionFailed(err) || isDialError(err):
		msg := err.Error()
		if !strings.Contains(msg, e.cli.DaemonHost()) {
			msg = "cannot reach the Docker Engine at " + e.cli.DaemonHost() + ": " + msg
		}
		return events.Errorf(events.CodeDockerUnavailable, "%s: %s", what, msg).
			WithHint("check that the Docker Engine is running and that DOCKER_HOST (or the default socket " +
				"unix:///var/run/docker.sock) names it, and that the worker may use its socket")
	case errors.Is(err, context.DeadlineExceeded):
		return events.Errorf(events.CodeTimeout, "%s: the Docker Engine did not answer in time", what).
			WithHint("the engine may be overloaded; retry, or raise the request's timeout")
	case cerrdefs.IsNotFound(err):
		return events.Errorf(events.CodeNotFound, "%s: %v", what, err)
	case cerrdefs.IsInvalidArgument(err):
		return events.Errorf(events.CodeBadRequest, "%s: %v", what, err)
	}
	return fmt.Errorf("docker: %s: %w", what, err)
}

// isDialError reports whether err is a failure to connect (that the
// client did not already classify).
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) && errors.As(err, &op) ||
		errors.Is(err, os.ErrPermission) && errors.As(err, &op)
}

// isCode reports whether err is an *events.Error with code.
func isCode(err error, code events.Code) bool {
	var ee *events.Error
	return errors.As(err, &ee) && ee.Code == code
}

// ValidateProjectName checks a compose project name as Compose does:
// lowercase letters, digits, dashes and underscores, starting with a letter
// or digit. An invalid name is a CodeBadRequest error.
func ValidateProjectName(name string) error {
	if !validProjectName(name) {
		return events.Errorf(events.CodeBadRequest, "invalid compose project name %q", name).
			WithHint("a compose project name has only lowercase letters, digits, '-' and '_', and starts with a letter or digit")
	}
	return nil
}

// validProjectName matches ^[a-z0-9][a-z0-9_-]*$.
func validProjectName(name string) bool {
	if name == "" || name[0] == '-' || name[0] == '_' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
