package ffcli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/internal/bench"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// benchFlags are the bench command's options.
type benchFlags struct {
	scenario    string
	store       string
	sync        string
	n           int
	workers     int
	payload     int
	runs        int
	json        bool
	duration    time.Duration
	load        float64
	rate        float64
	depth       int
	refill      int
	refillEvery time.Duration
	deadline    time.Duration
	leaseTTL    time.Duration
	taskTime    time.Duration
	window      time.Duration
	cpuProfile  string
	memProfile  string
	transport   string
	pipeline    bool
}

// scenarioDefaults are the -n, -workers, -payload and -duration a scenario runs with when
// they are not given; ok is false for an unknown scenario.
func scenarioDefaults(scenario string) (n, workers, payload int, duration time.Duration, ok bool) {
	switch scenario {
	case "drain":
		return 10_000, 16, 4096, 0, true
	case "burn-down":
		return 100_000, 2000, 0, 0, true
	case "steady-rate", "steady-depth":
		return 10_000, 16, 4096, time.Minute, true
	case "steady-state":
		return 10_000, 100, 0, 5 * time.Minute, true
	}
	return 0, 0, 0, 0, false
}

func benchCommand(ctx context.Context, args []string, out io.Writer) error {
	var f benchFlags
	fs := flag.NewFlagSet("flowfabric bench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.scenario, "scenario", "drain", "drain (submit-claim-complete), burn-down (empty payloads drained by many workers, like river bench), "+
		"steady-rate (a producer at a fixed rate), steady-depth (a producer keeping a fixed backlog) or steady-state (SDK workers, slow tasks, deadlines)")
	fs.StringVar(&f.store, "store", "", "the store: mem: (or mem), sqlite:///path/new.db (created, and deleted after each run), postgres://… (a fresh schema per run) or redis://… (a fresh key prefix per run); default: a fresh SQLite file in a temporary directory")
	fs.StringVar(&f.sync, "sync", "", "SQLite synchronous setting, full or normal; overrides the URL's (default full)")
	fs.IntVar(&f.n, "n", 0, "executions to seed: drain 10000, burn-down 100000, steady-state 10000; steady-rate measures its rate with a drain of n (10000)")
	fs.IntVar(&f.workers, "workers", 0, "workers: claim→complete loops (drain 16, burn-down 2000, steady-rate and steady-depth 16), or the SDK worker's task slots (steady-state 100)")
	fs.IntVar(&f.payload, "payload", 0, fmt.Sprintf("payload size in bytes, a JSON string, at most %d (burn-down and steady-state 0, otherwise 4096)", engine.DefaultMaxPayloadBytes))
	fs.IntVar(&f.runs, "runs", 1, "runs, each on a fresh store; the median is printed after them")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per run (and one for the median) instead of a table and a progress bar")
	fs.DurationVar(&f.duration, "duration", 0, "steady-rate, steady-depth and steady-state: how long the producer runs (1m; steady-state 5m)")
	fs.Float64Var(&f.load, "load", 0.7, "steady-rate: the producer's rate as a fraction of the drain rate measured first")
	fs.Float64Var(&f.rate, "rate", 0, fmt.Sprintf("steady-rate: the producer's rate in executions/s, at most %d; skips the drain measurement", bench.MaxRate))
	fs.IntVar(&f.depth, "depth", 1000, "steady-depth: the backlog (created, not yet claimed) the producer keeps")
	fs.IntVar(&f.refill, "refill", 20, "steady-state: executions created every -refill-every")
	fs.DurationVar(&f.refillEvery, "refill-every", 10*time.Second, "steady-state: how often -refill executions are created")
	fs.DurationVar(&f.deadline, "deadline", time.Minute, "steady-state: each execution's deadline, from its creation")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", 6*time.Second, "steady-state: the workers' lease TTL (the SDK renews every third of it)")
	fs.DurationVar(&f.taskTime, "task-time", 3*time.Second, "steady-state: how long each task takes")
	fs.DurationVar(&f.window, "window", time.Minute, fmt.Sprintf("steady-state: the end of the run steady throughput is measured over; steady-rate and steady-depth: the windows Claim p99 is reported for, one after another (at most %d in -duration), to show whether it creeps", bench.MaxWindows))
	fs.BoolVar(&f.pipeline, "pipeline", true, "drain, burn-down, steady-rate and steady-depth: each worker claims its next execution while its last completion is in flight (at most one); -pipeline=false waits for each completion first")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the first run's drain to this file (drain, burn-down)")
	fs.StringVar(&f.memProfile, "memprofile", "", "write heap profiles of the first run to this file at the drain's end and to this file + \".base\" at its start; go tool pprof -sample_index=alloc_space -base FILE.base FILE shows what the drain allocated (drain, burn-down)")
	fs.StringVar(&f.transport, "transport", "inproc", "how workers reach the engine: inproc (the Go API) or http (an HTTP API server on loopback in front of the store, workers using the Go HTTP client)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	n, workers, payload, duration, ok := scenarioDefaults(f.scenario)
	if !ok {
		return fmt.Errorf("bench: -scenario %q: want drain, burn-down, steady-rate, steady-depth or steady-state", f.scenario)
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	if !given["n"] {
		f.n = n
	}
	if !given["workers"] {
		f.workers = workers
	}
	if !given["payload"] {
		f.payload = payload
	}
	if !given["duration"] {
		f.duration = duration
	}
	timed := duration > 0
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	case f.n < 1 || f.workers < 1 || f.payload < 0 || f.runs < 1:
		return errors.New("bench: -n, -workers and -runs must be at least 1 and -payload at least 0")
	case f.payload > engine.DefaultMaxPayloadBytes: // the engine would refuse it, once allocated
		return fmt.Errorf("bench: -payload %d: the engine takes payloads of at most %d bytes", f.payload, engine.DefaultMaxPayloadBytes)
	case f.transport != "inproc" && f.transport != "http":
		return fmt.Errorf("bench: -transport %q: want inproc or http", f.transport)
	case timed && f.duration <= 0:
		return errors.New("bench: -duration must be positive")
	case f.scenario == "steady-rate" && !(f.load > 0 && !math.IsInf(f.load, 1)): // NaN is not > 0
		return fmt.Errorf("bench: -load %g: want a positive number", f.load)
	case f.scenario == "steady-rate" && !(f.rate >= 0 && f.rate <= bench.MaxRate):
		return fmt.Errorf("bench: -rate %g: want 0 (measure a drain, then run at -load of its rate) to %d executions/s", f.rate, bench.MaxRate)
	case f.scenario == "steady-depth" && f.depth < 1:
		return errors.New("bench: -depth must be at least 1")
	case f.window <= 0:
		return fmt.Errorf("bench: -window %s: want a positive duration", f.window)
	}
	// steady-rate and steady-depth keep a summary per window; the run checks the count
	// too, but only after the drain that measures -rate.
	if f.scenario == "steady-rate" || f.scenario == "steady-depth" {
		if err := bench.CheckWindow(f.duration, f.window); err != nil {
			return fmt.Errorf("bench: -window: %w", err)
		}
	}
	if f.store == "" {
		dir, err := os.MkdirTemp("", "flowfabric-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if f.store, err = sqliteURL(filepath.Join(dir, "bench.db")); err != nil {
			return err
		}
	}
	b := &benchRun{f: f, out: out, host: bench.ThisHost(), version: bench.Version()}
	switch f.scenario {
	case "drain":
		_, err := b.series(ctx, b.drain(bench.ScenarioDrain), f.runs)
		return err
	case "burn-down":
		_, err := b.series(ctx, b.drain(bench.ScenarioBurnDown), f.runs)
		return err
	case "steady-rate":
		rate := f.rate
		if rate == 0 {
			median, err := b.series(ctx, b.drain(bench.ScenarioDrain), 1)
			if err != nil {
				return err
			}
			rate = f.load * median.ThroughputPerSec
			if rate > bench.MaxRate {
				return fmt.Errorf("bench: -load %g of the drain's %.0f/s is over %d executions/s", f.load, median.ThroughputPerSec, bench.MaxRate)
			}
		}
		_, err := b.series(ctx, b.steady(bench.SteadyConfig{Rate: rate}), f.runs)
		return err
	case "steady-depth":
		_, err := b.series(ctx, b.steady(bench.SteadyConfig{Depth: f.depth}), f.runs)
		return err
	default:
		_, err := b.series(ctx, b.steadyState(), f.runs)
		return err
	}
}

// benchRun runs one bench command's runs and prints them.
type benchRun struct {
	f       benchFlags
	out     io.Writer
	host    bench.Host
	version string
}

// scenarioRun is how the bench command runs and prints one scenario.
type scenarioRun struct {
	// title heads the table; ", store …" follows it.
	title string
	// cols name the table's columns after "run"; row renders a record's cells, each
	// followed by a tab.
	cols []string
	row  func(r bench.Record) string
	// run runs the scenario once (run is 1-based) on c, reporting to progress (nil with
	// -json), and returns its record without the identity.
	run func(ctx context.Context, c bench.Backend, run int, progress bench.ProgressFunc) (bench.Record, error)
}

// series runs sr runs times, each on a fresh store, and prints each run and, for more
// than one, their median, which it returns.
func (b *benchRun) series(ctx context.Context, sr scenarioRun, runs int) (bench.Record, error) {
	var recs []bench.Record
	var tw *tabwriter.Writer
	for i := 1; i <= runs; i++ {
		s, err := openFreshStore(ctx, b.f.store, b.f.sync)
		if err != nil {
			return bench.Record{}, err
		}
		if i == 1 && !b.f.json {
			fmt.Fprintf(b.out, "%s, store %s\n", sr.title, describeStore(s))
			tw = b.table(append([]string{"run"}, sr.cols...)...)
		}
		var bar *bench.ProgressBar
		var report bench.ProgressFunc
		if !b.f.json {
			bar = bench.NewProgressBar(b.out)
			report = bar.Report
		}
		started := time.Now()
		err = b.withClient(ctx, s, func(c bench.Backend) error {
			rec, err := sr.run(ctx, c, i, report)
			if err != nil {
				return err
			}
			b.identify(&rec, s, started, strconv.Itoa(i), runs)
			recs = append(recs, rec)
			return nil
		})
		if bar != nil {
			bar.Clear()
		}
		if err != nil {
			return bench.Record{}, fmt.Errorf("%s run %d: %w", b.f.scenario, i, err)
		}
		if err := b.print(tw, sr, recs[len(recs)-1]); err != nil {
			return bench.Record{}, err
		}
	}
	median := bench.MedianRecord(recs)
	if runs > 1 {
		if err := b.print(tw, sr, median); err != nil {
			return bench.Record{}, err
		}
	}
	if tw != nil {
		if err := tw.Flush(); err != nil {
			return bench.Record{}, err
		}
	}
	return median, nil
}

// print writes rec as a JSON line or as a row of tw.
func (b *benchRun) print(tw *tabwriter.Writer, sr scenarioRun, rec bench.Record) error {
	if b.f.json {
		line, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(b.out, "%s\n", line)
		return err
	}
	_, err := fmt.Fprintf(tw, "%s\t%s\n", rec.Config.Run, sr.row(rec))
	return err
}

// drain is the drain scenario (submit-claim-complete) or burn-down, which differ only in
// their defaults.
func (b *benchRun) drain(scenario string) scenarioRun {
	f := b.f
	return scenarioRun{
		title: fmt.Sprintf("%s: %d executions × %d-byte payload, %d %s workers claiming 1 at a time, %s",
			scenario, f.n, f.payload, f.workers, b.workerKind(), completions(f.pipeline)),
		cols: []string{"seed s", "seed/s", "drain s", "tasks/s", "p50 ms", "p95 ms", "p99 ms", "claim p50/p99", "complete p50/p99", "CPU µs/task", "machine busy %", "errors"},
		row: func(r bench.Record) string {
			return fmt.Sprintf("%.2f\t%.0f\t%.2f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f/%.2f\t%.2f/%.2f\t%.0f\t%.0f\t%d\t",
				r.Seed.Seconds, r.Seed.PerSec, r.DrainSec, r.ThroughputPerSec, r.LatencyMS.P50, r.LatencyMS.P95, r.LatencyMS.P99,
				r.ClaimMS.P50, r.ClaimMS.P99, r.CompleteMS.P50, r.CompleteMS.P99, r.CPUPerTaskUS, r.MachineBusyPct, r.Errors)
		},
		run: func(ctx context.Context, c bench.Backend, run int, progress bench.ProgressFunc) (bench.Record, error) {
			cfg := bench.DrainConfig{N: f.n, Workers: f.workers, PayloadBytes: f.payload, Pipeline: f.pipeline, Progress: progress}
			stop := func() error { return nil }
			if run == 1 {
				var err error
				if stop, err = profileDrain(&cfg, f.cpuProfile, f.memProfile); err != nil {
					return bench.Record{}, err
				}
			}
			r, err := bench.Drain(ctx, c, cfg)
			if perr := stop(); err == nil && perr != nil {
				err = fmt.Errorf("bench: writing a profile: %w", perr)
			}
			if err != nil {
				return bench.Record{}, err
			}
			return bench.DrainRecord(scenario, cfg, r), nil
		},
	}
}

// completions says how drain workers complete.
func completions(pipeline bool) string {
	if pipeline {
		return "completing in the background"
	}
	return "completing before the next claim"
}

// steady is steady-rate (cfg.Rate set) or steady-depth (cfg.Depth set).
func (b *benchRun) steady(cfg bench.SteadyConfig) scenarioRun {
	f := b.f
	cfg.Duration, cfg.Workers, cfg.PayloadBytes, cfg.Pipeline, cfg.Window = f.duration, f.workers, f.payload, f.pipeline, f.window
	producer := fmt.Sprintf("%s: a producer creates %.0f executions/s", bench.ScenarioSteadyRate, cfg.Rate)
	if cfg.Depth > 0 {
		producer = fmt.Sprintf("%s: a producer keeps %d executions waiting", bench.ScenarioSteadyDepth, cfg.Depth)
	}
	return scenarioRun{
		title: fmt.Sprintf("%s (%d-byte payload) for %s while %d %s workers claim 1 at a time, %s",
			producer, f.payload, f.duration, f.workers, b.workerKind(), completions(f.pipeline)),
		cols: []string{"created", "completed/s", "claim p50 ms", "claim p95 ms", "claim p99 ms", "create→complete p50/p99 ms", "backlog at end", "errors", "claim p99 ms per window"},
		row: func(r bench.Record) string {
			byWindow := "-"
			if len(r.LatencyByWindowMS) > 0 {
				ps := make([]string, len(r.LatencyByWindowMS))
				for i, l := range r.LatencyByWindowMS {
					ps[i] = fmt.Sprintf("%.1f", l.P99)
				}
				byWindow = strings.Join(ps, " ")
			}
			return fmt.Sprintf("%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f/%.2f\t%d\t%d\t%s\t",
				r.Created, r.ThroughputPerSec, r.LatencyMS.P50, r.LatencyMS.P95, r.LatencyMS.P99,
				r.CreateCompleteMS.P50, r.CreateCompleteMS.P99, *r.Backlog, r.Errors, byWindow)
		},
		run: func(ctx context.Context, c bench.Backend, _ int, progress bench.ProgressFunc) (bench.Record, error) {
			cfg := cfg
			cfg.Progress = progress
			r, err := bench.Steady(ctx, c, cfg)
			if err != nil {
				return bench.Record{}, err
			}
			return bench.SteadyRecord(cfg, r), nil
		},
	}
}

// steadyState is the steady-state scenario: SDK workers running slow tasks with deadlines.
func (b *benchRun) steadyState() scenarioRun {
	f := b.f
	cfg := bench.SteadyStateConfig{Seed: f.n, Refill: f.refill, RefillEvery: f.refillEvery, Deadline: f.deadline,
		Workers: f.workers, LeaseTTL: f.leaseTTL, TaskTime: f.taskTime, Duration: f.duration, Window: f.window, PayloadBytes: f.payload}
	return scenarioRun{
		title: fmt.Sprintf("%s: %d executions seeded and %d more every %s, each with a deadline %s after its creation, for %s; "+
			"an SDK worker with %d %s slots runs tasks of %s on leases of %s",
			bench.ScenarioSteadyState, f.n, f.refill, f.refillEvery, f.deadline, f.duration, f.workers, b.workerKind(), f.taskTime, f.leaseTTL),
		cols: []string{"created", "completed", "last-window/s", "whole-run/s", "task p50/p99 ms", "create→complete p50/p99 ms",
			"missed deadline %", "expired", "renewals/task", "renewal share", "RSS MB/min", "errors"},
		row: func(r bench.Record) string {
			return fmt.Sprintf("%d\t%d\t%.2f\t%.2f\t%.0f/%.0f\t%.0f/%.0f\t%.1f\t%d\t%.2f\t%.2f\t%.2f\t%d\t",
				r.Created, r.Count, r.ThroughputPerSec, r.ThroughputWholeRunPerSec, r.LatencyMS.P50, r.LatencyMS.P99,
				r.CreateCompleteMS.P50, r.CreateCompleteMS.P99, *r.MissedDeadlinePct, r.Deadlines.Expired,
				r.Renewals.PerTask, r.Renewals.Share, r.RSS.SlopeMBPerMin, r.Errors)
		},
		run: func(ctx context.Context, c bench.Backend, _ int, progress bench.ProgressFunc) (bench.Record, error) {
			cfg := cfg
			cfg.Progress = progress
			r, err := bench.SteadyState(ctx, c, cfg)
			if err != nil {
				return bench.Record{}, err
			}
			return bench.SteadyStateRecord(cfg, r), nil
		},
	}
}

// withClient runs fn with a client on the store: the engine in process, or, with
// -transport http, an HTTP API server on a loopback port in front of it and the Go HTTP
// client. It removes the store afterwards.
func (b *benchRun) withClient(ctx context.Context, s *freshStore, fn func(c bench.Backend) error) error {
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

// identify fills in rec's identity and the store's and the series' part of its config.
func (b *benchRun) identify(rec *bench.Record, s *freshStore, started time.Time, run string, runs int) {
	rec.Store = s.kind
	rec.Transport = b.f.transport
	rec.StartedAt = started.UTC().Truncate(time.Millisecond)
	rec.Host = b.host
	rec.Version = b.version
	rec.Config.Sync = s.sync
	rec.Config.Shards = s.store.Shards()
	rec.Config.Run = run
	rec.Config.Runs = runs
}

func (b *benchRun) table(cols ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	return tw
}

func describeStore(s *freshStore) string {
	if s.kind == "sqlite" {
		return fmt.Sprintf("sqlite %s (synchronous=%s, %d shard(s))", s.path, s.sync, s.store.Shards())
	}
	return fmt.Sprintf("%s (%d shards)", s.kind, s.store.Shards())
}

// profileDrain makes cfg profile its drain phase: a CPU profile to cpuPath, and heap
// profiles (allocations included) to memPath + ".base" as the drain starts and to memPath
// as it ends, whose difference is what the drain allocated. An empty path skips that
// profile. The files are created at once, so a path that cannot be written fails before
// the run. stop ends the CPU profile if the drain never finished, closes the files and
// returns the first error writing them.
func profileDrain(cfg *bench.DrainConfig, cpuPath, memPath string) (stop func() error, err error) {
	var files []*os.File
	create := func(path string) *os.File {
		if path == "" || err != nil {
			return nil
		}
		var f *os.File
		if f, err = os.Create(path); err == nil {
			files = append(files, f)
		}
		return f
	}
	cpu := create(cpuPath)
	var memBase, mem *os.File
	if memPath != "" {
		memBase, mem = create(memPath+".base"), create(memPath)
	}
	closeAll := func() error {
		var errs []error
		for _, f := range files {
			errs = append(errs, f.Close())
		}
		return errors.Join(errs...)
	}
	if err != nil {
		_ = closeAll()
		return nil, err
	}
	running := false
	var writeErr error
	heap := func(f *os.File) {
		if f != nil && writeErr == nil {
			writeErr = pprof.Lookup("allocs").WriteTo(f, 0)
		}
	}
	cfg.DrainStarted = func() {
		heap(memBase)
		if cpu != nil {
			if writeErr = errors.Join(writeErr, pprof.StartCPUProfile(cpu)); writeErr == nil {
				running = true
			}
		}
	}
	cfg.DrainDone = func() {
		if running {
			pprof.StopCPUProfile()
			running = false
		}
		heap(mem)
	}
	return func() error {
		if running {
			pprof.StopCPUProfile()
			running = false
		}
		return errors.Join(writeErr, closeAll())
	}, nil
}
