package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Probe sends a steady stream of GET requests to one loopback URL, to
// count the requests clients would see fail during a deploy.
type Probe struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	sent     int
	failed   int
	failures []string
	bodies   map[string]int
}

// ProbeResult is what a probe saw.
type ProbeResult struct {
	Sent, Failed int
	// Failures are the first failures (at most 10), with their time.
	Failures []string
	// Bodies counts the responses by body (the versions served).
	Bodies map[string]int
}

// StartProbe sends GET http://addr/ every 1/rate seconds (one request at
// a time at most per tick; a slow answer delays the next), each on a new
// connection, for at most limit or until Stop. A request fails when it
// gets no answer within 5 s or an answer other than 200. addr must be a
// loopback address.
func StartProbe(addr string, rate int, limit time.Duration) (*Probe, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("probe: %s is not a loopback address", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	p := &Probe{cancel: cancel, done: make(chan struct{}), bodies: map[string]int{}}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			p.once(ctx, client, "http://"+addr+"/")
		}
	}()
	return p, nil
}

func (p *Probe) once(ctx context.Context, client *http.Client, url string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if ctx.Err() != nil {
		return // stopped mid-request: not a failure of the service
	}
	why, body := "", ""
	if err != nil {
		why = err.Error()
	} else {
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		body = string(b)
		switch {
		case rerr != nil:
			why = rerr.Error()
		case resp.StatusCode != http.StatusOK:
			why = fmt.Sprintf("%s: %s", resp.Status, b)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent++
	if why != "" {
		p.failed++
		if len(p.failures) < 10 {
			p.failures = append(p.failures, time.Now().Format("15:04:05.000")+" "+why)
		}
		return
	}
	p.bodies[body]++
}

// Stop ends the probe and returns what it saw.
func (p *Probe) Stop() ProbeResult {
	p.cancel()
	<-p.done
	return p.Result()
}

// Result is what the probe saw so far.
func (p *Probe) Result() ProbeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := make(map[string]int, len(p.bodies))
	for k, v := range p.bodies {
		b[k] = v
	}
	return ProbeResult{Sent: p.sent, Failed: p.failed, Failures: append([]string(nil), p.failures...), Bodies: b}
}
