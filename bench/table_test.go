package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rounds is how many timed rounds a row runs (after its warm-up rounds);
// BENCH_QUICK=1 cuts them to a smoke test.
func rounds(n int) int {
	if os.Getenv("BENCH_QUICK") != "" {
		return max(1, n/5)
	}
	return n
}

// row is one line of the table.
type row struct {
	id, work     string
	berth, comp  string
	ratio, goal  string
	pass         bool
	measuredOnly bool // no goal to check
}

// series is one set of samples, for the details under the table.
type series struct {
	name string
	ds   []time.Duration
}

// BenchmarkTable measures every row of the performance table once (run it
// with -benchtime 1x: `bash bench/run`) and prints the table and the
// spread of each sample set.
func BenchmarkTable(b *testing.B) {
	start := time.Now()
	load0 := loadAvg()
	e := newEnv(b)
	var rows []row
	var all []series
	var notes []string
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: [%s] %s\n", time.Since(start).Round(time.Second), fmt.Sprintf(format, args...))
	}
	progress("worker built and ready in %v; bringing up the sample apps", e.w.readyIn.Round(time.Millisecond))
	e.needApp()
	e.needHand()
	e.needFlood()
	e.floorRoundTrip()

	// P1: cached status vs the JetStream floor vs compose ps.
	progress("P1 cached status")
	var misses atomic.Int64
	r := interleave(b, 3, rounds(51), e.statusBerth(false, &misses), e.floorRoundTrip(), e.composePS())
	all = append(all, series{"P1 berth status (cached)", r[0]}, series{"P1 jetstream floor", r[1]}, series{"P1 docker compose ps", r[2]})
	rows = append(rows,
		ratioRow("P1a", "status, cached: publish → result event", r[0], r[1], "bare JetStream round trip", 3, "≤ 3× floor"),
		ratioRow("P1b", "status, cached (same samples)", r[0], r[2], "`docker compose ps --format json`", 1.0/50, "≥ 50× faster (≤ 0.02×)"))
	notes = append(notes, fmt.Sprintf("P1: %d of %d Berth status results were not served from the cache (the 10 s status TTL expired)", misses.Load(), len(r[0])))

	progress("P2 uncached status")
	r = interleave(b, 3, rounds(51), e.statusBerth(true, nil), e.dockerAPI(), e.echoRoundTrip())
	all = append(all, series{"P2 berth status (refresh)", r[0]}, series{"P2 docker API list+inspect", r[1]}, series{"P2 echo floor round trip", r[2]})
	rows = append(rows, ownCostRow(r[0], r[1], r[2]))
	notes = append(notes, fmt.Sprintf("P2: Berth %s, echo floor %s (1 in flight), Docker API %s; plain ratio Berth / Docker API %.2f×",
		fmtDur(median(r[0])), fmtDur(median(r[2])), fmtDur(median(r[1])), float64(median(r[0]))/float64(median(r[1]))))

	progress("P6 logs tail 10 000")
	r = interleave(b, 2, rounds(21), e.logsBerth(), e.logsDocker())
	all = append(all, series{"P6 berth logs tail 10000", r[0]}, series{"P6 docker logs --tail 10000", r[1]})
	rows = append(rows, ratioRow("P6", "logs, tail 10 000 lines", r[0], r[1], "`docker logs --tail 10000`", 1.0, "≤ 1.0×"))

	progress("P7 sustained cached status against the echo floor")
	tp := e.statusVsEcho(b, max(2, rounds(4)), 2*time.Second, 5*time.Second)
	ratio, peak := tp.ratio(), int64(medianOf(tp.berth, rssPeak))
	rows = append(rows,
		row{id: "P7a", work: fmt.Sprintf("sustained cached status, %d in flight, %d cores, against the echo floor (same round trip, nothing else)", throughputInFlight, runtime.NumCPU()),
			berth: fmt.Sprintf("%.0f /s", medianOf(tp.berth, perSec)), comp: fmt.Sprintf("%.0f /s (echo)", medianOf(tp.echo, perSec)),
			ratio: fmt.Sprintf("%.1f %%", 100*ratio), goal: "≥ 25 % of the floor", pass: ratio >= 0.25},
		row{id: "P7b", work: "worker RSS under that load (peak of 100 ms samples)",
			berth: fmtMB(peak), comp: "—", ratio: "—", goal: "≤ 60 MB", pass: peak <= 60<<20})
	notes = append(notes, tp.note())
	progress("%s", tp.note())

	progress("P5 deploy end to end")
	steps, handSteps := map[string][]int64{}, map[string][]int64{}
	r = interleave(b, 1, rounds(7), e.deployBerth(steps), e.deployHand(handSteps))
	dropWarm(steps, 1)
	dropWarm(handSteps, 1)
	all = append(all, series{"P5 berth deploy (plan+confirm)", r[0]}, series{"P5 hand script", r[1]})
	rows = append(rows, ratioRow("P5", "deploy end to end, sample app, one-line change (plan + confirm + result)", r[0], r[1], "rsync + `compose build` + `up -d --wait`", 1.10, "≤ 1.10×"))
	if v := steps["verify"]; len(v) > 0 {
		verify := time.Duration(medianInt(v)) * time.Millisecond
		notes = append(notes, fmt.Sprintf("P5: Berth's median deploy less its median verify step (%s; the sample app's worker has no healthcheck, so it must run unchanged for the stabilisation window, 3 s from its start) over the hand script: %.2f×",
			fmtDur(verify), float64(median(r[0])-verify)/float64(median(r[1]))))
	}

	progress("P9 start-first vs recreate, probed")
	rt, sf, rc := e.rolloutCompare(b, rounds(5))
	all = append(all, series{"P9 deploy, start-first", rt[0]}, series{"P9 deploy, recreate", rt[1]})
	rows = append(rows, rolloutRow(rt, sf, rc))
	notes = append(notes, rolloutNote(sf, rc))

	progress("generating the deploy tree")
	e.needTree()
	progress("P3 deploy plan")
	r = interleave(b, 1, rounds(11), e.planBerth(), e.planRsync())
	all = append(all, series{"P3 filesync.Diff", r[0]}, series{"P3 rsync --dry-run", r[1]})
	rows = append(rows, ratioRow("P3", "deploy plan: filesync.Diff in-process, 20 000 files / 300 MB, 50 changed", r[0], r[1], "`rsync -a --dry-run --itemize-changes`", 0.5, "≤ 0.5×"))

	progress("P4 deploy sync")
	r = interleave(b, 1, rounds(11), e.syncBerth(), e.syncRsync())
	all = append(all, series{"P4 filesync.Apply", r[0]}, series{"P4 rsync -a", r[1]})
	rows = append(rows, ratioRow("P4", "deploy sync of the 50 files: filesync.Apply in-process", r[0], r[1], "`rsync -a`", 1.0, "≤ 1.0×"))

	progress("P8 worker start and idle RSS")
	sr := e.startups(b, rounds(5), 3*time.Second)
	all = append(all, series{"P8 start to ready", sr.ready})
	idle := medianInt(sr.rss)
	ready := median(sr.ready)
	rows = append(rows,
		row{id: "P8a", work: "worker idle RSS (3 s after ready)", berth: fmtMB(idle), comp: "—", ratio: "—", goal: "≤ 25 MB", pass: idle <= 25<<20},
		row{id: "P8b", work: "worker start → `worker ready` log line (external NATS and Redis)", berth: fmtDur(ready), comp: "—", ratio: "—", goal: "≤ 300 ms", pass: ready <= 300*time.Millisecond})

	progress("P11 status under hostile follows (%ds of follows)", hostileFollowS)
	fr := e.statusUnderFollows(b, time.Duration(rounds(5))*time.Second, false)
	all = append(all, series{"P11 U1 status, nothing else running (a)", fr.a}, series{"P11 U1 status during U2's follows (b)", fr.b})
	rows = append(rows, followsRow(fr))
	notes = append(notes, followsNote(fr))

	var sb strings.Builder
	printTable(&sb, rows)
	fmt.Fprintln(&sb)
	printDetails(&sb, all, sr)
	printSteps(&sb, "P5 Berth deploy steps (its result's steps_ms), median ms:", steps)
	printSteps(&sb, "P5 hand script steps, median ms:", handSteps)
	for _, n := range notes {
		fmt.Fprintln(&sb, n)
	}
	fmt.Fprintf(&sb, "\n%d cores, %s/%s, %s; whole run %v; load average at the start %s, at the end %s\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), time.Since(start).Round(time.Second), load0, loadAvg())
	fmt.Print("\n" + sb.String())
	if p := os.Getenv("BENCH_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
			b.Error(err)
		}
	}
	for _, rw := range rows {
		b.ReportMetric(boolMetric(rw.pass), rw.id+"-pass")
	}
}

// dropWarm removes the samples of the warm-up rounds from per-step
// timings (every run reports every step).
func dropWarm(steps map[string][]int64, warm int) {
	for k, v := range steps {
		steps[k] = v[min(warm, len(v)):]
	}
}

// loadAvg is the 1, 5 and 15 minute load averages, from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func boolMetric(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

func ratioRow(id, work string, berth, comp []time.Duration, compName string, goal float64, goalText string) row {
	mb, mc := median(berth), median(comp)
	ratio := float64(mb) / float64(mc)
	return row{id: id, work: work, berth: fmtDur(mb), comp: fmtDur(mc) + " (" + compName + ")",
		ratio: fmtRatio(ratio), goal: goalText, pass: ratio <= goal}
}

// ownCostRow is P2: the worker's own cost of an uncached status, (Berth −
// echo floor) / Docker API, from the medians of the three sample sets.
func ownCostRow(berth, docker, floor []time.Duration) row {
	mb, md, mf := median(berth), median(docker), median(floor)
	ratio := float64(mb-mf) / float64(md)
	return row{id: "P2", work: "status, uncached (`refresh: true`), less the echo floor",
		berth: fmtDur(mb) + " − " + fmtDur(mf) + " (echo floor)", comp: fmtDur(md) + " (Docker API list + inspect, in-process)",
		ratio: fmtRatio(ratio), goal: "≤ 1.2×", pass: ratio <= 1.2}
}

func fmtRatio(r float64) string {
	if r < 0.1 {
		return fmt.Sprintf("%.3f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

func printTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| id | work | Berth (median) | comparison (median) | ratio | goal | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range rows {
		res := "**fail**"
		if r.pass {
			res = "pass"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.id, r.work, r.berth, r.comp, r.ratio, r.goal, res)
	}
}

func printSteps(w io.Writer, title string, steps map[string][]int64) {
	if len(steps) == 0 {
		return
	}
	var names []string
	for k := range steps {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprint(w, title)
	for _, k := range names {
		fmt.Fprintf(w, " %s %d;", k, medianInt(steps[k]))
	}
	fmt.Fprintln(w)
}

func printDetails(w io.Writer, all []series, sr startResult) {
	fmt.Fprintln(w, "| samples | n | min | median | p90 | max |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, s := range all {
		ds := slices.Clone(s.ds)
		slices.Sort(ds)
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s |\n", s.name, len(ds), fmtDur(ds[0]), fmtDur(median(ds)), fmtDur(quantile(ds, 0.9)), fmtDur(ds[len(ds)-1]))
	}
	if len(sr.rss) > 0 {
		fmt.Fprint(w, "P8 idle RSS per start:")
		for _, v := range sr.rss {
			fmt.Fprintf(w, " %s;", fmtMB(v))
		}
		fmt.Fprintln(w)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func medianInt(vs []int64) int64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// quantile is the nearest-rank quantile of sorted ds.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func fmtMB(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

// followsRow is P11's line: p50 and p99 of U1's status with U2's follows
// running (b) and with nothing else running (a).
func followsRow(fr followsResult) row {
	p99a, p99b, ratio := fr.p99()
	return row{id: "P11", work: fmt.Sprintf("status under hostile follows: cached status of project app by viewer U1 while viewer U2 sends %d `logs` with `follow_s` %d on another project (%d ran, %d refused)",
		hostileFollows, hostileFollowS, fr.ran, fr.refused),
		berth: fmt.Sprintf("p50 %s, p99 %s", fmtDur(median(fr.b)), fmtDur(p99b)),
		comp:  fmt.Sprintf("p50 %s, p99 %s (nothing else running)", fmtDur(median(fr.a)), fmtDur(p99a)),
		ratio: fmtRatio(ratio) + " (p99)", goal: "p99(b) ≤ 1.5 × p99(a) + 5 ms", pass: fr.pass()}
}

func followsNote(fr followsResult) string {
	p99a, p99b, _ := fr.p99()
	burstMax := time.Duration(0)
	for _, d := range fr.burstSamples {
		burstMax = max(burstMax, d)
	}
	return fmt.Sprintf("P11: U2's %d follows: %d ran (each followed %.1f s or more; %d log lines to U2), %d refused with conflict; all were accepted or refused %s after U2's first publish, and %d status samples overlapped that (max %s); "+
		"p99 (a) %s over %d samples (before and after the follows), p99 (b) %s over %d samples in %s; results not from the cache: (a) %d, (b) %d",
		hostileFollows, fr.ran, fr.followedS, fr.lines, fr.refused, fmtDur(fr.burst), len(fr.burstSamples), fmtDur(burstMax),
		fmtDur(p99a), len(fr.a), fmtDur(p99b), len(fr.b), fr.bWindow.Round(100*time.Millisecond), fr.aMisses, fr.bMisses)
}
