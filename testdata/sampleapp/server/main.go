// Command sampleapp is the tiny service the integration tests run under
// Docker Compose. It is built static (CGO_ENABLED=0) and copied into a
// FROM scratch image, so it also carries its own health probe.
//
// Usage:
//
//	app              serve HTTP on :8080 (/health, /, /data and /env)
//	app worker       print a tick every second, nothing else
//	app migrate      one-shot: append "migrated to <version>" to
//	                 /data/migrations.log, exit 0
//	app seed         one-shot: write the version to /data/seeded, exit 0
//	app healthcheck  GET http://127.0.0.1:8080/health, exit 0 when it is 200
//	app proxy        reverse proxy on :8080 to $PROXY_TARGET (host:port),
//	                 resolving the host through Docker's DNS for every
//	                 request, and retrying an idempotent request once on a
//	                 connection error or a 1 s timeout, as proxies
//	                 configured for start-first rollouts do
//
// The version is $VERSION, else the content of version.txt next to the
// binary, else "unknown". FAIL_HEALTH=1 makes /health answer 500;
// REQUIRE_MIGRATION=1 makes it answer 500 until /data/migrations.log records
// the version. FAIL_MIGRATE=1 makes migrate exit 1, FAIL_SEED=1 makes seed
// exit 2. STARTUP_LOG, when set, is printed as one stdout line right after
// the "starting" line (in every mode but healthcheck), so that a test can
// make the app log a secret.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	mode := "web"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	if mode == "healthcheck" {
		os.Exit(healthcheck())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	v := version()
	fmt.Fprintf(os.Stdout, "sampleapp starting mode=%s version=%s\n", mode, v)
	if line := os.Getenv("STARTUP_LOG"); line != "" {
		// One line, as it is (a line break in it becomes a space): a
		// test puts a secret here to see that logs redacts it.
		fmt.Fprintln(os.Stdout, strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(line))
	}
	fmt.Fprintln(os.Stderr, "sampleapp warning: this is stderr")

	switch mode {
	case "web":
		go ticks(ctx, "tick")
		if err := serve(ctx, v); err != nil {
			fmt.Fprintln(os.Stderr, "sampleapp:", err)
			os.Exit(1)
		}
	case "proxy":
		if err := proxy(ctx, os.Getenv("PROXY_TARGET")); err != nil {
			fmt.Fprintln(os.Stderr, "sampleapp:", err)
			os.Exit(1)
		}
	case "worker":
		ticks(ctx, "tick")
	case "migrate":
		os.Exit(migrate(ctx, v))
	case "seed":
		os.Exit(seed(v))
	default:
		fmt.Fprintf(os.Stderr, "sampleapp: unknown mode %q (want web, worker, migrate, seed or healthcheck)\n", mode)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stdout, "sampleapp stopping")
}

// proxy serves :8080 by forwarding each request to target over a new
// connection (no keep-alive), so that each request resolves target's host
// anew: once Docker's DNS stops returning a container, no request goes to
// it. A GET or HEAD whose connection fails is sent once more.
func proxy(ctx context.Context, target string) error {
	if target == "" {
		return errors.New("proxy: set PROXY_TARGET to host:port")
	}
	// Short upstream timeouts, as a proxy in front of rollouts needs: a
	// request in flight to a container that was taken off the network
	// gets no answer, and is sent again.
	tr := &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: time.Second,
		DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var resp *http.Response
		var err error
		for try := 0; try < 2; try++ {
			req, rerr := http.NewRequestWithContext(r.Context(), r.Method, "http://"+target+r.URL.RequestURI(), r.Body)
			if rerr != nil {
				http.Error(w, rerr.Error(), http.StatusBadRequest)
				return
			}
			req.Header = r.Header.Clone()
			if resp, err = client.Do(req); err == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
				break
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxy:", err)
			http.Error(w, "bad gateway: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	return serveUntil(ctx, h)
}

// version returns $VERSION, else version.txt next to the binary.
func version() string {
	if v := strings.TrimSpace(os.Getenv("VERSION")); v != "" {
		return v
	}
	if exe, err := os.Executable(); err == nil {
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(exe), "version.txt")); err == nil {
			if v := strings.TrimSpace(string(b)); v != "" {
				return v
			}
		}
	}
	return "unknown"
}

// ticks prints "<prefix> N" every second until ctx ends.
func ticks(ctx context.Context, prefix string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fmt.Fprintf(os.Stdout, "%s %d\n", prefix, n)
		}
	}
}

// The files the one-shots write, on the volume mounted at /data.
const (
	dataDir       = "/data"
	migrationsLog = dataDir + "/migrations.log"
	seededFile    = dataDir + "/seeded"
)

// migrationTime is how long a migration takes, like a real one.
const migrationTime = 300 * time.Millisecond

// migrate is a one-shot job: it appends "migrated to <v>" to
// /data/migrations.log and returns the exit code.
func migrate(ctx context.Context, v string) int {
	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "migrate: error: interrupted")
		return 1
	case <-time.After(migrationTime):
	}
	if os.Getenv("FAIL_MIGRATE") == "1" {
		fmt.Fprintln(os.Stderr, `migrate: error: relation "users" already exists`)
		return 1
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "migrate: error:", err)
		return 1
	}
	f, err := os.OpenFile(migrationsLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "migrate: error:", err)
		return 1
	}
	_, err = fmt.Fprintf(f, "migrated to %s\n", v)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "migrate: error:", err)
		return 1
	}
	fmt.Fprintf(os.Stdout, "migrate: applied %s\n", v)
	return 0
}

// seed is a one-shot job nothing depends on: it writes the version to
// /data/seeded and returns the exit code.
func seed(v string) int {
	if os.Getenv("FAIL_SEED") == "1" {
		fmt.Fprintln(os.Stderr, "seed: error: duplicate key value violates unique constraint \"users_pkey\"")
		return 2
	}
	err := os.MkdirAll(dataDir, 0o755)
	if err == nil {
		err = os.WriteFile(seededFile, []byte(v+"\n"), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "seed: error:", err)
		return 2
	}
	fmt.Fprintln(os.Stdout, "seed: done")
	return 0
}

// migrated reports whether /data/migrations.log has a line
// "migrated to <v>".
func migrated(v string) (bool, error) {
	f, err := os.Open(migrationsLog)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	want := "migrated to " + v
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == want {
			return true, nil
		}
	}
	return false, sc.Err()
}

func serve(ctx context.Context, v string) error {
	failHealth := os.Getenv("FAIL_HEALTH") == "1"
	requireMigration := os.Getenv("REQUIRE_MIGRATION") == "1"
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if failHealth {
			http.Error(w, "failing on purpose (FAIL_HEALTH=1)", http.StatusInternalServerError)
			return
		}
		if requireMigration {
			ok, err := migrated(v)
			if err != nil {
				http.Error(w, "not migrated: "+err.Error(), http.StatusInternalServerError)
				return
			}
			if !ok {
				http.Error(w, "not migrated", http.StatusInternalServerError)
				return
			}
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/data", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(migrationsLog)
		if errors.Is(err, fs.ErrNotExist) {
			http.Error(w, "no "+migrationsLog, http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(b)
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "GREETING=%s\nAPP_ENV=%s\n", os.Getenv("GREETING"), os.Getenv("APP_ENV"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, v)
	})
	return serveUntil(ctx, logRequests(mux))
}

// serveUntil serves h on :8080 until ctx ends, then shuts down gracefully:
// the requests in flight finish.
func serveUntil(ctx context.Context, h http.Handler) error {
	srv := &http.Server{
		Addr:              ":8080",
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logRequests logs each request to stdout, except the health probes, which
// run every second and would drown the ticks.
func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || r.Header.Get("User-Agent") != probeAgent {
			fmt.Fprintf(os.Stdout, "request %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
		}
		h.ServeHTTP(w, r)
	})
}

const probeAgent = "sampleapp-healthcheck"

func healthcheck() int {
	c := &http.Client{Timeout: 2 * time.Second}
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:8080/health", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	req.Header.Set("User-Agent", probeAgent)
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stdout, "healthcheck: status", resp.Status)
		return 1
	}
	fmt.Fprintln(os.Stdout, "healthcheck: ok")
	return 0
}
