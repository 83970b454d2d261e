package bench

import (
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// RSSTrend is the process's resident memory over a run, sampled at regular intervals: a
// leak shows as a slope that stays positive over a long run.
type RSSTrend struct {
	StartMB float64 `json:"start_mb"`
	EndMB   float64 `json:"end_mb"`
	MaxMB   float64 `json:"max_mb"`
	// SlopeMBPerMin is the least-squares slope of the samples, in MB per minute.
	SlopeMBPerMin float64 `json:"slope_mb_per_min"`
	Samples       int     `json:"samples"`
}

// sampleRSS samples the resident memory every interval from now until the returned stop
// is called, which takes a last sample and returns the trend.
func sampleRSS(interval time.Duration) (stop func() RSSTrend) {
	start := time.Now()
	var ts, mbs []float64
	take := func() {
		ts = append(ts, time.Since(start).Minutes())
		mbs = append(mbs, float64(rssBytes())/(1<<20))
	}
	take()
	stopSampling := every(interval, take)
	return func() RSSTrend {
		stopSampling()
		take()
		tr := RSSTrend{StartMB: mbs[0], EndMB: mbs[len(mbs)-1], SlopeMBPerMin: Slope(ts, mbs), Samples: len(mbs)}
		for _, mb := range mbs {
			tr.MaxMB = max(tr.MaxMB, mb)
		}
		return tr
	}
}

// rssBytes returns the process's resident set size: VmRSS from /proc/self/status where
// there is one, else the memory the Go runtime holds from the system and has not released.
func rssBytes() uint64 {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				// "VmRSS:	   12345 kB"
				if f := strings.Fields(v); len(f) > 0 {
					if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
						return kb << 10
					}
				}
			}
		}
	}
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}
