// Command demo-target is a small HTTP service used as a real Go target for
// alertprof. It exposes net/http/pprof on the default mux plus a few endpoints
// that create CPU, memory and goroutine spikes on demand, and a hand-written
// Prometheus /metrics endpoint.
//
// The workload functions (burnCPU, spin, holdMemory, parkGoroutine) are marked
// //go:noinline so their names reliably show up in captured profiles.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/* on http.DefaultServeMux
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	defaultBurnSeconds = 5
	maxBurnSeconds     = 600
	defaultBurnWorkers = 1
	maxBurnWorkers     = 64
	defaultHoldMiB     = 64
	maxHoldMiB         = 1 << 16 // 64 GiB per request, a sanity bound only
	defaultGoroutines  = 1000
	maxGoroutines      = 1000000
)

var (
	// startTime is when the process started, for process_start_time_seconds.
	startTime = time.Now()

	// sink receives spin results so the compiler cannot drop the work.
	sink uint64

	burnWorkers int64 // currently running burnCPU goroutines

	heldMu    sync.Mutex
	held      [][]byte
	heldBytes int64 // accessed atomically

	// pauseListener asks main to close the listener for a while.
	pauseListener = make(chan time.Duration, 1)

	parkMu     sync.Mutex
	parkCh     = make(chan struct{})
	parkedNum  int64 // accessed atomically
	parkedWait sync.WaitGroup
)

// spin does a fixed chunk of floating-point work and returns a value derived
// from it.
//
//go:noinline
func spin(seed uint64) uint64 {
	x := float64(seed%1000) + 1.5
	for i := 1; i <= 20000; i++ {
		x = math.Sqrt(x*x+float64(i)) * 1.0000001
		if x > 1e12 {
			x = math.Mod(x, 1e6) + 1
		}
	}
	return math.Float64bits(x)
}

// burnCPU keeps one CPU busy until the deadline.
//
//go:noinline
func burnCPU(deadline time.Time) {
	atomic.AddInt64(&burnWorkers, 1)
	defer atomic.AddInt64(&burnWorkers, -1)
	var acc uint64
	for i := uint64(0); ; i++ {
		acc ^= spin(acc + i)
		if i%16 == 0 && !time.Now().Before(deadline) {
			break
		}
	}
	atomic.AddUint64(&sink, acc)
}

// holdMemory allocates mib MiB, touches every page so it is resident, and
// keeps it referenced from a global until /release.
//
//go:noinline
func holdMemory(mib int) int {
	n := mib << 20
	buf := make([]byte, n)
	page := os.Getpagesize()
	for i := 0; i < n; i += page {
		buf[i] = byte(i/page) | 1
	}
	heldMu.Lock()
	held = append(held, buf)
	heldMu.Unlock()
	atomic.AddInt64(&heldBytes, int64(n))
	return n
}

// releaseMemory drops all held memory and returns it to the OS.
//
//go:noinline
func releaseMemory() int64 {
	heldMu.Lock()
	held = nil
	heldMu.Unlock()
	freed := atomic.SwapInt64(&heldBytes, 0)
	runtime.GC()
	debug.FreeOSMemory()
	return freed
}

// parkGoroutine blocks until ch is closed.
//
//go:noinline
func parkGoroutine(ch <-chan struct{}) {
	defer parkedWait.Done()
	defer atomic.AddInt64(&parkedNum, -1)
	<-ch
}

func startParked(n int) {
	parkMu.Lock()
	ch := parkCh
	parkedWait.Add(n)
	atomic.AddInt64(&parkedNum, int64(n))
	for i := 0; i < n; i++ {
		go parkGoroutine(ch)
	}
	parkMu.Unlock()
}

func releaseParked() int64 {
	parkMu.Lock()
	n := atomic.LoadInt64(&parkedNum)
	close(parkCh)
	parkCh = make(chan struct{})
	parkMu.Unlock()
	return n
}

// intParam parses a non-negative integer query parameter with a default and
// an upper cap. ok is false (and a 400 has been written) on bad input.
func intParam(w http.ResponseWriter, r *http.Request, name string, def, max int) (int, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, true
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		http.Error(w, fmt.Sprintf("bad %s: %q (want a non-negative integer)", name, s), http.StatusBadRequest)
		return 0, false
	}
	if v > max {
		v = max
	}
	return v, true
}

func handleBurn(w http.ResponseWriter, r *http.Request) {
	secs, ok := intParam(w, r, "seconds", defaultBurnSeconds, maxBurnSeconds)
	if !ok {
		return
	}
	workers, ok := intParam(w, r, "workers", defaultBurnWorkers, maxBurnWorkers)
	if !ok {
		return
	}
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for i := 0; i < workers; i++ {
		go burnCPU(deadline)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "burning %d worker(s) for %ds\n", workers, secs)
}

// handleWork does n rounds of main.spin (about 0.1 ms each) and answers with the result:
// a request's worth of CPU, for load tests that measure what profiling costs.
func handleWork(w http.ResponseWriter, r *http.Request) {
	n, ok := intParam(w, r, "n", 10, 10000)
	if !ok {
		return
	}
	var acc uint64
	for i := 0; i < n; i++ {
		acc ^= spin(acc + uint64(i))
	}
	fmt.Fprintf(w, "%d\n", acc)
}

func handleHold(w http.ResponseWriter, r *http.Request) {
	mib, ok := intParam(w, r, "mb", defaultHoldMiB, maxHoldMiB)
	if !ok {
		return
	}
	n := holdMemory(mib)
	// Complete a GC cycle so the heap profile snapshot includes this
	// allocation right away (heap profiles reflect the last finished GC).
	runtime.GC()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "holding %d more bytes, %d in total\n", n, atomic.LoadInt64(&heldBytes))
}

func handleRelease(w http.ResponseWriter, r *http.Request) {
	freed := releaseMemory()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "released %d bytes\n", freed)
}

func handleGoroutines(w http.ResponseWriter, r *http.Request) {
	n, ok := intParam(w, r, "n", defaultGoroutines, maxGoroutines)
	if !ok {
		return
	}
	startParked(n)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "parked %d goroutine(s), %d parked in total\n", n, atomic.LoadInt64(&parkedNum))
}

func handleReleaseGoroutines(w http.ResponseWriter, r *http.Request) {
	n := releaseParked()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "released %d goroutine(s)\n", n)
}

// procCPUSeconds returns utime+stime of this process in seconds from
// /proc/self/stat (fields 14 and 15, in clock ticks; CLK_TCK is 100 on Linux).
func procCPUSeconds() (float64, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// Field 2 (comm) is parenthesised and may contain spaces; fields after the
	// last ')' start at field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseUint(f[14-3], 10, 64)
	stime, err2 := strconv.ParseUint(f[15-3], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return float64(utime+stime) / 100, true
}

// procRSSBytes returns the resident set size from /proc/self/statm.
func procRSSBytes() (float64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return float64(pages) * float64(os.Getpagesize()), true
}

func writeMetric(b *bytes.Buffer, name, typ, help string, v float64) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n%s %s\n",
		name, help, name, typ, name, strconv.FormatFloat(v, 'g', -1, 64))
}

func handleMetrics(w http.ResponseWriter, r *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var b bytes.Buffer
	writeMetric(&b, "go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	writeMetric(&b, "go_threads", "gauge", "Number of OS threads created.", float64(pprof.Lookup("threadcreate").Count()))
	writeMetric(&b, "go_memstats_heap_inuse_bytes", "gauge", "Number of heap bytes that are in use.", float64(ms.HeapInuse))
	writeMetric(&b, "go_memstats_heap_alloc_bytes", "gauge", "Number of heap bytes allocated and still in use.", float64(ms.HeapAlloc))
	writeMetric(&b, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", float64(startTime.UnixNano())/1e9)
	writeMetric(&b, "go_memstats_sys_bytes", "gauge", "Number of bytes obtained from system.", float64(ms.Sys))
	if v, ok := procCPUSeconds(); ok {
		writeMetric(&b, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", v)
	}
	if v, ok := procRSSBytes(); ok {
		writeMetric(&b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", v)
	}
	writeMetric(&b, "demo_held_bytes", "gauge", "Bytes currently held by /hold.", float64(atomic.LoadInt64(&heldBytes)))
	writeMetric(&b, "demo_parked_goroutines", "gauge", "Goroutines currently parked by /goroutines.", float64(atomic.LoadInt64(&parkedNum)))
	writeMetric(&b, "demo_burn_workers", "gauge", "burnCPU workers currently running.", float64(atomic.LoadInt64(&burnWorkers)))
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

const helpText = `demo-target: a Go service for alertprof to profile

  GET /                              this help
  GET /burn?seconds=N&workers=K      spin K goroutines in main.burnCPU for N s (default 5 s, 1; caps 600, 64); answers 202
  GET /work?n=N                      N rounds of main.spin (about 0.1 ms each), answered (default 10)
  GET /hold?mb=N                     allocate and keep N MiB in main.holdMemory (default 64)
  GET /release                       drop held memory, runtime.GC, debug.FreeOSMemory
  GET /goroutines?n=N                park N goroutines in main.parkGoroutine (default 1000, cap 1000000)
  GET /release-goroutines            let parked goroutines exit
  GET /pause-listener?seconds=N      close the listener for N s (default 4, cap 600), as a restart of
                                     the HTTP server would; the process lives on
  GET /metrics                       Prometheus text metrics
  GET /debug/pprof/                  net/http/pprof (profile, heap, goroutine, trace, ...)
`

func handlePauseListener(w http.ResponseWriter, r *http.Request) {
	secs, ok := intParam(w, r, "seconds", 4, 600)
	if !ok {
		return
	}
	select {
	case pauseListener <- time.Duration(secs) * time.Second:
		fmt.Fprintf(w, "closing the listener for %d s\n", secs)
	default:
		http.Error(w, "the listener is being paused already", http.StatusConflict)
	}
}

func handleIndex(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(helpText))
}

func main() {
	listen := flag.String("listen", "127.0.0.1:6060", "address to listen on")
	contention := flag.Bool("contention", false, "enable block and mutex profiling (rate 1)")
	flag.Parse()
	log.SetFlags(0)

	if *contention {
		runtime.SetBlockProfileRate(1)
		runtime.SetMutexProfileFraction(1)
	}

	mux := http.DefaultServeMux
	mux.HandleFunc("/", handleIndex)
	mux.HandleFunc("/burn", handleBurn)
	mux.HandleFunc("/work", handleWork)
	mux.HandleFunc("/hold", handleHold)
	mux.HandleFunc("/release", handleRelease)
	mux.HandleFunc("/goroutines", handleGoroutines)
	mux.HandleFunc("/release-goroutines", handleReleaseGoroutines)
	mux.HandleFunc("/metrics", handleMetrics)
	mux.HandleFunc("/pause-listener", handlePauseListener)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("demo-target: listen %s: %v", *listen, err)
	}
	log.Printf("demo-target listening on %s", ln.Addr())

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	for {
		go func(ln net.Listener) { errc <- srv.Serve(ln) }(ln)
		select {
		case sig := <-sigc:
			log.Printf("demo-target: got %v, shutting down", sig)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := srv.Shutdown(ctx); err != nil {
				log.Printf("demo-target: shutdown: %v", err)
				_ = srv.Close()
			}
			cancel()
			return
		case err := <-errc:
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Fatalf("demo-target: serve: %v", err)
			}
			return
		case pause := <-pauseListener:
			// New connections are refused until the listener is back; idle ones are
			// closed, so clients find out.
			addr := ln.Addr().String()
			srv.SetKeepAlivesEnabled(false)
			_ = ln.Close()
			<-errc
			log.Printf("demo-target: listener closed for %v", pause)
			time.Sleep(pause)
			srv.SetKeepAlivesEnabled(true)
			if ln, err = net.Listen("tcp", addr); err != nil {
				log.Fatalf("demo-target: listen %s again: %v", addr, err)
			}
			log.Printf("demo-target listening again on %s", ln.Addr())
		}
	}
}
