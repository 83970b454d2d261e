package bench

import (
	"slices"
	"time"
)

// Latency is a distribution summary in milliseconds. Percentiles are nearest-rank on the
// sorted samples (BENCHMARKS.md): the p-th percentile of n samples is the sample of rank
// ceil(p/100 × n).
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	N   int     `json:"n"`
}

// Summarize sorts samples in place and returns their percentiles. No samples give the
// zero Latency.
func Summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	return Latency{
		P50: ms(NearestRank(samples, 50)),
		P95: ms(NearestRank(samples, 95)),
		P99: ms(NearestRank(samples, 99)),
		Max: ms(samples[len(samples)-1]),
		N:   len(samples),
	}
}

// ByWindow summarizes samples taken at the offsets at (at[i] is when samples[i] was
// taken, from the start of the run) in n consecutive windows of length window: the i-th
// Latency covers [i×window, (i+1)×window); window must be positive. Samples outside the
// n windows are left out.
func ByWindow(at, samples []time.Duration, window time.Duration, n int) []Latency {
	buckets := make([][]time.Duration, n)
	for i, t := range at {
		if w := int(t / window); t >= 0 && w < n {
			buckets[w] = append(buckets[w], samples[i])
		}
	}
	out := make([]Latency, n)
	for i, b := range buckets {
		out[i] = Summarize(b)
	}
	return out
}

// NearestRank returns the p-th percentile (0 < p ≤ 100) of sorted, which must not be
// empty: the smallest sample such that at least p percent of the samples are at most it.
func NearestRank(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	// rank = ceil(p/100 × n), computed in integers so that 99% of 100 is exactly 99.
	rank := int((int64(p*1000)*int64(n) + 100_000 - 1) / 100_000)
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Median returns the median of xs (the mean of the two middle values for an even count),
// or 0 for none. xs is not changed.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Slope returns the least-squares slope of ys over xs (paired by index), or 0 for fewer
// than two points or xs all equal.
func Slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if len(xs) < 2 || len(xs) != len(ys) {
		return 0
	}
	var sx, sy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
	}
	mx, my := sx/n, sy/n
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 {
		return 0
	}
	return sxy / sxx
}
