package flowfabric_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
)

func TestWorkerConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() *flowfabric.WorkerConfig {
		return &flowfabric.WorkerConfig{WorkerID: "w", Lanes: []string{"l"}}
	}
	tooMany := make([]string, 257)
	for i := range tooMany {
		tooMany[i] = "c" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	cases := []struct {
		name  string
		mut   func(c *flowfabric.WorkerConfig)
		field string
	}{
		{"NoWorkerID", func(c *flowfabric.WorkerConfig) { c.WorkerID = "" }, "worker_id"},
		{"ControlInWorkerID", func(c *flowfabric.WorkerConfig) { c.WorkerID = "a\nb" }, "worker_id"},
		{"LongInstanceID", func(c *flowfabric.WorkerConfig) { c.WorkerInstanceID = strings.Repeat("i", 257) }, "worker_instance_id"},
		{"BadNamespace", func(c *flowfabric.WorkerConfig) { c.Namespace = "has space" }, "namespace"},
		{"NoLanes", func(c *flowfabric.WorkerConfig) { c.Lanes = nil }, "lanes"},
		{"EmptyLane", func(c *flowfabric.WorkerConfig) { c.Lanes = []string{"ok", ""} }, "lanes"},
		{"EmptyCapability", func(c *flowfabric.WorkerConfig) { c.Capabilities = []string{""} }, "capabilities"},
		{"CommaCapability", func(c *flowfabric.WorkerConfig) { c.Capabilities = []string{"a,b"} }, "capabilities"},
		{"SpaceCapability", func(c *flowfabric.WorkerConfig) { c.Capabilities = []string{"a b"} }, "capabilities"},
		{"ControlCapability", func(c *flowfabric.WorkerConfig) { c.Capabilities = []string{"a\x00"} }, "capabilities"},
		{"TooManyCapabilities", func(c *flowfabric.WorkerConfig) { c.Capabilities = tooMany }, "capabilities"},
		{"CapabilitiesTooLong", func(c *flowfabric.WorkerConfig) {
			c.Capabilities = []string{strings.Repeat("a", 2100), strings.Repeat("b", 2100)}
		}, "capabilities"},
		{"ShortLease", func(c *flowfabric.WorkerConfig) { c.LeaseTTL = time.Millisecond }, "lease_ttl"},
		{"LongLease", func(c *flowfabric.WorkerConfig) { c.LeaseTTL = 25 * time.Hour }, "lease_ttl"},
		{"NegativePoll", func(c *flowfabric.WorkerConfig) { c.ClaimPollInterval = -1 }, "claim_poll_interval"},
		{"BusyPoll", func(c *flowfabric.WorkerConfig) { c.ClaimPollInterval = time.Nanosecond }, "claim_poll_interval"},
		{"NegativeConcurrency", func(c *flowfabric.WorkerConfig) { c.MaxConcurrentTasks = -1 }, "max_concurrent_tasks"},
		{"NegativeShards", func(c *flowfabric.WorkerConfig) { c.Shards = -1 }, "shards"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid()
			c.mut(cfg)
			err := cfg.Validate()
			var ce *flowfabric.ConfigError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, c.field, ce.Field)
			require.Contains(t, err.Error(), c.field, "the message names the field")
			require.ErrorIs(t, err, flowfabric.ErrValidation)
			require.ErrorIs(t, err, &flowfabric.ConfigError{})
		})
	}

	t.Run("Valid", func(t *testing.T) {
		t.Parallel()
		cfg := valid()
		cfg.Capabilities = make([]string, 256)
		for i := range cfg.Capabilities {
			cfg.Capabilities[i] = "c" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		}
		require.NoError(t, cfg.Validate(), "256 tokens is the inclusive limit")
		require.NoError(t, (&flowfabric.WorkerConfig{WorkerID: "w", Lanes: []string{"l"}, LeaseTTL: time.Second, MaxConcurrentTasks: 64}).Validate())
	})

	t.Run("Nil", func(t *testing.T) {
		t.Parallel()
		var cfg *flowfabric.WorkerConfig
		require.ErrorIs(t, cfg.Validate(), &flowfabric.ConfigError{})
	})
}

func TestControlFlowErrors(t *testing.T) {
	t.Parallel()
	cause := errors.New("cause")

	nr := flowfabric.NoRetry(cause)
	require.ErrorIs(t, nr, cause)
	require.ErrorIs(t, nr, &flowfabric.NoRetryError{})
	require.Equal(t, "no retry: cause", nr.Error())

	c := flowfabric.Cancel(cause)
	require.ErrorIs(t, c, cause)
	require.ErrorIs(t, c, &flowfabric.CancelError{})
	require.False(t, errors.Is(c, &flowfabric.NoRetryError{}))

	s := flowfabric.Snooze(time.Minute)
	var se *flowfabric.SnoozeError
	require.ErrorAs(t, s, &se)
	require.Equal(t, time.Minute, se.Duration)
	require.Panics(t, func() { _ = flowfabric.Snooze(-time.Second) })
}
