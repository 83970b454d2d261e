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
