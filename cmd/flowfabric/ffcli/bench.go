package ffcli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/internal/bench"
)

// benchFlags are the bench command's options.
type benchFlags struct {
	store      string
	sync       string
	n          int
	workers    int
	payload    int
	runs       int
	json       bool
	steady     bool
	duration   time.Duration
	load       float64
	rate       float64
	cpuProfile string
	transport  string
}

func benchCommand(ctx context.Context, args []string, out io.Writer) error {
	var f benchFlags
	fs := flag.NewFlagSet("flowfabric bench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.store, "store", "", "the store: sqlite:///path/new.db (created, and deleted after each run) or mem; default: a fresh SQLite file in a temporary directory")
	fs.StringVar(&f.sync, "sync", "", "SQLite synchronous setting, full or normal; overrides the URL's (default full)")
	fs.IntVar(&f.n, "n", 10_000, "executions to seed and drain")
	fs.IntVar(&f.workers, "workers", 16, "in-process claim→complete loops")
	fs.IntVar(&f.payload, "payload", 4096, "payload size in bytes (a JSON string)")
	fs.IntVar(&f.runs, "runs", 1, "runs, each on a fresh store; the median is printed after them")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per run (and one for the median) instead of a table")
	fs.BoolVar(&f.steady, "steady", false, "steady state: measure the drain rate R with -n executions, then create at -load × R for -duration while the workers claim and complete")
	fs.DurationVar(&f.duration, "duration", time.Minute, "steady: how long the producer runs")
	fs.Float64Var(&f.load, "load", 0.7, "steady: the producer's rate as a fraction of the measured drain rate")
	fs.Float64Var(&f.rate, "rate", 0, "steady: the producer's rate in executions/s; skips the drain measurement")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the first run's drain to this file")
	fs.StringVar(&f.transport, "transport", "inproc", "how workers reach the engine: inproc (the Go API) or http (an HTTP API server on loopback in front of the store, workers using the Go HTTP client)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	case f.n < 1 || f.workers < 1 || f.payload < 0 || f.runs < 1:
		return errors.New("bench: -n, -workers and -runs must be at least 1 and -payload at least 0")
	case f.transport != "inproc" && f.transport != "http":
		return fmt.Errorf("bench: -transport %q: want inproc or http", f.transport)
	case f.steady && (f.duration <= 0 || f.load <= 0 || f.rate < 0):
		return errors.New("bench: -duration and -load must be positive and -rate not negative")
	}
	if f.store == "" {
		dir, err := os.MkdirTemp("", "flowfabric-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		f.store = "sqlite://" + filepath.ToSlash(filepath.Join(dir, "bench.db"))
	}
	b := &benchRun{f: f, out: out, host: bench.ThisHost(), version: bench.Version()}
	if !f.steady {
		_, err := b.drains(ctx, f.runs, f.cpuProfile)
		return err
	}
	rate := f.rate
	if rate == 0 {
		median, err := b.drains(ctx, 1, f.cpuProfile)
		if err != nil {
			return err
		}
		rate = f.load * median.ThroughputPerSec
	}
	return b.steadies(ctx, rate)
}

// benchRun runs one bench command's runs and prints them.
type benchRun struct {
	f       benchFlags
	out     io.Writer
	host    bench.Host
	version string
}

// drains runs the drain scenario runs times and prints each run and their median.
func (b *benchRun) drains(ctx context.Context, runs int, cpuProfile string) (bench.Record, error) {
	var recs []bench.Record
	var tw *tabwriter.Writer
	for i := 1; i <= runs; i++ {
		s, err := openFreshStore(ctx, b.f.store, b.f.sync)
		if err != nil {
			return bench.Record{}, err
		}
		if i == 1 && !b.f.json {
			fmt.Fprintf(b.out, "submit-claim-complete: %d executions × %d-byte payload, %d %s workers claiming 1 at a time, store %s\n",
				b.f.n, b.f.payload, b.f.workers, b.workerKind(), describeStore(s))
			tw = b.table("run", "seed s", "seed/s", "drain s", "tasks/s", "p50 ms", "p95 ms", "p99 ms", "claim p50/p99", "complete p50/p99", "CPU µs/task", "errors")
		}
		cfg := bench.DrainConfig{N: b.f.n, Workers: b.f.workers, PayloadBytes: b.f.payload}
		if i == 1 && cpuProfile != "" {
			stop, err := profileDrain(&cfg, cpuProfile)
			if err != nil {
				_ = s.remove()
				return bench.Record{}, err
			}
			defer stop()
		}
		started := time.Now()
		err = b.withClient(ctx, s, func(c bench.Client) error {
			r, err := bench.Drain(ctx, c, cfg)
			if err != nil {
				return err
			}
			rec := bench.DrainRecord(r)
			b.identify(&rec, s, started, strconv.Itoa(i), runs)
			recs = append(recs, rec)
			return nil
		})
		if err != nil {
			return bench.Record{}, fmt.Errorf("run %d: %w", i, err)
		}
		rec := recs[len(recs)-1]
		if b.f.json {
			if err := b.printJSON(rec); err != nil {
				return bench.Record{}, err
			}
		} else {
			b.drainRow(tw, rec)
		}
	}
	median := bench.MedianRecord(recs)
	if runs > 1 {
		if b.f.json {
			if err := b.printJSON(median); err != nil {
				return bench.Record{}, err
			}
		} else {
			b.drainRow(tw, median)
		}
	}
	if tw != nil {
		if err := tw.Flush(); err != nil {
			return bench.Record{}, err
		}
	}
	return median, nil
}

// steadies runs the steady scenario b.f.runs times at rate and prints each run and the
// median.
func (b *benchRun) steadies(ctx context.Context, rate float64) error {
	var recs []bench.Record
	var tw *tabwriter.Writer
	for i := 1; i <= b.f.runs; i++ {
		s, err := openFreshStore(ctx, b.f.store, b.f.sync)
		if err != nil {
			return err
		}
		if i == 1 && !b.f.json {
			fmt.Fprintf(b.out, "steady-rate: a producer creates %.0f executions/s (%d-byte payload) for %s while %d %s workers claim 1 at a time and complete, store %s\n",
				rate, b.f.payload, b.f.duration, b.f.workers, b.workerKind(), describeStore(s))
			tw = b.table("run", "created", "completed/s", "claim p50 ms", "claim p95 ms", "claim p99 ms", "create→complete p50/p99 ms", "backlog at end", "errors")
		}
		started := time.Now()
		err = b.withClient(ctx, s, func(c bench.Client) error {
			r, err := bench.Steady(ctx, c, bench.SteadyConfig{Rate: rate, Duration: b.f.duration, Workers: b.f.workers, PayloadBytes: b.f.payload})
			if err != nil {
				return err
			}
			rec := bench.SteadyRecord(r)
			b.identify(&rec, s, started, strconv.Itoa(i), b.f.runs)
			rec.Config.N = 0
			rec.Config.RatePerSec = rate
			rec.Config.DurationSec = b.f.duration.Seconds()
			recs = append(recs, rec)
			return nil
		})
		if err != nil {
			return fmt.Errorf("steady run %d: %w", i, err)
		}
		rec := recs[len(recs)-1]
		if b.f.json {
			if err := b.printJSON(rec); err != nil {
				return err
			}
		} else {
			b.steadyRow(tw, rec)
		}
	}
	if b.f.runs > 1 {
		median := bench.MedianRecord(recs)
		if b.f.json {
			if err := b.printJSON(median); err != nil {
				return err
			}
		} else {
			b.steadyRow(tw, median)
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// withClient runs fn with a started client on s, then stops the client and removes the
// store.
// withClient runs fn with a client on the store: the engine in process, or, with
// -transport http, an HTTP API server on a loopback port in front of it and the Go HTTP
// client. It removes the store afterwards.
func (b *benchRun) withClient(ctx context.Context, s *freshStore, fn func(c bench.Client) error) error {
	c, err := flowfabric.NewClient(s.store, nil)
	if err != nil {
		return errors.Join(err, s.remove())
	}
	c.Start(ctx)
	defer c.Stop()
	if b.f.transport != "http" {
		return errors.Join(fn(c), s.remove())
	}
	srv, err := ffserver.New(c, ffserver.Config{})
	if err != nil {
		return errors.Join(err, s.remove())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return errors.Join(err, s.remove())
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	// Every worker keeps its connection: the default transport keeps only two idle ones
	// per host.
	tr := &http.Transport{MaxIdleConnsPerHost: b.f.workers + 8}
	remote, err := ffclient.New("http://"+ln.Addr().String(), &ffclient.Config{HTTPClient: &http.Client{Transport: tr}})
	if err == nil {
		err = fn(remote)
	}
	srv.BeginShutdown()
	_ = hs.Shutdown(context.WithoutCancel(ctx))
	tr.CloseIdleConnections()
	return errors.Join(err, s.remove())
}

// workerKind says how the workers reach the engine, for the table's heading.
func (b *benchRun) workerKind() string {
	if b.f.transport == "http" {
		return "remote (HTTP)"
	}
	return "in-process"
}

func (b *benchRun) identify(rec *bench.Record, s *freshStore, started time.Time, run string, runs int) {
	rec.Store = s.kind
	rec.StartedAt = started.UTC().Truncate(time.Millisecond)
	rec.Host = b.host
	rec.Version = b.version
	rec.Config = bench.Config{N: b.f.n, Workers: b.f.workers, PayloadBytes: b.f.payload, Sync: s.sync,
		Shards: s.store.Shards(), ClaimCount: 1, Run: run, Runs: runs}
	rec.Transport = b.f.transport
}

func (b *benchRun) printJSON(rec bench.Record) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(b.out, "%s\n", line)
	return err
}

func (b *benchRun) table(cols ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	return tw
}

func (b *benchRun) drainRow(tw *tabwriter.Writer, r bench.Record) {
	fmt.Fprintf(tw, "%s\t%.2f\t%.0f\t%.2f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f/%.2f\t%.2f/%.2f\t%.0f\t%d\t\n",
		r.Config.Run, r.Seed.Seconds, r.Seed.PerSec, r.DrainSec, r.ThroughputPerSec,
		r.LatencyMS.P50, r.LatencyMS.P95, r.LatencyMS.P99,
		r.ClaimMS.P50, r.ClaimMS.P99, r.CompleteMS.P50, r.CompleteMS.P99, r.CPUPerTaskUS, r.Errors)
}

func (b *benchRun) steadyRow(tw *tabwriter.Writer, r bench.Record) {
	fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f/%.2f\t%d\t%d\t\n",
		r.Config.Run, r.Created, r.ThroughputPerSec, r.LatencyMS.P50, r.LatencyMS.P95, r.LatencyMS.P99,
		r.CreateCompleteMS.P50, r.CreateCompleteMS.P99, *r.Backlog, r.Errors)
}

func describeStore(s *freshStore) string {
	if s.kind == "sqlite" {
		return fmt.Sprintf("sqlite %s (synchronous=%s, %d shard(s))", s.path, s.sync, s.store.Shards())
	}
	return fmt.Sprintf("%s (%d shards)", s.kind, s.store.Shards())
}

// profileDrain makes cfg write a CPU profile of its drain phase to path. The returned
// stop ends the profile if the drain never finished.
func profileDrain(cfg *bench.DrainConfig, path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	running := false
	cfg.DrainStarted = func() {
		if pprof.StartCPUProfile(f) == nil {
			running = true
		}
	}
	cfg.DrainDone = func() {
		if running {
			pprof.StopCPUProfile()
			running = false
		}
	}
	return func() {
		cfg.DrainDone()
		_ = f.Close()
	}, nil
}
