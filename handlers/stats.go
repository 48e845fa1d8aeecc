package handlers

import (
	"cmp"
	"context"
	"sync"
	"time"

	"github.com/berth-ops/berth"
)

// containerUse is what status shows of a container's resource use.
type containerUse struct {
	// CPUPercent is the share of one CPU used between the last two
	// samples (100 = one full CPU); nil after the first sample.
	CPUPercent *float64
	MemBytes   uint64
	MemLimit   uint64
	At         time.Time
}

// statsSampler keeps the last resource samples of running containers. The
// engine's stats take far longer than an inspect (tenths of a second
// under load, and CPU in the Docker daemon), so a status never waits for
// them: it shows the samples taken so far, and asks for fresh ones in the
// background, at most one per container every statsInterval, so a burst
// of statuses does not keep the daemon busy sampling.
type statsSampler struct {
	mu       sync.Mutex
	last     map[string]*berth.ContainerStats // by container id
	use      map[string]containerUse
	inFlight map[string]bool
	asked    map[string]time.Time // when a sample was last asked for
	// interval is the least time between two samples of a container;
	// zero means statsInterval.
	interval time.Duration
}

// statsInterval is the least time between two samples of a container.
const statsInterval = 5 * time.Second

// current returns the container's last known use.
func (s *statsSampler) current(id string) (containerUse, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.use[id]
	return u, ok
}

// refresh samples the running containers in the background (at most one
// sample in flight per container, a few at a time), and forgets
// containers that are gone.
func (s *statsSampler) refresh(ctx context.Context, engine berth.Engine, project []berth.Container) {
	s.mu.Lock()
	if s.last == nil {
		s.last, s.use, s.inFlight, s.asked = map[string]*berth.ContainerStats{}, map[string]containerUse{}, map[string]bool{}, map[string]time.Time{}
	}
	now := time.Now()
	var ids []string
	for _, c := range project {
		if c.State == "running" && !s.inFlight[c.ID] && now.Sub(s.asked[c.ID]) >= cmp.Or(s.interval, statsInterval) {
			s.inFlight[c.ID] = true
			s.asked[c.ID] = now
			ids = append(ids, c.ID)
		}
	}
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	go func() {
		defer cancel()
		sem := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				st, err := engine.Stats(ctx, id)
				s.mu.Lock()
				defer s.mu.Unlock()
				delete(s.inFlight, id)
				if err != nil || st == nil {
					return
				}
				s.record(id, st)
			}()
		}
		wg.Wait()
	}()
}

// record takes a sample: the CPU percentage is computed against the
// previous one, as docker stats does. The caller holds s.mu.
func (s *statsSampler) record(id string, st *berth.ContainerStats) {
	u := containerUse{MemBytes: st.MemUsage, MemLimit: st.MemLimit, At: st.Read}
	if prev := s.last[id]; prev != nil && st.SystemCPU > prev.SystemCPU && st.CPUTotal >= prev.CPUTotal {
		cpus := float64(max(st.OnlineCPUs, 1))
		pct := float64(st.CPUTotal-prev.CPUTotal) / float64(st.SystemCPU-prev.SystemCPU) * cpus * 100
		u.CPUPercent = &pct
	}
	s.last[id], s.use[id] = st, u
	if len(s.last) > 4096 {
		// A long-running worker sees many containers come and go.
		for k := range s.last {
			if k != id {
				delete(s.last, k)
				delete(s.use, k)
				delete(s.asked, k)
				break
			}
		}
	}
}
