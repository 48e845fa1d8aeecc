package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisURLEnv names the environment variable that points the tests at an
// existing Redis instead of a redis-server child process. The database it
// selects must be a throwaway one: every test that calls Redis empties it
// (FLUSHDB) when it starts. Test binaries of different packages run in
// parallel, so run `go test -p 1` when several packages share that database.
const RedisURLEnv = "BERTH_TEST_REDIS_URL"

// redisReadyTimeout bounds the wait for a redis-server to answer PING.
const redisReadyTimeout = 10 * time.Second

// Redis returns the redis:// URL of a fresh, empty database for t.
//
// When BERTH_TEST_REDIS_URL is set, it returns that URL after emptying its
// database (see RedisURLEnv). Otherwise it starts a redis-server from PATH on
// a free loopback port, without persistence, and kills it when t ends; a
// missing redis-server skips t (fails it in CI).
func Redis(t testing.TB) string {
	t.Helper()
	Integration(t)
	if u := os.Getenv(RedisURLEnv); u != "" {
		flushDB(t, u)
		return u
	}
	return RedisProcess(t).URL
}

// flushDB empties the database of the Redis at rawURL.
func flushDB(t testing.TB, rawURL string) {
	t.Helper()
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		t.Fatalf("%s: invalid Redis URL", RedisURLEnv) // no %v: the error holds the URL and its password
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), redisReadyTimeout)
	defer cancel()
	if err := c.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("%s: FLUSHDB on Redis at %s: %v", RedisURLEnv, opts.Addr, err)
	}
}

// RedisServer is a redis-server child process that a test can stop and start
// again, to test what happens while Redis is down. It is killed when the test
// ends.
type RedisServer struct {
	// URL is the redis:// URL of the server; it stays the same across
	// Stop and Start.
	URL string

	t    testing.TB
	bin  string
	dir  string
	port int
	keep bool // append-only file, fsynced on every write
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// RedisOption adapts RedisProcess.
type RedisOption func(*RedisServer)

// KeepData makes the server persist every write (an append-only file,
// fsynced before each reply), so that its data survives Stop and Start, as
// a production Redis's would.
func KeepData() RedisOption { return func(s *RedisServer) { s.keep = true } }

// RedisProcess starts a redis-server from PATH on a free loopback port, with
// its directory in t.TempDir() and no persistence, and waits until it answers.
// It ignores BERTH_TEST_REDIS_URL: the test needs a process it controls. A
// missing redis-server skips t (fails it in CI).
func RedisProcess(t testing.TB, opts ...RedisOption) *RedisServer {
	t.Helper()
	Integration(t)
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		Unavailable(t, "redis-server is not in PATH: %v", err)
	}
	s := &RedisServer{t: t, bin: bin, dir: t.TempDir()}
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(s.Stop)
	// Another process may take the free port before redis-server binds it;
	// try a few ports.
	for attempt := 1; ; attempt++ {
		s.port = freePort(t)
		s.URL = "redis://127.0.0.1:" + strconv.Itoa(s.port) + "/0"
		err := s.start()
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatalf("start redis-server: %v", err)
		}
	}
}

// Stop kills the server and waits for it to exit. Stopping a stopped server
// does nothing.
func (s *RedisServer) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Start starts the server again on the same port and directory, and waits
// until it answers. Starting a running server does nothing. The data is not
// kept, unless the server was started with KeepData.
func (s *RedisServer) Start() {
	s.t.Helper()
	if s.cmd != nil {
		select {
		case <-s.done: // it died on its own
			s.cmd = nil
		default:
			return
		}
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("restart redis-server: %v", err)
	}
}

// start runs redis-server and waits until it answers PING.
func (s *RedisServer) start() error {
	logFile := filepath.Join(s.dir, "redis.log")
	aof := []string{"--appendonly", "no"}
	if s.keep {
		aof = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	cmd, done, err := startRedis(s.bin, append(append([]string{"--save", ""}, aof...),
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--logfile", logFile,
		"--daemonize", "no",
	), s.URL, logFile)
	if err != nil {
		return err
	}
	s.cmd, s.done = cmd, done
	return nil
}

// startRedis runs bin (redis-server or redis-sentinel) with args and waits
// until it answers PING at rawURL. done is closed when the process has
// exited. When it does not answer, it is killed and the error holds its
// log.
func startRedis(bin string, args []string, rawURL, logFile string) (cmd *exec.Cmd, done chan struct{}, err error) {
	cmd = exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	if err := waitPing(rawURL, done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		log, _ := os.ReadFile(logFile)
		return nil, nil, fmt.Errorf("%w; %s log:\n%s", err, filepath.Base(bin), log)
	}
	return cmd, done, nil
}

// waitPing pings the Redis at rawURL until it answers, the process exits
// (done is closed) or redisReadyTimeout passes.
func waitPing(rawURL string, done <-chan struct{}) error {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return err
	}
	opts.DialTimeout = 200 * time.Millisecond
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), redisReadyTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return errors.New("redis-server exited before answering PING")
		case <-ctx.Done():
			return fmt.Errorf("redis-server did not answer PING within %v: %v", redisReadyTimeout, err)
		case <-tick.C:
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
