package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// haReadyTimeout bounds the wait for a Sentinel set or a cluster to be
// formed.
const haReadyTimeout = 30 * time.Second

// SentinelMaster is the name under which the sentinels of RedisSentinel
// watch their master.
const SentinelMaster = "berthmaster"

// RedisNode is a redis-server or redis-sentinel child process of a Sentinel
// set or a cluster, on a loopback port and in a directory of its own, that
// a test can kill and start again.
type RedisNode struct {
	// Addr is the node's 127.0.0.1:port; it stays the same across Kill and
	// Restart.
	Addr string

	bin     string
	args    []string
	logFile string
	cmd     *exec.Cmd
	done    chan struct{}
}

// startNode starts bin with the arguments that args returns for a free
// port (and a second one, for a cluster's bus), in a fresh directory, and
// kills it when t ends.
func startNode(t testing.TB, bin string, args func(dir string, port, port2 int) []string) *RedisNode {
	t.Helper()
	dir := t.TempDir()
	n := &RedisNode{bin: bin, logFile: filepath.Join(dir, "redis.log")}
	t.Cleanup(n.Kill)
	// Another process may take a free port before the node binds it; try
	// a few.
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		n.Addr = "127.0.0.1:" + strconv.Itoa(port)
		n.args = args(dir, port, freePort(t))
		err := n.start()
		if err == nil {
			return n
		}
		if attempt == 3 {
			t.Fatalf("start %s: %v", filepath.Base(bin), err)
		}
	}
}

func (n *RedisNode) start() (err error) {
	n.cmd, n.done, err = startRedis(n.bin, n.args, "redis://"+n.Addr, n.logFile)
	return err
}

// Kill kills the node (SIGKILL: no shutdown, no last write) and waits for
// it to exit. Killing a dead node does nothing.
func (n *RedisNode) Kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// Restart starts a killed node again, with the same port, directory and
// arguments, and waits until it answers.
func (n *RedisNode) Restart(t testing.TB) {
	t.Helper()
	if n.cmd != nil {
		return
	}
	if err := n.start(); err != nil {
		t.Fatalf("restart %s: %v", n.Addr, err)
	}
}

// redisBins returns the paths of the named binaries, or skips t (fails it
// in CI) when one is missing.
func redisBins(t testing.TB, names ...string) []string {
	t.Helper()
	Integration(t)
	var out []string
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			Unavailable(t, "%s is not in PATH (scripts/install-deps.sh installs it): %v", name, err)
		}
		out = append(out, p)
	}
	return out
}

// serverArgs are the arguments of every redis-server of a set: no
// persistence, loopback only, and full syncs without the default 5 s
// delay.
func serverArgs(dir string, port int) []string {
	return []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--daemonize", "no",
		"--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0",
	}
}

// SentinelSet is a Redis master with its replicas, watched by three
// sentinels, all child processes of the test.
type SentinelSet struct {
	// URL is the redis+sentinel:// URL of the set (database 0).
	URL string
	// Servers are the Redis servers: the first master, then its replicas.
	Servers []*RedisNode
	// Sentinels are the three sentinels (quorum 2).
	Sentinels []*RedisNode
}

// RedisSentinel starts a master, replicas replicas of it and three
// sentinels that fail the master over when it has not answered for 500 ms,
// and waits until the sentinels know one another and the replicas. It
// skips t (fails it in CI) when redis-server or redis-sentinel is missing.
func RedisSentinel(t testing.TB, replicas int) *SentinelSet {
	t.Helper()
	bins := redisBins(t, "redis-server", "redis-sentinel")
	set := &SentinelSet{}
	master := startNode(t, bins[0], func(dir string, port, _ int) []string { return serverArgs(dir, port) })
	set.Servers = append(set.Servers, master)
	for range replicas {
		set.Servers = append(set.Servers, startNode(t, bins[0], func(dir string, port, _ int) []string {
			host, mport, _ := strings.Cut(master.Addr, ":")
			return append(serverArgs(dir, port), "--replicaof", host, mport)
		}))
	}
	var addrs []string
	for range 3 {
		s := startNode(t, bins[1], func(dir string, port, _ int) []string {
			conf := filepath.Join(dir, "sentinel.conf")
			host, mport, _ := strings.Cut(master.Addr, ":")
			text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\nlogfile %s\n"+
				"sentinel monitor %s %s %s 2\n"+
				"sentinel down-after-milliseconds %[4]s 500\n"+
				"sentinel failover-timeout %[4]s 10000\n",
				port, dir, filepath.Join(dir, "redis.log"), SentinelMaster, host, mport)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{conf}
		})
		set.Sentinels = append(set.Sentinels, s)
		addrs = append(addrs, s.Addr)
	}
	set.URL = "redis+sentinel://" + strings.Join(addrs, ",") + "/" + SentinelMaster
	waitFor(t, "the sentinel set", func(ctx context.Context) error {
		if err := replicasUp(ctx, master.Addr, replicas); err != nil {
			return err
		}
		for _, s := range set.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
			defer c.Close()
			r, err := c.Replicas(ctx, SentinelMaster).Result()
			if err != nil {
				return err
			}
			o, err := c.Sentinels(ctx, SentinelMaster).Result()
			if err != nil {
				return err
			}
			if len(r) != replicas || len(o) != 2 {
				return fmt.Errorf("sentinel %s knows %d replicas and %d other sentinels", s.Addr, len(r), len(o))
			}
		}
		return nil
	})
	return set
}

// MasterAddr returns the address of the master, as the first sentinel that
// answers says.
func (s *SentinelSet) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, n := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		a, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		c.Close()
		if err == nil {
			return strings.Join(a, ":"), nil
		}
		last = err
	}
	return "", last
}

// Server returns the server at addr, or nil.
func (s *SentinelSet) Server(addr string) *RedisNode { return nodeAt(s.Servers, addr) }

// ClusterSet is a Redis Cluster of three masters with a replica each, all
// child processes of the test.
type ClusterSet struct {
	// URL is the redis+cluster:// URL of the cluster, listing every node.
	URL string
	// Nodes are the six nodes.
	Nodes []*RedisNode
}

// RedisCluster starts six cluster-enabled redis-servers (node timeout 1 s),
// makes them a cluster of three masters with a replica each with
// redis-cli --cluster create, and waits until every slot is served and
// every master has its replica. It skips t (fails it in CI) when
// redis-server or redis-cli is missing.
func RedisCluster(t testing.TB) *ClusterSet {
	t.Helper()
	bins := redisBins(t, "redis-server", "redis-cli")
	set := &ClusterSet{}
	var addrs []string
	for range 6 {
		n := startNode(t, bins[0], func(dir string, port, bus int) []string {
			return append(serverArgs(dir, port),
				"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", "1000",
				// A replica takes over however long it lost its master.
				"--cluster-replica-validity-factor", "0")
		})
		set.Nodes = append(set.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), haReadyTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, bins[1], args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	set.URL = "redis+cluster://" + strings.Join(addrs, ",")
	waitFor(t, "the cluster", func(ctx context.Context) error {
		for _, n := range set.Nodes {
			c := redis.NewClient(&redis.Options{Addr: n.Addr})
			defer c.Close()
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:6") {
				return fmt.Errorf("node %s: %s", n.Addr, info)
			}
			repl, err := c.Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if !strings.Contains(repl, "connected_slaves:1") && !strings.Contains(repl, "master_link_status:up") {
				return fmt.Errorf("node %s replicates nothing yet", n.Addr)
			}
		}
		return nil
	})
	return set
}

// Node returns the node at addr, or nil.
func (c *ClusterSet) Node(addr string) *RedisNode { return nodeAt(c.Nodes, addr) }

func nodeAt(nodes []*RedisNode, addr string) *RedisNode {
	for _, n := range nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// replicasUp reports an error until the master at addr has n replicas
// whose links are up.
func replicasUp(ctx context.Context, addr string, n int) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "connected_slaves:"+strconv.Itoa(n)) {
		return fmt.Errorf("master %s: %s", addr, info)
	}
	return nil
}

// waitFor calls ready until it returns nil, and fails t when it has not
// within haReadyTimeout.
func waitFor(t testing.TB, what string, ready func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), haReadyTimeout)
	defer cancel()
	for {
		err := ready(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s is not ready within %v: %v", what, haReadyTimeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
