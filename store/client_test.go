package store

import (
	"slices"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		url        string
		mode       Mode
		addrs      []string
		master     string
		db         int
		user, pass string
		sentPass   string
	}{
		{url: "redis://127.0.0.1:6379/2", mode: Single, addrs: []string{"127.0.0.1:6379"}, db: 2},
		{url: "redis+sentinel://u:p%40ss@s1,s2:26380/mymaster/3?sentinel_password=sp",
			mode: Sentinel, addrs: []string{"s1:26379", "s2:26380"}, master: "mymaster", db: 3, user: "u", pass: "p@ss", sentPass: "sp"},
		{url: "rediss+sentinel://[::1]:26379/m", mode: Sentinel, addrs: []string{"[::1]:26379"}, master: "m"},
		{url: "redis+cluster://:secret@n1:7000,n2,n3:7002", mode: Cluster, addrs: []string{"n1:7000", "n2:6379", "n3:7002"}, pass: "secret"},
		{url: "redis+cluster://n1:7000/", mode: Cluster, addrs: []string{"n1:7000"}},
	} {
		tg, err := parseURL(c.url)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		if tg.mode != c.mode {
			t.Errorf("%s: mode %v, want %v", c.url, tg.mode, c.mode)
			continue
		}
		if c.mode == Single {
			if tg.single.Addr != c.addrs[0] || tg.single.DB != c.db {
				t.Errorf("%s: %+v", c.url, tg.single)
			}
			continue
		}
		o := tg.multi
		if !slices.Equal(o.Addrs, c.addrs) || o.MasterName != c.master || o.DB != c.db ||
			o.Username != c.user || o.Password != c.pass || o.SentinelPassword != c.sentPass {
			t.Errorf("%s: addrs %q master %q db %d user %q password %q sentinel password %q", c.url,
				o.Addrs, o.MasterName, o.DB, o.Username, o.Password, o.SentinelPassword)
		}
		if strings.HasPrefix(c.url, "rediss") != (o.TLSConfig != nil) {
			t.Errorf("%s: TLS %v", c.url, o.TLSConfig != nil)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, raw := range []string{
		"redis+cluster://u:hunter2@n1:6379,n2:6379/1",      // a cluster has no database
		"redis+cluster://u:hunter2@n1:6379?dial_timeout=1", // no options
		"redis+sentinel://u:hunter2@s1:26379",              // no master name
		"redis+sentinel://u:hunter2@s1:26379/m/x",          // bad database
		"redis+sentinel://u:hunter2@s1:26379/m?foo=1",      // unknown option
		"redis+sentinel://u:hunter2@s1:99999/m",            // bad port
		"redis+sentinel://u:hunter2@s1:26379,,s2/m",        // empty address
		"redis://u:hunter2@h:6379?addr=h2:6379",            // go-redis's cluster form
		"http://u:hunter2@h",
	} {
		_, err := parseURL(raw)
		if err == nil {
			t.Errorf("%s: no error", raw)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", raw, err)
		}
	}
	if err := (Config{URL: "redis://h", Prefix: "x{y}:"}).Validate(); err == nil {
		t.Error("a prefix with braces is accepted")
	}
}

func TestWaitReplicasDefault(t *testing.T) {
	for url, want := range map[string]int{
		"redis://h:6379":                  0,
		"redis+sentinel://s:26379/m":      1,
		"redis+cluster://n1:6379,n2:6379": 1,
	} {
		s, err := New(Config{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		if s.waitReplicas != want {
			t.Errorf("%s: waits for %d replicas, want %d", url, s.waitReplicas, want)
		}
		s.Close()
	}
	s, err := New(Config{URL: "redis+cluster://n1:6379", WaitReplicas: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.waitReplicas != 0 || s.Mode() != Cluster {
		t.Errorf("WaitReplicas -1: waits for %d replicas, mode %v", s.waitReplicas, s.Mode())
	}
}
