package bench

import (
	"reflect"
	"time"
)

// Scenario names, as Record.Scenario carries them.
const (
	ScenarioDrain       = "submit-claim-complete" // BENCHMARKS.md scenario 1
	ScenarioBurnDown    = "burn-down"             // a drain of empty payloads by many workers, like river bench
	ScenarioSteadyRate  = "steady-rate"           // a producer at a fixed rate
	ScenarioSteadyDepth = "steady-depth"          // a producer keeping a fixed backlog
	ScenarioSteadyState = "steady-state"          // BENCHMARKS.md scenario 3
)

// Record is the JSON object a benchmark prints per run (and for the median of runs), with
// the fields BENCHMARKS.md lists first and the scenario's extra measurements after. The
// record builders ([DrainRecord], [SteadyRecord], [SteadyStateRecord]) fill in the
// measurements and the scenario's config; the caller fills in the identity (Store,
// Transport, StartedAt, Host, Version) and Config's Sync, Shards, Run and Runs.
type Record struct {
	Scenario  string `json:"scenario"`
	Store     string `json:"store"`
	Transport string `json:"transport"`
	Config    Config `json:"config"`
	// ThroughputPerSec is drain tasks/s (drain, burn-down), sustained completions/s
	// (steady-rate, steady-depth) or completions/s over the last window (steady-state).
	ThroughputPerSec float64 `json:"throughput_per_sec"`
	// LatencyMS is claim→complete per task (drain, burn-down, steady-state) or the Claim
	// call (steady-rate, steady-depth).
	LatencyMS Latency   `json:"latency_ms"`
	Count     int       `json:"count"`
	Errors    int       `json:"errors"`
	StartedAt time.Time `json:"started_at"`
	Host      Host      `json:"host"`
	Version   string    `json:"version"`

	// Drain and burn-down.
	Seed       *Phase   `json:"seed,omitempty"`
	DrainSec   float64  `json:"drain_seconds,omitempty"`
	ClaimMS    *Latency `json:"claim_ms,omitempty"`
	CompleteMS *Latency `json:"complete_ms,omitempty"`
	// CPUPerTaskUS is the process's CPU microseconds per task during the drain.
	CPUPerTaskUS float64 `json:"cpu_us_per_task,omitempty"`
	// MachineBusyPct is how much of the whole machine's CPU was busy during the drain, in
	// percent (Linux only).
	MachineBusyPct float64 `json:"machine_busy_pct,omitempty"`

	// Steady-rate, steady-depth and steady-state.
	CreateCompleteMS *Latency `json:"create_complete_ms,omitempty"`
	Created          int      `json:"created,omitempty"`
	// Backlog is how many executions were created and not completed when the producer
	// stopped (steady-rate, steady-depth).
	Backlog *int `json:"backlog_at_end,omitempty"`
	// LatencyByWindowMS is latency_ms for each whole window (config window_seconds) of a
	// steady-rate or steady-depth run at least two windows long.
	LatencyByWindowMS []Latency `json:"latency_ms_by_window,omitempty"`

	// Steady-state.
	ThroughputWholeRunPerSec float64 `json:"throughput_whole_run_per_sec,omitempty"`
	// MissedDeadlinePct is the executions that missed their deadline as a percentage of
	// those with an outcome (see [SteadyStateResult]).
	MissedDeadlinePct *float64   `json:"missed_deadline_pct,omitempty"`
	Deadlines         *Deadlines `json:"deadlines,omitempty"`
	Renewals          *Renewals  `json:"renewals,omitempty"`
	RSS               *RSSTrend  `json:"rss,omitempty"`
}

// Config is a run's configuration. Run is the run's number (1-based), or "median".
type Config struct {
	N            int     `json:"n,omitempty"`
	Workers      int     `json:"workers"`
	PayloadBytes int     `json:"payload_bytes"`
	Sync         string  `json:"sync,omitempty"`
	Shards       int     `json:"shards,omitempty"`
	ClaimCount   int     `json:"claim_count,omitempty"` // 0: the SDK worker asks for its free slots
	Pipeline     bool    `json:"pipeline,omitempty"`    // drain: completions in the background
	Run          string  `json:"run"`
	Runs         int     `json:"runs"`
	RatePerSec   float64 `json:"rate_per_sec,omitempty"`
	Depth        int     `json:"depth,omitempty"`
	DurationSec  float64 `json:"duration_seconds,omitempty"`
	// Steady-state.
	Refill         int     `json:"refill,omitempty"`
	RefillEverySec float64 `json:"refill_every_seconds,omitempty"`
	DeadlineSec    float64 `json:"deadline_seconds,omitempty"`
	LeaseTTLSec    float64 `json:"lease_ttl_seconds,omitempty"`
	TaskSec        float64 `json:"task_seconds,omitempty"`
	WindowSec      float64 `json:"window_seconds,omitempty"`
}

// Phase is a timed phase that is not the measured one.
type Phase struct {
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_sec"`
}

// Deadlines counts how the executions of a steady-state run ended against their deadline
// (see [SteadyStateResult]).
type Deadlines struct {
	Expired       int `json:"expired"`
	CompletedLate int `json:"completed_late"`
	PendingLate   int `json:"pending_late"`
	Pending       int `json:"pending"`
}

// Renewals is the renewal overhead of a steady-state run.
type Renewals struct {
	Count     int     `json:"count"`
	PerTask   float64 `json:"per_task"`
	Share     float64 `json:"share_of_calls"` // of the claim, renew and complete calls
	Claims    int     `json:"claims"`
	Completes int     `json:"completes"`
}

// MedianRecord returns a record whose every measurement — each number, at any depth — is
// the median of rs' (each on its own), with the first record's identity and config and Run
// set to "median". A measurement missing (nil) from any record is taken from the first.
// rs must not be empty.
func MedianRecord(rs []Record) Record {
	vs := make([]reflect.Value, len(rs))
	for i := range rs {
		vs[i] = reflect.ValueOf(rs[i])
	}
	m := medianOf(vs).Interface().(Record)
	m.Config.Run = "median"
	return m
}

// medianOf returns the median of values of one type: numbers are medians, structs and
// pointers to them are taken field by field, slices of one length element by element, and
// anything else (strings, times, the identity and config structs, slices of different
// lengths) is the first value.
func medianOf(vs []reflect.Value) reflect.Value {
	first := vs[0]
	switch first.Kind() {
	case reflect.Float64, reflect.Int:
		xs := make([]float64, len(vs))
		for i, v := range vs {
			if v.Kind() == reflect.Int {
				xs[i] = float64(v.Int())
			} else {
				xs[i] = v.Float()
			}
		}
		out := reflect.New(first.Type()).Elem()
		if first.Kind() == reflect.Int {
			out.SetInt(int64(Median(xs)))
		} else {
			out.SetFloat(Median(xs))
		}
		return out
	case reflect.Pointer:
		elems := make([]reflect.Value, len(vs))
		for i, v := range vs {
			if v.IsNil() {
				return first
			}
			elems[i] = v.Elem()
		}
		out := reflect.New(first.Type().Elem())
		out.Elem().Set(medianOf(elems))
		return out
	case reflect.Slice:
		// Element by element, when every record has as many.
		for _, v := range vs {
			if v.Len() != first.Len() {
				return first
			}
		}
		out := reflect.MakeSlice(first.Type(), first.Len(), first.Len())
		medianParts(vs, first.Len(), reflect.Value.Index, out.Index)
		return out
	case reflect.Struct:
		switch first.Interface().(type) {
		case Config, Host, time.Time:
			return first
		}
		out := reflect.New(first.Type()).Elem()
		medianParts(vs, first.NumField(), reflect.Value.Field, out.Field)
		return out
	default:
		return first
	}
}

// medianParts sets each of the n parts (fields or elements) of a value, which out returns
// by index, to the median of that part of vs, which part returns.
func medianParts(vs []reflect.Value, n int, part func(reflect.Value, int) reflect.Value, out func(int) reflect.Value) {
	parts := make([]reflect.Value, len(vs))
	for k := range n {
		for i, v := range vs {
			parts[i] = part(v, k)
		}
		out(k).Set(medianOf(parts))
	}
}

// DrainRecord turns a drain's result into a record of scenario ([ScenarioDrain] or
// [ScenarioBurnDown]).
func DrainRecord(scenario string, cfg DrainConfig, r *DrainResult) Record {
	return Record{
		Scenario:         scenario,
		Config:           Config{N: cfg.N, Workers: cfg.Workers, PayloadBytes: cfg.PayloadBytes, ClaimCount: 1, Pipeline: cfg.Pipeline},
		ThroughputPerSec: r.PerSec,
		LatencyMS:        r.ClaimComplete,
		Count:            r.Count,
		Errors:           r.Errors,
		Seed:             &Phase{Seconds: r.Seed.Seconds(), PerSec: r.SeedPerSec},
		DrainSec:         r.Drain.Seconds(),
		ClaimMS:          &r.Claim,
		CompleteMS:       &r.Complete,
		CPUPerTaskUS:     float64(r.CPUPerTask) / float64(time.Microsecond),
		MachineBusyPct:   100 * r.MachineBusy,
	}
}

// SteadyRecord turns a steady run's result into a record, of [ScenarioSteadyDepth] when
// cfg has a depth and [ScenarioSteadyRate] otherwise.
func SteadyRecord(cfg SteadyConfig, r *SteadyResult) Record {
	scenario := ScenarioSteadyRate
	if cfg.Depth > 0 {
		scenario = ScenarioSteadyDepth
	}
	backlog := r.Backlog
	return Record{
		Scenario: scenario,
		Config: Config{Workers: cfg.Workers, PayloadBytes: cfg.PayloadBytes, ClaimCount: 1, Pipeline: cfg.Pipeline, RatePerSec: cfg.Rate, Depth: cfg.Depth,
			DurationSec: cfg.Duration.Seconds(), WindowSec: cfg.Window.Seconds()},
		ThroughputPerSec:  r.PerSec,
		LatencyMS:         r.Claim,
		Count:             r.Completed,
		Errors:            r.Errors,
		CreateCompleteMS:  &r.CreateComplete,
		Created:           r.Created,
		Backlog:           &backlog,
		LatencyByWindowMS: r.ClaimByWindow,
	}
}

// SteadyStateRecord turns a steady-state run's result into a record.
func SteadyStateRecord(cfg SteadyStateConfig, r *SteadyStateResult) Record {
	missed := r.MissedDeadlinePct
	rss := r.RSS
	return Record{
		Scenario: ScenarioSteadyState,
		Config: Config{N: cfg.Seed, Workers: cfg.Workers, PayloadBytes: cfg.PayloadBytes, DurationSec: cfg.Duration.Seconds(),
			Refill: cfg.Refill, RefillEverySec: cfg.RefillEvery.Seconds(), DeadlineSec: cfg.Deadline.Seconds(),
			LeaseTTLSec: cfg.LeaseTTL.Seconds(), TaskSec: cfg.TaskTime.Seconds(), WindowSec: r.Window.Seconds()},
		ThroughputPerSec:         r.PerSec,
		LatencyMS:                r.Task,
		Count:                    r.Completed,
		Errors:                   r.Errors,
		CreateCompleteMS:         &r.CreateComplete,
		Created:                  r.Created,
		ThroughputWholeRunPerSec: r.WholeRunPerSec,
		MissedDeadlinePct:        &missed,
		Deadlines:                &Deadlines{Expired: r.Expired, CompletedLate: r.CompletedLate, PendingLate: r.PendingLate, Pending: r.Pending},
		Renewals: &Renewals{Count: r.Renewals, PerTask: r.RenewalsPerTask, Share: r.RenewalShare, Claims: r.Claims,
			Completes: r.Completes},
		RSS: &rss,
	}
}
