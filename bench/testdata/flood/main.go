// Command flood is the container of the logs benchmark (row P6): it prints
// N log lines (default 10 000, about 130 bytes each, every 50th on stderr)
// as fast as it can, then waits for SIGTERM. It is built static and copied
// into a FROM scratch image, like the sample app.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	n := 10000
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Fprintf(os.Stderr, "flood: bad line count %q\n", os.Args[1])
			os.Exit(2)
		}
		n = v
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)

	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	base := time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)
	methods := []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	for i := 1; i <= n; i++ {
		ts := base.Add(time.Duration(i) * 7 * time.Millisecond).Format("2006-01-02T15:04:05.000Z")
		if i%50 == 0 {
			out.Flush()
			fmt.Fprintf(os.Stderr, "%s WARN  slow request id=%07d path=/api/v1/reports/%d duration_ms=%d threshold_ms=500\n",
				ts, i, i%997, 500+i%1500)
			continue
		}
		fmt.Fprintf(out, "%s INFO  http request id=%07d method=%s path=/api/v1/items/%d status=200 bytes=%d duration_ms=%d ua=\"bench/1.0\"\n",
			ts, i, methods[i%len(methods)], i%9973, 200+i*37%9000, i%97)
	}
	out.Flush()
	<-stop
}
