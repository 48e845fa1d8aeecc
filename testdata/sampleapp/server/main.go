// Command sampleapp is the tiny service the integration tests run under
// Docker Compose. It is built static (CGO_ENABLED=0) and copied into a
// FROM scratch image, so it also carries its own health probe.
//
// Usage:
//
//	app              serve HTTP on :8080 (/health and /)
//	app worker       print a tick every second, nothing else
//	app healthcheck  GET http://127.0.0.1:8080/health, exit 0 when it is 200
//
// The version is $VERSION, else the content of version.txt next to the
// binary, else "unknown". FAIL_HEALTH=1 makes /health answer 500.
package main

import (
	"context"
	"errors"
	"fmt"
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
	fmt.Fprintln(os.Stderr, "sampleapp warning: this is stderr")

	switch mode {
	case "web":
		go ticks(ctx, "tick")
		if err := serve(ctx, v); err != nil {
			fmt.Fprintln(os.Stderr, "sampleapp:", err)
			os.Exit(1)
		}
	case "worker":
		ticks(ctx, "tick")
	default:
		fmt.Fprintf(os.Stderr, "sampleapp: unknown mode %q (want web, worker or healthcheck)\n", mode)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stdout, "sampleapp stopping")
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

func serve(ctx context.Context, v string) error {
	failHealth := os.Getenv("FAIL_HEALTH") == "1"
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if failHealth {
			http.Error(w, "failing on purpose (FAIL_HEALTH=1)", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, v)
	})
	srv := &http.Server{
		Addr:              ":8080",
		Handler:           logRequests(mux),
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
