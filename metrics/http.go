package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultCheckTimeout bounds one readiness check when Ready has no timeout.
const DefaultCheckTimeout = 2 * time.Second

// Check is one readiness check: a dependency the worker needs to serve.
type Check struct {
	// Name appears in the /readyz body ("nats", "redis", "docker").
	Name string
	// Probe returns nil when the dependency answers. It must respect ctx.
	Probe func(ctx context.Context) error
}

// Ready answers /readyz: 200 when every check passes within Timeout, 503
// otherwise. The checks run concurrently; the body has one line per check,
// in order: "<name> ok" or "<name> fail: <reason>".
type Ready struct {
	Checks  []Check
	Timeout time.Duration
}

// Result is the outcome of one check.
type Result struct {
	Name string
	Err  error
}

// Run runs every check concurrently, each within the timeout, and returns
// their results in order and whether all passed.
func (r *Ready) Run(ctx context.Context) ([]Result, bool) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	res := make([]Result, len(r.Checks))
	var wg sync.WaitGroup
	for i, c := range r.Checks {
		res[i].Name = c.Name
		wg.Go(func() {
			res[i].Err = probe(ctx, c, timeout)
		})
	}
	wg.Wait()
	ok := true
	for _, x := range res {
		ok = ok && x.Err == nil
	}
	return res, ok
}

// probe runs one check, giving up at the timeout even when the probe
// itself does not return in time.
func probe(ctx context.Context, c Check, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- c.Probe(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s", timeout)
	}
}

// ServeHTTP implements http.Handler.
func (r *Ready) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	res, ok := r.Run(req.Context())
	var b strings.Builder
	for _, x := range res {
		if x.Err == nil {
			fmt.Fprintf(&b, "%s ok\n", x.Name)
		} else {
			fmt.Fprintf(&b, "%s fail: %s\n", x.Name, oneLine(x.Err.Error()))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(b.String()))
}

// Healthz answers /healthz: 200 for as long as the process serves HTTP.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// Mux returns the worker's HTTP routes: /metrics, /healthz and /readyz.
func Mux(m *Metrics, ready http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", Healthz)
	mux.Handle("GET /readyz", ready)
	return mux
}

// Server is the worker's HTTP server.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen binds addr (host:port; port 0 picks a free one) and serves h on
// it until Shutdown. Binding happens before Listen returns, so a port in
// use is reported at once.
func Listen(addr string, h http.Handler, errorLog func(error)) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10},
		ln: ln, done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && errorLog != nil {
			errorLog(err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops the server, letting requests in progress finish until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
