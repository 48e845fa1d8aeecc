package handlers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/state"
)

// A service opts in to start-first rollouts with the compose spec's own
// key, deploy.update_config.order: start-first (Swarm's meaning of it;
// `docker compose up` ignores it). Deploy, rollback and the undo of a
// failed deploy then start the new containers of such a service beside the
// old ones, wait until they are up, take the old ones off the networks
// (Docker's DNS stops returning them), wait the drain period, and stop and
// remove them. Every other service is recreated by compose (stop-first).

// StartFirstRefusal is a service that asks for start-first but cannot
// have it: it is recreated, and the plan says why.
type StartFirstRefusal struct {
	Service string `json:"service"`
	Reason  string `json:"reason"`
}

// RolloutPlan says how a deploy replaces the containers of each service
// that runs: start-first rollouts, and compose's recreate.
type RolloutPlan struct {
	// StartFirst are the services rolled out start-first.
	StartFirst []string `json:"start_first,omitempty"`
	// Recreate are the other long-running services: compose recreates
	// those that changed (their clients see them down meanwhile).
	Recreate []string `json:"recreate,omitempty"`
	// Refused are services that ask for start-first but are recreated.
	Refused []StartFirstRefusal `json:"refused,omitempty"`
	// OneShots run once, before any start-first switch; a rollback does
	// not reverse what they did (a migration stays applied).
	OneShots []string `json:"one_shots,omitempty"`
}

// RolloutResult is one service's start-first rollout in a result.
type RolloutResult struct {
	Service string `json:"service"`
	// Replaced is how many old containers the new ones replaced.
	Replaced int `json:"replaced"`
	// ReadyAfterMS is from the start of the rollout until the new
	// containers were up; TotalMS until the old ones were removed.
	ReadyAfterMS int64 `json:"ready_after_ms"`
	TotalMS      int64 `json:"total_ms"`
}

// startFirst sorts the services of model that ask for start-first into
// those that roll out so and those that cannot, with why.
func startFirst(p *berth.Project, model *berth.ComposeModel) (roll []string, refused []StartFirstRefusal) {
	for _, name := range model.ServiceNames() {
		svc := model.Services[name]
		if svc.UpdateOrder != "start-first" {
			continue
		}
		if why := startFirstRefusal(p, model, name); why != "" {
			refused = append(refused, StartFirstRefusal{Service: name, Reason: why})
			continue
		}
		roll = append(roll, name)
	}
	return roll, refused
}

// startFirstRefusal says why a service cannot run two containers side by
// side, or "".
func startFirstRefusal(p *berth.Project, model *berth.ComposeModel, name string) string {
	svc := model.Services[name]
	switch {
	case svc.ContainerName != "":
		return fmt.Sprintf("container_name %q: two containers cannot have one name", svc.ContainerName)
	case model.Completion(name) == berth.Finishes:
		return "a one-shot service: it runs once per deploy, there is nothing to keep serving"
	case svc.NetworkMode == "host":
		return "network_mode host: the new container would need the old one's ports"
	}
	for _, port := range svc.Ports {
		if port.Published != "" && port.Published != "0" {
			return fmt.Sprintf("publishes the fixed host port %s: two containers cannot bind it (publish an ephemeral port, or put a proxy in front)", port.Published)
		}
	}
	for _, v := range svc.Volumes {
		if v.Type == "volume" && !v.ReadOnly && !slices.Contains(p.StartFirstWithVolumes, name) {
			return fmt.Sprintf("mounts the volume %s writable: two containers would write it at once (allow it with config.set start_first_with_volumes)", cmp.Or(v.Source, v.Target))
		}
	}
	return ""
}

// rolloutPlan is the RolloutPlan of model, nil when no service asks for
// start-first.
func rolloutPlan(p *berth.Project, model *berth.ComposeModel) *RolloutPlan {
	roll, refused := startFirst(p, model)
	if len(roll) == 0 && len(refused) == 0 {
		return nil
	}
	rp := &RolloutPlan{StartFirst: roll, Refused: refused}
	for _, name := range model.ServiceNames() {
		switch {
		case slices.Contains(roll, name):
		case model.Completion(name) == berth.Finishes:
			rp.OneShots = append(rp.OneShots, name)
		default:
			rp.Recreate = append(rp.Recreate, name)
		}
	}
	return rp
}

// upProject brings the project up as its compose files and images say,
// in three passes that keep compose's own view consistent (a later plain
// `docker compose up -d` changes nothing):
//
//  1. compose up of every service that does not depend on a start-first
//     one: the start-first services' dependencies converge, and one-shots
//     such as migrations run, once, before any switch; services the files
//     no longer have are removed;
//  2. a rollout of each start-first service whose containers compose
//     would recreate, dependencies first;
//  3. compose up of the services that depend on a start-first one (a
//     proxy), when compose would change them.
//
// No pass uses --no-deps: compose drops the dependencies on unselected
// services from a service's definition, and so from the hash it compares,
// and would recreate the service on the next plain up. step names the
// progress.
func (r *opRun) upProject(ctx context.Context, step string, build bool) error {
	s := r.s
	model, err := s.Engine.ComposeModel(ctx, r.spec())
	if err != nil {
		return err
	}
	r.model = model
	roll, _ := startFirst(r.project(), model)
	args := []string{"up", "-d"}
	if !build {
		args = append(args, "--no-build")
	}
	args = append(args, "--remove-orphans")
	if len(roll) == 0 {
		return r.compose(ctx, step, events.CodeHealthFailed, args...)
	}
	var first, after []string
	for _, name := range model.ServiceNames() {
		switch {
		case slices.Contains(roll, name):
		case dependsOnAny(model, name, roll):
			after = append(after, name)
		default:
			first = append(first, name)
		}
	}
	if len(first) > 0 {
		if err := r.compose(ctx, step, events.CodeHealthFailed, append(args, first...)...); err != nil {
			return err
		}
	} else {
		cs, err := s.Engine.Containers(ctx, r.project().ComposeProject)
		if err != nil {
			return err
		}
		if err := r.removeOrphans(ctx, model, cs); err != nil {
			return err
		}
	}
	for _, name := range dependencyOrder(model, roll) {
		if err := r.rollService(ctx, step, model, name); err != nil {
			return err
		}
	}
	var changed []string
	for _, name := range after {
		ch, err := r.wouldChange(ctx, name)
		if err != nil {
			return err
		}
		if ch {
			changed = append(changed, name)
		}
	}
	if len(changed) > 0 {
		return r.compose(ctx, step, events.CodeHealthFailed, append([]string{"up", "-d", "--no-build"}, changed...)...)
	}
	return nil
}

// dependsOnAny reports whether svc depends, directly or not, on one of
// targets.
func dependsOnAny(model *berth.ComposeModel, svc string, targets []string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(n string) bool {
		for dep := range model.Services[n].DependsOn {
			if slices.Contains(targets, dep) {
				return true
			}
			if !seen[dep] {
				seen[dep] = true
				if walk(dep) {
					return true
				}
			}
		}
		return false
	}
	return walk(svc)
}

// dependencyOrder orders names so that a service comes after those of
// names it depends on.
func dependencyOrder(model *berth.ComposeModel, names []string) []string {
	var out []string
	done := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if done[n] {
			return
		}
		done[n] = true
		for _, dep := range sortedKeys(model.Services[n].DependsOn) {
			if slices.Contains(names, dep) {
				visit(dep)
			}
		}
		out = append(out, n)
	}
	for _, n := range names {
		visit(n)
	}
	return out
}

// removeOrphans removes the containers of services model does not have
// (compose's --remove-orphans, when no compose up runs).
func (r *opRun) removeOrphans(ctx context.Context, model *berth.ComposeModel, cs []berth.Container) error {
	for _, c := range cs {
		if _, ok := model.Services[c.Service]; !ok && c.Service != "" {
			if err := r.s.Composer.RemoveContainer(ctx, c.ID, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// wouldChange asks compose (--dry-run) whether `up` would create,
// recreate or start containers of svc: its image or its definition
// changed, or it is not running.
func (r *opRun) wouldChange(ctx context.Context, svc string) (bool, error) {
	prefix := "Container " + r.project().ComposeProject + "-" + svc + "-"
	change := false
	err := r.s.Composer.Compose(ctx, r.spec(), events.CodeHealthFailed, func(line string) {
		i := strings.Index(line, prefix)
		if i < 0 {
			return
		}
		if fields := strings.Fields(line[i:]); len(fields) >= 3 && fields[2] != "Running" {
			change = true
		}
	}, "--dry-run", "up", "-d", "--no-build", svc)
	return change, err
}

// rollService rolls svc out start-first when compose would change its
// containers.
func (r *opRun) rollService(ctx context.Context, step string, model *berth.ComposeModel, svc string) error {
	change, err := r.wouldChange(ctx, svc)
	if err != nil {
		return err
	}
	if !change {
		r.progress(step, svc+": unchanged, not rolled out", -1, -1)
		return nil
	}
	return r.rollOut(ctx, step, model, svc)
}

// rollOut replaces the containers of svc start-first; the journal records
// each phase.
func (r *opRun) rollOut(ctx context.Context, step string, model *berth.ComposeModel, svc string) error {
	s := r.s
	cs, err := s.Engine.Containers(ctx, r.project().ComposeProject)
	if err != nil {
		return err
	}
	old := containerIDs(containersOf(cs, svc))
	want := max(model.Services[svc].Replicas, 1)
	r.j.Rollouts = append(r.j.Rollouts, state.Rollout{Service: svc, Old: old, Phase: state.RolloutStarting})
	ro := &r.j.Rollouts[len(r.j.Rollouts)-1]
	if err := r.saveJournal(); err != nil {
		return err
	}
	begin := s.Now()
	r.progress(step, fmt.Sprintf("%s: starting %s beside the %d running (start-first)", svc, countOf(want, "new container"), len(old)), -1, -1)
	// create, not up: up would start the exited one-shots svc depends on
	// again (a migration would run twice).
	if err := r.compose(ctx, step, events.CodeHealthFailed, "create", "--no-build", "--no-recreate",
		"--scale", fmt.Sprintf("%s=%d", svc, len(old)+want), svc); err != nil {
		return err
	}
	if cs, err = s.Engine.Containers(ctx, r.project().ComposeProject); err != nil {
		return err
	}
	for _, c := range containersOf(cs, svc) {
		if !slices.Contains(old, c.ID) {
			ro.New = append(ro.New, c.ID)
		}
	}
	if err := r.saveJournal(); err != nil {
		return err
	}
	for _, id := range ro.New {
		if err := s.Composer.StartContainer(ctx, id); err != nil {
			return err
		}
	}
	if fail, err := s.waitReady(ctx, r.project(), model, svc, ro.New); err != nil || fail != nil {
		if fail != nil {
			r.failure = fail
			return fail.Error()
		}
		return err
	}
	readyAfter := s.Now().Sub(begin).Milliseconds()
	r.progress(step, fmt.Sprintf("%s: %s ready after %d ms", svc, countOf(len(ro.New), "new container"), readyAfter), -1, -1)
	r.s.pause(ctx, "rollout") // the crash tests' hook: both releases run

	// Take the old ones out of name resolution, then drain.
	ro.Phase, ro.Networks = state.RolloutDraining, map[string][]berth.NetworkAttachment{}
	for _, id := range old {
		nets, err := s.Composer.ContainerNetworks(ctx, id)
		if err != nil {
			return err
		}
		ro.Networks[id] = nets
	}
	if err := r.saveJournal(); err != nil {
		return err
	}
	for _, id := range old {
		if err := s.Composer.DisconnectContainer(ctx, id, ro.Networks[id]); err != nil {
			return err
		}
	}
	if len(old) > 0 {
		drain := r.drain(model, svc)
		r.progress(step, fmt.Sprintf("%s: old containers off the networks, draining %s", svc, drain), -1, -1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(drain):
		}
	}
	ro.Phase = state.RolloutRemoving
	if err := r.saveJournal(); err != nil {
		return err
	}
	if err := r.removeOld(ctx, model, ro); err != nil {
		return err
	}
	total := s.Now().Sub(begin).Milliseconds()
	r.progress(step, fmt.Sprintf("%s: %s removed; rolled out in %d ms", svc, countOf(len(old), "old container"), total), -1, -1)
	r.rolledOut = append(r.rolledOut, RolloutResult{Service: svc, Replaced: len(old), ReadyAfterMS: readyAfter, TotalMS: total})
	return nil
}

// removeOld stops and removes a rollout's old containers, checks that
// none is left, and marks the rollout done.
func (r *opRun) removeOld(ctx context.Context, model *berth.ComposeModel, ro *state.Rollout) error {
	s := r.s
	grace := time.Duration(0)
	if model != nil {
		grace = model.Services[ro.Service].StopGracePeriod
	}
	for _, id := range ro.Old {
		if err := s.Composer.RemoveContainer(ctx, id, grace); err != nil {
			return err
		}
	}
	cs, err := s.Engine.Containers(ctx, r.project().ComposeProject)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if slices.Contains(ro.Old, c.ID) {
			return events.Errorf(events.CodeInternal, "old container %s of %s is still there after its removal", c.Name, ro.Service)
		}
	}
	ro.Phase = state.RolloutDone
	return r.saveJournal()
}

// drain is how long old containers of svc stay off the networks before
// they are stopped: the project's drain_s, else the service's
// stop_grace_period, else defaultDrain.
func (r *opRun) drain(model *berth.ComposeModel, svc string) time.Duration {
	if d := r.project().DrainS; d != nil {
		return time.Duration(*d) * time.Second
	}
	if g := model.Services[svc].StopGracePeriod; g > 0 {
		return g
	}
	return defaultDrain
}

// defaultDrain is the drain of a service that sets no stop_grace_period.
const defaultDrain = 5 * time.Second

// settleRollouts brings every rollout of the run that did not end to one
// release's containers: one whose old containers all still exist gets
// them back (the new ones removed, the old ones on their networks again);
// one that had begun removing them finishes. It is the undo of a step
// that rolls out, and runs before such a step resumes.
func settleRollouts(ctx context.Context, r *opRun) error {
	s := r.s
	for i := len(r.j.Rollouts) - 1; i >= 0; i-- {
		ro := &r.j.Rollouts[i]
		if ro.Phase == state.RolloutDone || ro.Phase == "reverted" {
			continue
		}
		cs, err := s.Engine.Containers(ctx, r.project().ComposeProject)
		if err != nil {
			return err
		}
		mine := containersOf(cs, ro.Service)
		present := 0
		for _, c := range mine {
			if slices.Contains(ro.Old, c.ID) {
				present++
			}
		}
		if ro.Phase == state.RolloutRemoving || present < len(ro.Old) {
			// The old ones are going: the new ones serve.
			if err := r.removeOld(ctx, nil, ro); err != nil {
				return err
			}
			continue
		}
		// The old ones back on their networks first, then the new ones
		// off theirs, then removed: the service keeps being resolved.
		for _, id := range ro.Old {
			if nets := ro.Networks[id]; len(nets) > 0 {
				if err := s.Composer.ReconnectContainer(ctx, id, nets); err != nil {
					return err
				}
			}
		}
		for _, c := range mine {
			if slices.Contains(ro.Old, c.ID) {
				continue
			}
			nets, err := s.Composer.ContainerNetworks(ctx, c.ID)
			if err == nil {
				err = s.Composer.DisconnectContainer(ctx, c.ID, nets)
			}
			if err != nil {
				return err
			}
		}
		for _, c := range mine {
			if !slices.Contains(ro.Old, c.ID) {
				if err := s.Composer.RemoveContainer(ctx, c.ID, 0); err != nil {
					return err
				}
			}
		}
		r.progress(events.StepRollback, fmt.Sprintf("%s: rollout undone, the %s serve", ro.Service, countOf(len(ro.Old), "old container")), -1, -1)
		ro.Phase = "reverted"
		if err := r.saveJournal(); err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits until the containers ids of svc are up, as verify judges
// them; it returns why one is not.
func (s *Service) waitReady(ctx context.Context, p *berth.Project, model *berth.ComposeModel, svc string, ids []string) (*FailureDetails, error) {
	timeout := max(s.Config.VerifyTimeout, model.Services[svc].HealthTimeout+10*time.Second)
	deadline := s.Now().Add(timeout)
	completion := model.Completion(svc)
	firstSeen, stableSince := map[string]int{}, map[string]time.Time{}
	window := s.stabilize(p)
	for {
		cs, err := s.Engine.Containers(ctx, p.ComposeProject)
		if err != nil {
			return nil, err
		}
		now := s.Now()
		up := 0
		for _, id := range ids {
			i := slices.IndexFunc(cs, func(c berth.Container) bool { return c.ID == id })
			if i < 0 {
				return &FailureDetails{Service: svc, State: "missing", Reason: "a new container of the rollout disappeared"}, nil
			}
			by, fail := containerUp(cs[i], completion, now, window, firstSeen, stableSince)
			if fail != "" {
				return s.failure(ctx, p, cs[i], fail), nil
			}
			if by != "" {
				up++
			} else if now.After(deadline) {
				return s.failure(ctx, p, cs[i], fmt.Sprintf("not up after %s (%s)", timeout, describe(cs[i]))), nil
			}
		}
		if up == len(ids) {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(verifyPoll):
		}
	}
}

// saveJournal writes the run's journal.
func (r *opRun) saveJournal() error {
	if err := r.s.State.WriteJournal(r.prod(), r.j); err != nil {
		return fmt.Errorf("write the %s journal: %w", r.op.name, err)
	}
	return nil
}

func containerIDs(cs []berth.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}
