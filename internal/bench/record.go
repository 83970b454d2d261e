package bench

import "time"

// Scenario names, as BENCHMARKS.md numbers them.
const (
	ScenarioDrain  = "submit-claim-complete"
	ScenarioSteady = "steady-rate"
)

// Record is the JSON object a benchmark prints per run (and for the median of runs), with
// the fields BENCHMARKS.md lists first and the scenario's extra measurements after.
type Record struct {
	Scenario  string `json:"scenario"`
	Store     string `json:"store"`
	Transport string `json:"transport"`
	Config    Config `json:"config"`
	// ThroughputPerSec is drain tasks/s (drain) or sustained completions/s (steady).
	ThroughputPerSec float64 `json:"throughput_per_sec"`
	// LatencyMS is claim→complete per task (drain) or the Claim call (steady).
	LatencyMS Latency   `json:"latency_ms"`
	Count     int       `json:"count"`
	Errors    int       `json:"errors"`
	StartedAt time.Time `json:"started_at"`
	Host      Host      `json:"host"`
	Version   string    `json:"version"`

	// Drain only.
	Seed       *Phase   `json:"seed,omitempty"`
	DrainSec   float64  `json:"drain_seconds,omitempty"`
	ClaimMS    *Latency `json:"claim_ms,omitempty"`
	CompleteMS *Latency `json:"complete_ms,omitempty"`
	// CPUPerTaskUS is the process's CPU microseconds per task during the drain.
	CPUPerTaskUS float64 `json:"cpu_us_per_task,omitempty"`

	// Steady only.
	CreateCompleteMS *Latency `json:"create_complete_ms,omitempty"`
	Created          int      `json:"created,omitempty"`
	Backlog          *int     `json:"backlog_at_end,omitempty"`
}

// Config is a run's configuration. Run is the run's number (1-based), or "median".
type Config struct {
	N            int     `json:"n,omitempty"`
	Workers      int     `json:"workers"`
	PayloadBytes int     `json:"payload_bytes"`
	Sync         string  `json:"sync,omitempty"`
	Shards       int     `json:"shards,omitempty"`
	ClaimCount   int     `json:"claim_count"`
	Run          string  `json:"run"`
	Runs         int     `json:"runs"`
	RatePerSec   float64 `json:"rate_per_sec,omitempty"`
	DurationSec  float64 `json:"duration_seconds,omitempty"`
}

// Phase is a timed phase that is not the measured one.
type Phase struct {
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_sec"`
}

// MedianRecord returns a record whose every measurement is the median of rs' (each field
// on its own), with the first record's identity and config and Run set to "median".
// rs must not be empty.
func MedianRecord(rs []Record) Record {
	m := rs[0]
	m.Config.Run = "median"
	med := func(get func(r *Record) float64) float64 {
		xs := make([]float64, len(rs))
		for i := range rs {
			xs[i] = get(&rs[i])
		}
		return Median(xs)
	}
	medLat := func(get func(r *Record) *Latency) *Latency {
		if get(&rs[0]) == nil {
			return nil
		}
		return &Latency{
			P50: med(func(r *Record) float64 { return get(r).P50 }),
			P95: med(func(r *Record) float64 { return get(r).P95 }),
			P99: med(func(r *Record) float64 { return get(r).P99 }),
			Max: med(func(r *Record) float64 { return get(r).Max }),
			N:   int(med(func(r *Record) float64 { return float64(get(r).N) })),
		}
	}
	m.ThroughputPerSec = med(func(r *Record) float64 { return r.ThroughputPerSec })
	m.LatencyMS = *medLat(func(r *Record) *Latency { return &r.LatencyMS })
	m.Count = int(med(func(r *Record) float64 { return float64(r.Count) }))
	m.Errors = int(med(func(r *Record) float64 { return float64(r.Errors) }))
	if m.Seed != nil {
		m.Seed = &Phase{
			Seconds: med(func(r *Record) float64 { return r.Seed.Seconds }),
			PerSec:  med(func(r *Record) float64 { return r.Seed.PerSec }),
		}
	}
	m.DrainSec = med(func(r *Record) float64 { return r.DrainSec })
	m.CPUPerTaskUS = med(func(r *Record) float64 { return r.CPUPerTaskUS })
	m.ClaimMS = medLat(func(r *Record) *Latency { return r.ClaimMS })
	m.CompleteMS = medLat(func(r *Record) *Latency { return r.CompleteMS })
	m.CreateCompleteMS = medLat(func(r *Record) *Latency { return r.CreateCompleteMS })
	m.Created = int(med(func(r *Record) float64 { return float64(r.Created) }))
	if m.Backlog != nil {
		b := int(med(func(r *Record) float64 { return float64(*r.Backlog) }))
		m.Backlog = &b
	}
	return m
}

// DrainRecord turns a drain result into a record; the caller fills in the identity.
func DrainRecord(r *DrainResult) Record {
	return Record{
		Scenario:         ScenarioDrain,
		Transport:        "inproc",
		ThroughputPerSec: r.PerSec,
		LatencyMS:        r.ClaimComplete,
		Count:            r.Count,
		Errors:           r.Errors,
		Seed:             &Phase{Seconds: r.Seed.Seconds(), PerSec: r.SeedPerSec},
		DrainSec:         r.Drain.Seconds(),
		ClaimMS:          &r.Claim,
		CompleteMS:       &r.Complete,
		CPUPerTaskUS:     float64(r.CPUPerTask) / float64(time.Microsecond),
	}
}

// SteadyRecord turns a steady result into a record; the caller fills in the identity.
func SteadyRecord(r *SteadyResult) Record {
	backlog := r.Backlog
	return Record{
		Scenario:         ScenarioSteady,
		Transport:        "inproc",
		ThroughputPerSec: r.PerSec,
		LatencyMS:        r.Claim,
		Count:            r.Completed,
		Errors:           r.Errors,
		CreateCompleteMS: &r.CreateComplete,
		Created:          r.Created,
		Backlog:          &backlog,
	}
}
