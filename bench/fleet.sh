#!/usr/bin/env bash
# P10: the fleet simulation (cmd/worker TestFleetSimulation) with workers
# built without the race detector, for throughput and latency: three
# workers as three hosts on a 3-node NATS cluster (three replicas), 100
# projects, 10 000 mixed commands and queries from 20 clients, one worker
# killed mid-run and restarted. Prints the P10 lines: per host, commands
# per second with p50/p99, queries with p50/p99, and the exactly-once
# counts. BERTH_SIM_OPS and BERTH_SIM_SEED are passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -v -timeout 20m -run '^TestFleetSimulation$' ./cmd/worker/ |
	grep -E 'fleetsim_test.go|^(--- |ok|FAIL)'
