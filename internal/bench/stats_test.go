package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNearestRank(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"p50 of 100 is the 50th", hundred, 50, 50 * time.Millisecond},
		{"p99 of 100 is the 99th", hundred, 99, 99 * time.Millisecond},
		{"p95 of 100 is the 95th", hundred, 95, 95 * time.Millisecond},
		{"p100 is the largest", hundred, 100, 100 * time.Millisecond},
		{"one sample", []time.Duration{7}, 99, 7},
		{"p50 of 5 rounds up", []time.Duration{1, 2, 3, 4, 5}, 50, 3},
		{"p99 of 10 is the largest", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
		{"p90 of 10 is the 9th", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, NearestRank(tc.sorted, tc.p))
		})
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	require.Equal(t, Latency{}, Summarize(nil))
	l := Summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	require.Equal(t, Latency{P50: 2, P95: 3, P99: 3, Max: 3, N: 3}, l)
}

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Zero(t, Median(nil))
	require.Equal(t, 2.0, Median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, Median([]float64{4, 1, 3, 2}))
	xs := []float64{5, 1, 4}
	Median(xs)
	require.Equal(t, []float64{5, 1, 4}, xs, "Median does not reorder its argument")
}

func TestMedianRecord(t *testing.T) {
	t.Parallel()
	rec := func(tput, p50 float64, seed float64) Record {
		return Record{Scenario: ScenarioDrain, ThroughputPerSec: tput, LatencyMS: Latency{P50: p50, P95: p50, P99: p50},
			Seed: &Phase{Seconds: seed}, ClaimMS: &Latency{P50: p50}, Config: Config{Run: "x"}}
	}
	m := MedianRecord([]Record{rec(100, 3, 1), rec(300, 1, 3), rec(200, 2, 2)})
	require.Equal(t, "median", m.Config.Run)
	require.Equal(t, 200.0, m.ThroughputPerSec)
	require.Equal(t, 2.0, m.LatencyMS.P50)
	require.Equal(t, 2.0, m.Seed.Seconds)
	require.Equal(t, 2.0, m.ClaimMS.P50)
	require.Nil(t, m.CompleteMS)

	windows := func(p99s ...float64) Record {
		r := Record{}
		for _, p := range p99s {
			r.LatencyByWindowMS = append(r.LatencyByWindowMS, Latency{P99: p})
		}
		return r
	}
	m = MedianRecord([]Record{windows(1, 9), windows(3, 7), windows(2, 8)})
	require.Equal(t, []Latency{{P99: 2}, {P99: 8}}, m.LatencyByWindowMS, "window by window")
	m = MedianRecord([]Record{windows(1, 9), windows(3)})
	require.Equal(t, []Latency{{P99: 1}, {P99: 9}}, m.LatencyByWindowMS, "runs with different windows: the first")
}

func TestPayload(t *testing.T) {
	t.Parallel()
	require.Nil(t, Payload(0, ""))
	require.Nil(t, Payload(1, ""))
	require.Equal(t, `""`, string(Payload(2, "")))
	p := Payload(4096, "123 ")
	require.Len(t, p, 4096)
	require.Equal(t, `"123 `, string(p[:5]))
	at, ok := createdAt(Payload(64, "1700000000000000000 "))
	require.True(t, ok)
	require.Equal(t, int64(1700000000000000000), at.UnixNano())
}

func TestSlope(t *testing.T) {
	t.Parallel()
	require.InDelta(t, 2.0, Slope([]float64{0, 1, 2, 3}, []float64{1, 3, 5, 7}), 1e-9)
	require.InDelta(t, 0.0, Slope([]float64{0, 1, 2}, []float64{4, 4, 4}), 1e-9)
	require.Zero(t, Slope([]float64{1}, []float64{1}))
	require.Zero(t, Slope([]float64{2, 2}, []float64{1, 5}))
}

// TestMedianRecordSteadyState covers the steady-state fields: pointers to numbers and to
// structs, and the config kept from the first record.
func TestMedianRecordSteadyState(t *testing.T) {
	t.Parallel()
	pct := func(f float64) *float64 { return &f }
	rs := []Record{
		{Scenario: ScenarioSteadyState, Config: Config{Run: "1", Workers: 7}, ThroughputPerSec: 3, Count: 10,
			LatencyMS: Latency{P50: 1, N: 4}, MissedDeadlinePct: pct(5), RSS: &RSSTrend{SlopeMBPerMin: 0.5}, Deadlines: &Deadlines{Expired: 9}},
		{Scenario: ScenarioSteadyState, Config: Config{Run: "2", Workers: 8}, ThroughputPerSec: 1, Count: 30,
			LatencyMS: Latency{P50: 3, N: 2}, MissedDeadlinePct: pct(1), RSS: &RSSTrend{SlopeMBPerMin: -1}, Deadlines: &Deadlines{Expired: 1}},
		{Scenario: ScenarioSteadyState, Config: Config{Run: "3", Workers: 9}, ThroughputPerSec: 2, Count: 20,
			LatencyMS: Latency{P50: 2, N: 3}, MissedDeadlinePct: pct(3), RSS: &RSSTrend{SlopeMBPerMin: 2}, Deadlines: &Deadlines{Expired: 5}},
	}
	m := MedianRecord(rs)
	require.Equal(t, ScenarioSteadyState, m.Scenario)
	require.Equal(t, Config{Run: "median", Workers: 7}, m.Config, "the first record's config")
	require.Equal(t, 2.0, m.ThroughputPerSec)
	require.Equal(t, 20, m.Count)
	require.Equal(t, Latency{P50: 2, N: 3}, m.LatencyMS)
	require.Equal(t, 3.0, *m.MissedDeadlinePct)
	require.Equal(t, 0.5, m.RSS.SlopeMBPerMin)
	require.Equal(t, 5, m.Deadlines.Expired)
	require.Nil(t, m.Seed)
	require.Equal(t, 5.0, *rs[0].MissedDeadlinePct, "the inputs are not changed")
}

func TestByWindow(t *testing.T) {
	t.Parallel()
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	at := []time.Duration{ms(5), ms(15), ms(12), ms(31), ms(-1), ms(40)}
	samples := []time.Duration{ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)}
	got := ByWindow(at, samples, ms(10), 4)
	require.Len(t, got, 4)
	require.Equal(t, 1, got[0].N)
	require.Equal(t, 2, got[1].N)
	require.InDelta(t, 3.0, got[1].P99, 1e-9)
	require.Zero(t, got[2].N, "an empty window")
	require.Equal(t, 1, got[3].N, "samples outside the windows are left out")
	require.InDelta(t, 4.0, got[3].P99, 1e-9)
}
