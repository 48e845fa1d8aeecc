package store

import (
	"strings"
	"testing"

	"github.com/berth-ops/berth/events"
)

func TestKeysCustomPrefix(t *testing.T) {
	k := NewKeys("test/")
	for _, c := range []struct{ got, want string }{
		{k.Prefix(), "test/"},
		{k.Project("web"), "test/{cfg}:project:web"},
		{k.Projects(), "test/{cfg}:projects"},
		{k.ClaimCompose("web"), "test/{cfg}:claim:compose:web"},
		{k.Status("web"), "test/{web}:status"},
		{k.Request("telegram:1", "r-1"), "test/req:telegram:1:r-1"},
		{k.Request("a b", "r-1"), "test/req:" + events.UserToken("a b") + ":r-1"},
		{k.History("web"), "test/{web}:history"},
		{k.Confirm("tok"), "test/{confirm}:token:tok"},
		{k.ConfirmFor("web", "down", "alice"), "test/{confirm}:latest:web:down:alice"},
		{k.PendingFor("alice"), "test/{confirm}:pending:alice"},
		{k.Lock("web"), "test/{web}:lock"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
}

// TestKeysSlots checks that the keys that one script or transaction
// touches share a hash slot, as Redis Cluster requires.
func TestKeysSlots(t *testing.T) {
	k := NewKeys("")
	for _, group := range [][]string{
		{k.Project("web"), k.Projects(), k.ClaimProduction("/srv/web"), k.ClaimCompose("web"), k.Project("api")},
		{k.Status("web"), k.History("web"), k.Lock("web")},
		{k.Confirm("tok"), k.Confirm(""), k.ConfirmFor("web", "down", "alice"), k.PendingFor("alice"), k.PendingFor("bob")},
	} {
		for _, key := range group[1:] {
			if hashTag(key) != hashTag(group[0]) {
				t.Errorf("%s and %s are in different slots", group[0], key)
			}
		}
	}
	if hashTag(k.Status("web")) == hashTag(k.Status("api")) {
		t.Errorf("two projects' hot keys share a slot: %s", k.Status("web"))
	}
}

// hashTag returns the part of key that Redis Cluster hashes.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

func TestKeysDefaultPrefix(t *testing.T) {
	k := NewKeys("")
	if got := k.Project("web"); got != "berth:{cfg}:project:web" {
		t.Errorf("Project(web) = %q, want berth:{cfg}:project:web", got)
	}
	if got := k.Projects(); got != "berth:{cfg}:projects" {
		t.Errorf("Projects() = %q, want berth:{cfg}:projects", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{URL: "redis://127.0.0.1:6379/0"}
	c.setDefaults()
	if c.Prefix != DefaultPrefix || c.HistoryCap != DefaultHistoryCap {
		t.Errorf("defaults: prefix %q cap %d", c.Prefix, c.HistoryCap)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
