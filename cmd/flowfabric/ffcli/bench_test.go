package ffcli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/internal/bench"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// records parses bench -json output: one JSON object per line, each with the common
// fields and no field a Record lacks.
func records(t *testing.T, out string) []bench.Record {
	t.Helper()
	var recs []bench.Record
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r bench.Record
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&r), "line %q", sc.Text())
		var shape map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &shape))
		for _, k := range []string{"scenario", "store", "transport", "config", "throughput_per_sec", "latency_ms", "count", "errors", "started_at", "host", "version"} {
			require.Contains(t, shape, k)
		}
		for _, k := range []string{"p50", "p95", "p99"} {
			require.Contains(t, shape["latency_ms"], k)
		}
		for _, k := range []string{"cpu", "cores", "mem_gb"} {
			require.Contains(t, shape["host"], k)
		}
		recs = append(recs, r)
	}
	return recs
}

func requireOrdered(t *testing.T, l bench.Latency) {
	t.Helper()
	require.Positive(t, l.P50)
	require.LessOrEqual(t, l.P50, l.P95)
	require.LessOrEqual(t, l.P95, l.P99)
	require.LessOrEqual(t, l.P99, l.Max)
}

func TestBenchTable(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "bench.db")
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-store", "sqlite://" + db, "-n", "500", "-workers", "4", "-payload", "256", "-runs", "2"}, &out))
	s := out.String()
	t.Log("\n" + s)
	require.Contains(t, s, "submit-claim-complete: 500 executions × 256-byte payload, 4 in-process workers")
	require.Contains(t, s, "synchronous=full")
	lines := strings.Split(strings.TrimSpace(s), "\n")
	require.Len(t, lines, 5, "title, header, two runs, median")
	require.Contains(t, lines[1], "tasks/s")
	for i, want := range []string{"1", "2", "median"} {
		require.Equal(t, want, strings.Fields(lines[2+i])[0])
	}
	require.NoFileExists(t, db, "a run removes the file it created")
}

func TestBenchJSON(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "bench.db")
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-store", "sqlite://" + db, "-sync", "normal",
		"-n", "500", "-workers", "8", "-payload", "4096", "-runs", "3", "-json"}, &out))
	recs := records(t, out.String())
	require.Len(t, recs, 4, "three runs and the median")
	for i, r := range recs {
		require.Equal(t, bench.ScenarioDrain, r.Scenario)
		require.Equal(t, "sqlite", r.Store)
		require.Equal(t, "inproc", r.Transport)
		require.Equal(t, 500, r.Config.N)
		require.Equal(t, 8, r.Config.Workers)
		require.Equal(t, 4096, r.Config.PayloadBytes)
		require.Equal(t, "normal", r.Config.Sync)
		require.Equal(t, 1, r.Config.ClaimCount)
		require.Equal(t, 3, r.Config.Runs)
		require.Equal(t, 500, r.Count)
		require.Zero(t, r.Errors)
		require.Positive(t, r.ThroughputPerSec)
		requireOrdered(t, r.LatencyMS)
		require.Equal(t, 500, r.LatencyMS.N, "one claim→complete sample per task")
		require.NotNil(t, r.Seed)
		require.Positive(t, r.Seed.Seconds)
		require.Positive(t, r.DrainSec)
		require.Positive(t, r.CPUPerTaskUS)
		if runtime.GOOS == "linux" {
			require.Positive(t, r.MachineBusyPct)
			require.LessOrEqual(t, r.MachineBusyPct, 100.0)
		}
		require.False(t, r.StartedAt.IsZero())
		require.Positive(t, r.Host.Cores)
		require.NotEmpty(t, r.Host.CPU)
		require.NotEmpty(t, r.Version)
		if i < 3 {
			require.Equal(t, string(rune('1'+i)), r.Config.Run)
		}
	}
	require.Equal(t, "median", recs[3].Config.Run)
	tput := []float64{recs[0].ThroughputPerSec, recs[1].ThroughputPerSec, recs[2].ThroughputPerSec}
	require.Equal(t, bench.Median(tput), recs[3].ThroughputPerSec)
}

// TestBenchMemStore runs on the in-memory store, named as every store URL names it
// ("mem:", which the server takes too, its scheme in any case) or plainly "mem".
func TestBenchMemStore(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"mem", "mem:", "MEM://"} {
		var out bytes.Buffer
		require.NoError(t, Run(t.Context(), []string{"bench", "-store", spec, "-n", "500", "-json"}, &out), spec)
		recs := records(t, out.String())
		require.Len(t, recs, 1)
		require.Equal(t, "mem", recs[0].Store)
		require.Empty(t, recs[0].Config.Sync)
		require.Equal(t, 500, recs[0].Count)
	}
}

// TestBenchStoreSchemeIsCaseInsensitive pins that bench takes a store URL's scheme in any
// case, as every other command does (URL schemes are case-insensitive).
func TestBenchStoreSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "b.db")
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-n", "2", "-workers", "1", "-payload", "0", "-json", "-store", "SQLite://" + filepath.ToSlash(path)}, &out))
	require.Equal(t, "sqlite", records(t, out.String())[0].Store)
	require.NoFileExists(t, path, "the run's file is removed")
}

// TestBenchSteady measures the drain rate, then runs the producer at 70% of it.
func TestBenchSteady(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "bench.db")
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-store", "sqlite://" + db, "-scenario", "steady-rate", "-n", "500",
		"-workers", "4", "-payload", "512", "-duration", "1s", "-json"}, &out))
	recs := records(t, out.String())
	require.Len(t, recs, 2, "the drain that measured the rate, then the steady run")
	drain, steady := recs[0], recs[1]
	require.Equal(t, bench.ScenarioDrain, drain.Scenario)
	require.Equal(t, bench.ScenarioSteadyRate, steady.Scenario)
	require.InDelta(t, 0.7*drain.ThroughputPerSec, steady.Config.RatePerSec, 0.01)
	require.Equal(t, 1.0, steady.Config.DurationSec)
	require.Positive(t, steady.Created)
	require.Positive(t, steady.Count)
	require.NotNil(t, steady.Backlog)
	require.LessOrEqual(t, steady.Count, steady.Created)
	requireOrdered(t, steady.LatencyMS)
	require.NotNil(t, steady.CreateCompleteMS)
	requireOrdered(t, *steady.CreateCompleteMS)
	require.Zero(t, steady.Errors)
}

func TestBenchSteadyTable(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-store", "mem", "-scenario", "steady-rate", "-rate", "500",
		"-duration", "500ms", "-runs", "2"}, &out))
	s := out.String()
	t.Log("\n" + s)
	require.Contains(t, s, "steady-rate: a producer creates 500 executions/s")
	lines := strings.Split(strings.TrimSpace(s), "\n")
	require.Len(t, lines, 5, "title, header, two runs, median")
	require.Contains(t, lines[1], "claim p99 ms")
	require.Equal(t, "median", strings.Fields(lines[4])[0])
}

func TestBenchRefusesAnExistingFile(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "precious.db")
	require.NoError(t, os.WriteFile(db, []byte("not yours"), 0o600))
	var out bytes.Buffer
	err := Run(t.Context(), []string{"bench", "-store", "sqlite://" + db, "-n", "10"}, &out)
	require.ErrorContains(t, err, "exists")
	b, err := os.ReadFile(db)
	require.NoError(t, err)
	require.Equal(t, "not yours", string(b))
}

func TestBenchRefusesBadArguments(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-store", "nosuch://x"},
		{"-store", "mem", "-sync", "full"},
		{"-store", "sqlite:///tmp/x.db", "-sync", "off"},
		{"-n", "0"},
		{"-runs", "0"},
		{"-workers", "0"},
		{"-scenario", "steady-rate", "-duration", "0s"},
		{"-scenario", "steady-depth", "-depth", "0"},
		{"-scenario", "steady-rate", "-load", "0"},
		{"-scenario", "no-such"},
		{"-scenario", "steady-state", "-store", "mem", "-n", "1", "-refill-every", "0s", "-duration", "1s"},
		{"extra"},
		{"-store", "mem", "-n", "10", "-memprofile", "/nonexistent/dir/mem.prof"},
		{"-store", "mem", "-n", "10", "-cpuprofile", "/nonexistent/dir/cpu.prof"},
	} {
		var out bytes.Buffer
		require.Error(t, Run(t.Context(), append([]string{"bench"}, args...), &out), "%q", args)
	}
}

// TestBenchRefusesOutOfRangeNumbersFirst pins that bench refuses a number out of range
// with a message naming its flag, before it opens the store (here one it could not open)
// or allocates anything: a -payload over the engine's limit used to be allocated, up to
// running out of memory, a -rate of 1e300 (or NaN -load) ran, created nothing and
// succeeded, and a -window far below -duration ran out of memory after the run.
func TestBenchRefusesOutOfRangeNumbersFirst(t *testing.T) {
	t.Parallel()
	unopenable := "sqlite://" + filepath.ToSlash(filepath.Join(t.TempDir(), "no-such-dir", "b.db"))
	for _, tc := range []struct {
		flag string
		args []string
	}{
		{"-payload", []string{"-payload", "99999999999"}},
		{"-payload", []string{"-payload", strconv.Itoa(engine.DefaultMaxPayloadBytes + 1)}},
		{"-rate", []string{"-scenario", "steady-rate", "-rate", "1e300"}},
		{"-rate", []string{"-scenario", "steady-rate", "-rate", strconv.Itoa(bench.MaxRate + 1)}},
		{"-rate", []string{"-scenario", "steady-rate", "-rate", "+Inf"}},
		{"-rate", []string{"-scenario", "steady-rate", "-rate", "NaN"}},
		{"-rate", []string{"-scenario", "steady-rate", "-rate", "-1"}},
		{"-load", []string{"-scenario", "steady-rate", "-load", "NaN"}},
		{"-load", []string{"-scenario", "steady-rate", "-load", "Inf"}},
		{"-load", []string{"-scenario", "steady-rate", "-load", "0"}},
		// One window summary per -window of the run: a 1 ns window in 1 s ran out of memory.
		{"-window", []string{"-scenario", "steady-rate", "-rate", "50", "-duration", "1s", "-window", "1µs"}},
		{"-window", []string{"-scenario", "steady-depth", "-duration", "1s", "-window", "999µs"}},
		{"-window", []string{"-scenario", "steady-rate", "-window", "0s"}},
		{"-window", []string{"-scenario", "steady-state", "-window", "-1s"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := Run(t.Context(), append([]string{"bench", "-store", unopenable}, tc.args...), &out)
			require.ErrorContains(t, err, tc.flag, out.String())
		})
	}
}

func TestBenchOverHTTP(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-store", "mem", "-n", "300", "-workers", "4", "-transport", "http", "-json"}, &out))
	var rec map[string]any
	require.NoError(t, json.Unmarshal(bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))[0], &rec))
	require.Equal(t, "http", rec["transport"])
	require.EqualValues(t, 300, rec["count"])
	require.EqualValues(t, 0, rec["errors"])
	var bad bytes.Buffer
	require.Error(t, Run(t.Context(), []string{"bench", "-store", "mem", "-transport", "carrier-pigeon"}, &bad))
}

func TestBenchBurnDown(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-scenario", "burn-down", "-store", "mem", "-n", "400", "-workers", "50", "-json"}, &out))
	recs := records(t, out.String())
	require.Len(t, recs, 1)
	r := recs[0]
	require.Equal(t, bench.ScenarioBurnDown, r.Scenario)
	require.Equal(t, 400, r.Config.N)
	require.Equal(t, 50, r.Config.Workers)
	require.Zero(t, r.Config.PayloadBytes, "no-op executions: empty payloads")
	require.Equal(t, 400, r.Count)
	require.Equal(t, 400, r.LatencyMS.N)
	require.NotNil(t, r.Seed)
}

func TestBenchSteadyDepth(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-scenario", "steady-depth", "-store", "mem", "-depth", "30", "-workers", "4",
		"-duration", "500ms", "-json"}, &out))
	recs := records(t, out.String())
	require.Len(t, recs, 1)
	r := recs[0]
	require.Equal(t, bench.ScenarioSteadyDepth, r.Scenario)
	require.Equal(t, 30, r.Config.Depth)
	require.Zero(t, r.Config.RatePerSec)
	require.Equal(t, 0.5, r.Config.DurationSec)
	require.Positive(t, r.Count)
	require.GreaterOrEqual(t, r.Created, r.Count)
	requireOrdered(t, r.LatencyMS)
	require.NotNil(t, r.Backlog)
}

// steadyStateArgs is a steady-state small enough for a test: 30 seeded tasks of 0.5 s on
// 4 slots, with deadlines of 1.5 s, for 2 s.
func steadyStateArgs(more ...string) []string {
	return append([]string{"bench", "-scenario", "steady-state", "-n", "30", "-refill", "2", "-refill-every", "300ms",
		"-deadline", "1500ms", "-workers", "4", "-lease-ttl", "1s", "-task-time", "500ms", "-duration", "2s", "-window", "1s"}, more...)
}

func TestBenchSteadyState(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{"inproc", "http"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			require.NoError(t, Run(t.Context(), steadyStateArgs("-store", "sqlite://"+filepath.Join(t.TempDir(), "b.db"),
				"-transport", transport, "-json"), &out))
			recs := records(t, out.String())
			require.Len(t, recs, 1)
			r := recs[0]
			require.Equal(t, bench.ScenarioSteadyState, r.Scenario)
			require.Equal(t, transport, r.Transport)
			require.Equal(t, bench.Config{N: 30, Workers: 4, Sync: "full", Shards: r.Config.Shards, Run: "1", Runs: 1, DurationSec: 2,
				Refill: 2, RefillEverySec: 0.3, DeadlineSec: 1.5, LeaseTTLSec: 1, TaskSec: 0.5, WindowSec: 1}, r.Config)
			require.Positive(t, r.Count)
			require.Greater(t, r.Created, 30)
			require.NotNil(t, r.Deadlines)
			d := r.Deadlines
			require.Equal(t, r.Created, r.Count+d.Expired+d.PendingLate+d.Pending, "every execution is accounted for")
			require.NotNil(t, r.MissedDeadlinePct)
			require.Positive(t, *r.MissedDeadlinePct, "seeded tasks missed their deadline")
			require.NotNil(t, r.Renewals)
			require.Positive(t, r.Renewals.Count)
			require.Positive(t, r.Renewals.Claims)
			require.NotNil(t, r.RSS)
			require.Positive(t, r.RSS.Samples)
			require.Equal(t, r.Count, r.LatencyMS.N)
			require.Zero(t, r.Errors)
		})
	}
}

func TestBenchSteadyStateTable(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), steadyStateArgs("-store", "mem"), &out))
	s := out.String()
	t.Log("\n" + s)
	require.Contains(t, s, "steady-state: 30 executions seeded and 2 more every 300ms")
	lines := strings.Split(strings.TrimSpace(s), "\n")
	require.Len(t, lines, 3, "title, header, one run; no progress lines on a short run")
	require.Contains(t, lines[1], "missed deadline %")
	require.Equal(t, "1", strings.Fields(lines[2])[0])
}

// TestBenchProfiles checks that -cpuprofile and -memprofile write profiles of the first
// run's drain: gzipped pprof data, and a heap profile from the drain's start beside the
// one from its end.
func TestBenchProfiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "mem.prof")
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-store", "mem", "-n", "300", "-runs", "2", "-json",
		"-cpuprofile", cpu, "-memprofile", mem}, &out))
	require.Len(t, records(t, out.String()), 3) // two runs and their median
	for _, path := range []string{cpu, mem, mem + ".base"} {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Greater(t, len(b), 2, path)
		require.Equal(t, []byte{0x1f, 0x8b}, b[:2], "%s is not a gzipped profile", path)
	}
}

// TestBenchTempDirIsAPath pins that bench's default store, a file in a new temporary
// directory, works wherever that directory is: a TMPDIR holding '%', '?' or '#' is a
// path, not a piece of URL. Not parallel: it sets TMPDIR.
func TestBenchTempDirIsAPath(t *testing.T) {
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "tmp %41?x=1#y"))
	require.NoError(t, os.MkdirAll(os.Getenv("TMPDIR"), 0o700))
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"bench", "-n", "20", "-workers", "2"}, &out), out.String())
	require.Contains(t, out.String(), "tmp %41?x=1#y", "the table's title names the store's file")
}
