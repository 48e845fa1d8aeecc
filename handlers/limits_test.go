package handlers

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
)

func TestLimitsShareTheFollowLane(t *testing.T) {
	l := &Limits{FollowSlots: 3, UserFollows: 2, UserLogs: 1}
	l.setDefaults()
	var u usage
	var frees []func()
	take := func(user string, follow, logs bool) error {
		free, err := u.admit(l, user, follow, logs)
		if err == nil {
			frees = append(frees, free)
		}
		return err
	}
	for i, c := range []struct {
		user         string
		follow, logs bool
		refused      bool
	}{
		{"a", true, true, false},
		{"a", true, true, false},
		{"a", true, true, true}, // a's two follows are taken
		{"b", true, true, false},
		{"c", true, true, true}, // the lane is full
		{"a", false, true, false},
		{"a", false, true, true}, // one logs command at a time
		{"a", false, false, false},
		{"a", false, false, false}, // other commands are not counted
	} {
		err := take(c.user, c.follow, c.logs)
		if (err != nil) != c.refused || (err != nil && events.ErrorCode(err) != events.CodeConflict) {
			t.Fatalf("step %d (%+v): %v", i, c, err)
		}
	}
	frees[0]()
	frees[0]() // freeing twice frees once
	if err := take("c", true, true); err != nil {
		t.Fatalf("a freed slot: %v", err)
	}
	if err := take("c", true, true); err == nil {
		t.Fatal("freeing twice freed two slots")
	}
}

func TestLimitsDeadlines(t *testing.T) {
	l := &Limits{}
	l.setDefaults()
	for _, c := range []struct {
		action string
		args   string
		want   time.Duration
	}{
		{events.ActionStatus, ``, l.ReadTimeout},
		{events.ActionLogs, `{"tail":10}`, l.ReadTimeout},
		{events.ActionLogs, `{"follow_s":30}`, 30*time.Second + l.ReadTimeout},
		{events.ActionLogs, `{"follow_s":"x"}`, l.ReadTimeout},
		{events.ActionConfigSet, ``, l.ConfigTimeout},
		{events.ActionDeploy, `{"follow_s":30}`, l.MutationTimeout},
	} {
		follow := followOf(c.action, json.RawMessage(c.args))
		if got := l.deadline(c.action, follow); got != c.want {
			t.Errorf("%s %s: %v, want %v", c.action, c.args, got, c.want)
		}
	}
}
