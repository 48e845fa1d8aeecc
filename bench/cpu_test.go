package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU is the user + system CPU time a process has used so far, from
// /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 (state) on
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// machineCPU is the busy and total CPU time of the machine, all cores,
// from /proc/stat.
func machineCPU() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat")
	}
	var sum, idle int64
	for i, s := range f[1:] {
		if i >= 8 { // guest times are already in user and nice
			break
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		sum += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return time.Duration(sum-idle) * clockTick, time.Duration(sum) * clockTick, nil
}

// findRedisPID finds the redis-server process listening on the port of
// url, by its command line.
func findRedisPID(url string) int {
	port := url[strings.LastIndexByte(url, ':')+1:]
	port, _, _ = strings.Cut(port, "/")
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		// redis-server rewrites its command line to "redis-server
		// 127.0.0.1:PORT" once it runs.
		if bytes.Contains(b, []byte("redis-server")) && (bytes.Contains(b, []byte("--port\x00"+port+"\x00")) ||
			bytes.Contains(b, []byte(":"+port+"\x00")) || bytes.Contains(b, []byte(":"+port+" "))) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			return pid
		}
	}
	return 0
}

// cpuMeter measures the CPU used between two points by the worker,
// redis-server, this process (nats-server runs in it, with the load
// generator) and the whole machine.
type cpuMeter struct {
	pids        map[string]int
	start       map[string]time.Duration
	busy, total time.Duration
	at          time.Time
}

func newCPUMeter(pids map[string]int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: map[string]time.Duration{}, at: time.Now()}
	for name, pid := range pids {
		m.start[name], _ = procCPU(pid)
	}
	m.busy, m.total, _ = machineCPU()
	return m
}

// report says how many cores each process used since newCPUMeter.
func (m *cpuMeter) report(names ...string) string {
	wall := time.Since(m.at)
	var parts []string
	var known time.Duration
	for _, name := range names {
		pid := m.pids[name]
		if pid == 0 {
			continue
		}
		now, err := procCPU(pid)
		if err != nil {
			continue
		}
		d := now - m.start[name]
		known += d
		parts = append(parts, fmt.Sprintf("%s %.2f", name, d.Seconds()/wall.Seconds()))
	}
	busy, total, err := machineCPU()
	if err == nil && total > m.total {
		cores := float64(total-m.total) / float64(wall)
		b := float64(busy-m.busy) / float64(wall)
		parts = append(parts, fmt.Sprintf("other processes %.2f; machine busy %.2f of %.0f cores", max(0, b-known.Seconds()/wall.Seconds()), b, cores))
	}
	return "cores used: " + strings.Join(parts, ", ")
}

// used is the CPU time a process used since newCPUMeter.
func (m *cpuMeter) used(name string) time.Duration {
	now, err := procCPU(m.pids[name])
	if err != nil {
		return 0
	}
	return now - m.start[name]
}
