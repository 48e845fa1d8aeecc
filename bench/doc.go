// Package bench is Berth's performance benchmark suite. It holds no code of
// its own outside the tests: `bash bench/run` runs BenchmarkTable, which
// measures every row of the performance table against its comparison and
// prints the table; the other benchmarks expose each comparison on its own
// for `go test -bench`. See README.md. Under a plain `go test ./bench` (no
// -bench) nothing runs.
package bench
