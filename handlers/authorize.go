package handlers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// Roles, weakest first.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

var roleRank = map[string]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// ValidRole reports whether r is a known role.
func ValidRole(r string) bool { return roleRank[r] > 0 }

// RequiredRole is the role an action needs.
func RequiredRole(action string) string {
	switch action {
	case events.ActionStatus, events.ActionLogs, events.ActionHistory, events.ActionConfigGet, events.ActionReleases:
		return RoleViewer
	case events.ActionRestart, events.ActionDeploy, events.ActionRollback, events.ActionStart, events.ActionStop:
		return RoleOperator
	default:
		return RoleAdmin
	}
}

// AnyoneIsAdmin is the admins entry that makes every user a global admin
// (the development default).
const AnyoneIsAdmin = "*"

// Authorize checks that the request's user may run its action, before any
// Docker or filesystem work: global admins may do anything; otherwise the
// project's roles decide, and an unknown user is forbidden (reads too,
// unless the project allows anonymous viewers). When the store is
// unavailable, read-only actions are checked against the roles this worker
// last read from it.
func (s *Service) Authorize(ctx context.Context, req *Request) error {
	if s.isGlobalAdmin(req.User) {
		return nil
	}
	need := RequiredRole(req.Action)
	// While the store is down, read-only commands are judged by the roles
	// last read from it (the commands they allow are served from Docker);
	// anything else needs the store's current roles.
	p, _, err := s.loadProject(ctx, req.Project, events.IsFast(req.Action))
	switch {
	case events.ErrorCode(err) == events.CodeNotFound:
		// Say nothing about whether the project exists.
		return forbidden(req, need, "")
	case err != nil:
		return err
	}
	return s.AuthorizeOn(p, req)
}

// AuthorizeOn is Authorize with the project's config already read (p, the
// config of req.Project).
func (s *Service) AuthorizeOn(p *berth.Project, req *Request) error {
	if s.isGlobalAdmin(req.User) {
		return nil
	}
	need := RequiredRole(req.Action)
	role := p.Roles[req.User]
	if role == "" && p.AnonymousViewers {
		role = RoleViewer
	}
	if roleRank[role] >= roleRank[need] {
		return nil
	}
	return forbidden(req, need, role)
}

func (s *Service) isGlobalAdmin(user string) bool {
	return slices.Contains(s.Config.Admins, user) || slices.Contains(s.Config.Admins, AnyoneIsAdmin)
}

func forbidden(req *Request, need, have string) error {
	msg := fmt.Sprintf("%s may not %s on %s: it needs the %s role", req.User, req.Action, req.Project, need)
	if have != "" {
		msg += ", and " + req.User + " is " + have
	}
	return events.Errorf(events.CodeForbidden, "%s", msg).
		WithHint("ask an admin of the project to grant the role (config.set roles), or use a user that has it")
}

// validateRoles checks a roles map of config.set.
func validateRoles(roles map[string]string) error {
	for user, role := range roles {
		if user == "" || len(user) > events.MaxUserLen || strings.ContainsAny(user, "\x00\n") {
			return events.Errorf(events.CodeBadRequest, "roles has an invalid user %q", user).
				WithHint(`name users as in commands, for example "telegram:123"`)
		}
		if !ValidRole(role) {
			return events.Errorf(events.CodeBadRequest, "role %q of %s is not a role", role, user).
				WithHint("use viewer, operator or admin")
		}
	}
	return nil
}
