package docker

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/berth-ops/berth/events"
)

// operationEnv is the environment variable that marks every process of
// the compose runs of one operation (see berth.ComposeSpec.Tag).
const operationEnv = "BERTH_OP"

// operationTagRe matches a valid operation tag.
var operationTagRe = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,128}$`)

// validateOperationTag checks an operation tag: 1 to 128 letters, digits
// and "_.:/-". An invalid tag is a CodeBadRequest error.
func validateOperationTag(tag string) error {
	if !operationTagRe.MatchString(tag) {
		return events.Errorf(events.CodeBadRequest, "invalid operation tag %q", tag).
			WithHint("an operation tag has 1 to 128 letters, digits, '_', '.', ':', '/' and '-', such as a request id")
	}
	return nil
}

// StopOperation kills (SIGKILL) every live process whose environment
// carries BERTH_OP=<tag>: the compose runs of a ComposeSpec with that Tag
// and every process they started, except the calling process itself. A
// process that leads a process group is killed with its group. It then
// waits until none of them is left and returns how many it killed.
//
// An invalid tag is CodeBadRequest. When ctx ends before the processes
// are gone, its deadline is CodeTimeout and its cancellation ctx.Err()
// wrapped, with the number killed so far. Processes of other users whose
// environment cannot be read are not seen. Only Linux can tell a process's
// environment: elsewhere StopOperation returns 0 and nil.
func (e *Engine) StopOperation(ctx context.Context, tag string) (int, error) {
	if err := validateOperationTag(tag); err != nil {
		return 0, err
	}
	return stopTagged(ctx, tag)
}

// taggedProcess is a process that findTagged found.
type taggedProcess struct {
	pid  int
	pgrp int
	// start is the process's start time (in clock ticks since boot): it
	// tells the process from a later one with the same pid.
	start uint64
}

// findTagged returns the live processes of procRoot (a /proc tree) whose
// environment has the entry BERTH_OP=<tag>, except process self, in
// procRoot's order. Processes whose environ or stat cannot be read (gone
// since the listing, or another user's) and zombies are left out; only a
// procRoot that cannot be listed is an error.
func findTagged(procRoot, tag string, self int) ([]taggedProcess, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	entry := []byte("\x00" + operationEnv + "=" + tag + "\x00")
	var out []taggedProcess
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid <= 0 || pid == self {
			continue
		}
		dir := filepath.Join(procRoot, ent.Name())
		env, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			continue
		}
		// Entries are NUL-terminated: a NUL before the first makes every
		// entry NUL-delimited on both sides.
		env = append([]byte{0}, env...)
		if env[len(env)-1] != 0 {
			env = append(env, 0)
		}
		if !bytes.Contains(env, entry) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		p, ok := parseProcStat(stat)
		if !ok {
			continue
		}
		p.pid = pid
		out = append(out, p)
	}
	return out, nil
}

// parseProcStat reads the process group and start time of a live process
// from its /proc/<pid>/stat; ok is false for a zombie, a dead process or
// an unreadable stat.
func parseProcStat(stat []byte) (p taggedProcess, ok bool) {
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields that count come after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return p, false
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 of proc(5) (state), f[2] field 5 (pgrp), f[19]
	// field 22 (starttime).
	if len(f) < 20 || string(f[0]) == "Z" || string(f[0]) == "X" {
		return p, false
	}
	pgrp, err1 := strconv.Atoi(string(f[2]))
	start, err2 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil {
		return p, false
	}
	return taggedProcess{pgrp: pgrp, start: start}, true
}
