package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/berth-ops/berth/events"
)

// editDistance is the optimal string alignment distance of a and b: the
// insertions, deletions, substitutions and swaps of two neighbours that
// turn one into the other ("stauts" is one swap from "status").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// closest returns the candidate nearest to s, at most maxDist edits away
// and not s itself, or "" when there is none. Of two as near, the first
// in candidates wins.
func closest(s string, candidates []string, maxDist int) string {
	best, bestD := "", maxDist+1
	for _, c := range candidates {
		if c == s {
			continue
		}
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// projectsQueryTimeout bounds the question to berth.q.projects: it is
// asked only to suggest a name on an error path, and must not hold it.
const projectsQueryTimeout = 3 * time.Second

// visibleProjects asks the worker which projects user may see
// (berth.q.projects, request-reply), signed like a command when the
// client signs.
func (c *client) visibleProjects(ctx context.Context, user string) ([]string, error) {
	body, err := json.Marshal(events.Query{User: user})
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(c.subj.ProjectsQuery())
	msg.Data = body
	c.sign(msg)
	ctx, cancel := context.WithTimeout(ctx, projectsQueryTimeout)
	defer cancel()
	reply, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, err
	}
	if code := reply.Header.Get("Nats-Service-Error-Code"); code != "" {
		return nil, fmt.Errorf("projects: %s", code)
	}
	var res struct {
		Projects []string `json:"projects"`
	}
	if err := json.Unmarshal(reply.Data, &res); err != nil {
		return nil, fmt.Errorf("projects: %w", err)
	}
	return res.Projects, nil
}

// suggestProject returns a project user may see whose name is close to
// project, when project is not one of them: for a not_found or forbidden
// answer, which says nothing of whether the project exists. "" when
// there is no such project, or the worker cannot be asked.
func (c *client) suggestProject(ctx context.Context, user, project string) string {
	names, err := c.visibleProjects(ctx, user)
	if err != nil || slices.Contains(names, project) {
		return ""
	}
	return closest(project, names, 2)
}
