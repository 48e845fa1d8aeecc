package main

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDevIsTheDefault(t *testing.T) {
	c, err := ParseConfig(nil, env(map[string]string{"HOME": "/home/u"}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Dev || c.DevNATS != "127.0.0.1:4222" || c.Replicas != 1 || strings.Join(c.Roots, ",") == "" || !strings.HasSuffix(c.StateDir, ".berth") {
		t.Fatalf("dev default %+v", c)
	}
}

func TestConfigFlagsWinOverEnvironment(t *testing.T) {
	c, err := ParseConfig([]string{"--nats-url", "nats://a:4222", "--roots", "/srv/a, /srv/b", "--status-ttl", "3s"},
		env(map[string]string{"BERTH_NATS_URL": "nats://env:4222", "BERTH_REDIS_URL": "redis://r:6379", "BERTH_SLOW_SLOTS": "2",
			"BERTH_INSECURE_UNSIGNED": "1", "BERTH_REPLICAS": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Dev || c.NATSURL != "nats://a:4222" || c.RedisURL != "redis://r:6379" || c.SlowSlots != 2 ||
		c.StatusTTL != 3*time.Second || c.Replicas != 3 || strings.Join(c.Roots, ",") != "/srv/a,/srv/b" || c.StateDir != "/var/lib/berth" {
		t.Fatalf("config %+v", c)
	}
}

func TestConfigRejectsWhatCannotWork(t *testing.T) {
	for name, args := range map[string][]string{
		"nats without redis": {"--nats-url", "nats://a"},
		"dev with urls":      {"--dev", "--nats-url", "nats://a", "--redis-url", "redis://b"},
		"relative root":      {"--roots", "srv"},
		"bad prefix":         {"--prefix", "a.b"},
		"cert without key":   {"--nats-tls-cert", "c.pem"},
		"creds and nkey":     {"--nats-creds", "a", "--nats-nkey", "b"},
		"no slots":           {"--fast-slots", "0"},
		"short ack wait":     {"--ack-wait", "10ms"},
		"even replicas":      {"--replicas", "2"},
		"dev replicas":       {"--replicas", "3"},
		"log format":         {"--log-format", "xml"},
		"stray argument":     {"status"},
		"cluster database":   {"--nats-url", "nats://a", "--redis-url", "redis+cluster://a:6379,b:6379/1", "--insecure-unsigned"},
		"sentinel no master": {"--nats-url", "nats://a", "--redis-url", "redis+sentinel://a:26379", "--insecure-unsigned"},
		"negative wait":      {"--redis-wait-timeout", "-1s"},
	} {
		if _, err := ParseConfig(args, env(nil)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestConfigRedisSentinel(t *testing.T) {
	c, err := ParseConfig([]string{"--nats-url", "nats://a:4222", "--insecure-unsigned", "--redis-wait-timeout", "250ms"},
		env(map[string]string{"BERTH_REDIS_URL": "redis+sentinel://s1:26379,s2:26379/mymaster", "BERTH_REDIS_WAIT_REPLICAS": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisURL != "redis+sentinel://s1:26379,s2:26379/mymaster" || c.RedisWaitReplicas != 2 || c.RedisWaitTimeout != 250*time.Millisecond {
		t.Fatalf("config %+v", c)
	}
}

// A worker on real NATS and Redis does not start without signing unless
// told to accept unsigned commands.
func TestConfigRefusesUnsignedProduction(t *testing.T) {
	prod := []string{"--nats-url", "nats://a:4222", "--redis-url", "redis://r:6379"}
	_, err := ParseConfig(prod, env(nil))
	if err == nil || !strings.Contains(err.Error(), "--insecure-unsigned") {
		t.Fatalf("production without signing: %v", err)
	}
	if _, err := ParseConfig(append(prod, "--insecure-unsigned"), env(nil)); err != nil {
		t.Fatalf("with --insecure-unsigned: %v", err)
	}
	if _, err := ParseConfig(append(prod, "--sign-secrets", "a-shared-secret-of-24-bytes"), env(nil)); err != nil {
		t.Fatalf("with a signing secret: %v", err)
	}
	if _, err := ParseConfig(nil, env(nil)); err != nil {
		t.Fatalf("dev mode needs no signing: %v", err)
	}
}
