package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsNodeEnv carries a cluster node's settings to the process that runs
// it: the test binary itself, started again (see ServeNATSNode).
const natsNodeEnv = "BERTH_TEST_NATS_NODE"

// nodeSpec is what a node process needs to know.
type nodeSpec struct {
	Name        string   `json:"name"`
	Cluster     string   `json:"cluster"`
	ClientPort  int      `json:"client_port"`
	ClusterPort int      `json:"cluster_port"`
	Routes      []string `json:"routes"`
	StoreDir    string   `json:"store_dir"`
}

// ServeNATSNode runs a cluster node and never returns when this process
// was started as one by NATSCluster; otherwise it returns at once. A test
// package that uses NATSCluster calls it first thing in its TestMain.
//
// A node is a process of its own so that a test can kill it for real
// (SIGKILL): an in-process server only shuts down cleanly, handing its
// Raft leaderships over first, which is not what a crash does.
func ServeNATSNode() {
	raw := os.Getenv(natsNodeEnv)
	if raw == "" {
		return
	}
	var spec nodeSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", natsNodeEnv, err)
		os.Exit(2)
	}
	opts := &server.Options{
		ServerName: spec.Name, Host: "127.0.0.1", Port: spec.ClientPort, NoSigs: true, NoLog: os.Getenv("BERTH_NODE_LOG") == "",
		JetStream: true, StoreDir: spec.StoreDir,
		Cluster: server.ClusterOpts{Name: spec.Cluster, Host: "127.0.0.1", Port: spec.ClusterPort},
		Routes:  server.RoutesFromStr(strings.Join(spec.Routes, ",")),
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nats node %s: %v\n", spec.Name, err)
		os.Exit(2)
	}
	s.ConfigureLogger()
	go s.Start()
	// BERTH_NODE_LOG=1 shows the node's log.
	// The test holds the other end of stdin: when it is gone, so is the node.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// NATSCluster is a JetStream cluster of nats-server processes on loopback
// ports, each with its store in a temporary directory.
type NATSCluster struct {
	t     testing.TB
	Nodes []*NATSNode
}

// NATSNode is one server of a NATSCluster.
type NATSNode struct {
	spec  nodeSpec
	cmd   *exec.Cmd
	stdin io.Closer
	done  chan struct{}
}

// Name is the node's server name, as JetStream reports a stream's leader.
func (n *NATSNode) Name() string { return n.spec.Name }

// URL is the node's client URL.
func (n *NATSNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.spec.ClientPort) }

// StartNATSCluster starts size nodes and waits until JetStream answers on
// each. The test binary must call ServeNATSNode in its TestMain. The nodes
// are killed when the test ends.
func StartNATSCluster(t testing.TB, size int) *NATSCluster {
	t.Helper()
	Integration(t)
	ports := freePorts(t, 2*size)
	c := &NATSCluster{t: t}
	var routes []string
	for i := range size {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[2*i+1]))
	}
	for i := range size {
		c.Nodes = append(c.Nodes, &NATSNode{spec: nodeSpec{
			Name: fmt.Sprintf("n%d", i+1), Cluster: "berth-test", ClientPort: ports[2*i], ClusterPort: ports[2*i+1],
			Routes: routes, StoreDir: t.TempDir(),
		}})
	}
	for i := range c.Nodes {
		c.start(i)
	}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.stop()
		}
	})
	for i := range c.Nodes {
		c.WaitJetStream(i, 60*time.Second)
	}
	return c
}

// URLs are the client URLs of every node, comma-separated, as a client
// configured for the whole cluster is given them.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Index returns the index of the node named name, or -1.
func (c *NATSCluster) Index(name string) int {
	for i, n := range c.Nodes {
		if n.spec.Name == name {
			return i
		}
	}
	return -1
}

// IndexURL returns the index of the node whose client URL is url, or -1.
func (c *NATSCluster) IndexURL(url string) int {
	for i, n := range c.Nodes {
		if n.URL() == url {
			return i
		}
	}
	return -1
}

// Kill kills node i with SIGKILL: no goodbye to clients, no Raft
// leadership handed over.
func (c *NATSCluster) Kill(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	if n.cmd == nil {
		c.t.Fatalf("nats node %s is not running", n.spec.Name)
	}
	n.stop()
}

// Restart starts node i again on its ports with its store.
func (c *NATSCluster) Restart(i int) {
	c.t.Helper()
	c.start(i)
}

func (c *NATSCluster) start(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	spec, err := json.Marshal(n.spec)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), natsNodeEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start nats node %s: %v", n.spec.Name, err)
	}
	n.cmd, n.stdin, n.done = cmd, stdin, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(n.done)
	addr := fmt.Sprintf("127.0.0.1:%d", n.spec.ClientPort)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.Close()
			return
		}
		select {
		case <-n.done:
			c.t.Fatalf("nats node %s exited while starting", n.spec.Name)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nats node %s does not listen on %s: %v", n.spec.Name, addr, err)
		}
	}
}

func (n *NATSNode) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	_ = n.stdin.Close()
	<-n.done
	n.cmd = nil
}

// WaitJetStream waits until node i answers JetStream requests, which it
// does once it knows the cluster's meta leader.
func (c *NATSCluster) WaitJetStream(i int, timeout time.Duration) {
	c.t.Helper()
	nc, err := nats.Connect(c.Nodes[i].URL(), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nats node %s: JetStream not ready within %v: %v", c.Nodes[i].spec.Name, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// freePorts returns n loopback TCP ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}
