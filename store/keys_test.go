package store

import (
	"testing"

	"github.com/berth-ops/berth/events"
)

func TestKeysCustomPrefix(t *testing.T) {
	k := NewKeys("test/")
	for _, c := range []struct{ got, want string }{
		{k.Prefix(), "test/"},
		{k.Project("web"), "test/project:web"},
		{k.Projects(), "test/projects"},
		{k.Status("web"), "test/status:web"},
		{k.Request("telegram:1", "r-1"), "test/req:telegram:1:r-1"},
		{k.Request("a b", "r-1"), "test/req:" + events.UserToken("a b") + ":r-1"},
		{k.History("web"), "test/history:web"},
		{k.Confirm("tok"), "test/confirm:tok"},
		{k.ConfirmFor("web", "down", "alice"), "test/confirm:web:down:alice"},
		{k.PendingFor("alice"), "test/pending:alice"},
		{k.Lock("web"), "test/lock:web"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
}

func TestKeysDefaultPrefix(t *testing.T) {
	k := NewKeys("")
	if got := k.Project("web"); got != "berth:project:web" {
		t.Errorf("Project(web) = %q, want berth:project:web", got)
	}
	if got := k.Projects(); got != "berth:projects" {
		t.Errorf("Projects() = %q, want berth:projects", got)
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
