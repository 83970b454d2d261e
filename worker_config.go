package flowfabric

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// WorkerConfig configures a [Worker]. It has the fields of the original worker SDK's
// configuration; zero values take the defaults documented on each field.
type WorkerConfig struct {
	// Store is the URL of the store the worker opens with ffconnect.Connect, for example
	// "sqlite:///var/lib/flowfabric/ff.db". Required there. [NewWorker] is given a client and
	// ignores it, logging a warning when it is set.
	Store string

	// WorkerID is the worker's pool identity, shared by its instances. Required: 1 to 256
	// bytes without control characters.
	WorkerID string

	// WorkerInstanceID identifies this process. Only one live process may use an instance
	// id at a time (see [Worker]); "" means a fresh random id, which is what a process that
	// restarts often wants.
	WorkerInstanceID string

	// Namespace scopes the worker's registration and its instance id; "" means "default".
	// Claims are not limited to it: a worker serves its lanes in every namespace, which take
	// turns.
	Namespace string

	// Lanes the worker claims from: at least one, at most [MaxWorkerLanes].
	Lanes []string

	// Capabilities the worker holds. It is handed only executions whose required
	// capabilities are among them. Each token is non-empty with no comma, whitespace or
	// control character; at most 256 tokens and 4,096 bytes joined.
	Capabilities []string

	// LeaseTTL is the lease length the worker asks for, 1s to 24h. The worker renews every
	// lease a third of the way through it. 0 means each execution's policy decides (30s
	// unless the policy says otherwise).
	LeaseTTL time.Duration

	// ClaimPollInterval is the longest an idle [Worker.Run] waits before looking for work
	// again; new work wakes it sooner. 0 means 1s; otherwise at least 1ms.
	ClaimPollInterval time.Duration

	// MaxConcurrentTasks is how many claimed tasks the worker holds at once, whether
	// claimed by Run or by hand. 0 means 1.
	MaxConcurrentTasks int

	// Shards, when not 0, is the shard count the worker expects; opening the worker on a
	// store with another count fails. 0 means whatever the store has. The worker reads the
	// count from the store either way ([Worker.Shards]).
	Shards int

	// Logger receives the worker's logs. Nil discards them.
	Logger *slog.Logger
}

// Worker defaults.
const (
	DefaultClaimPollInterval = time.Second
	// minIdleBackoff is the first wait of an idle Run; it doubles up to ClaimPollInterval.
	minIdleBackoff = 50 * time.Millisecond
)

// ConfigError is returned for a [WorkerConfig] or a call argument that is not valid, before
// anything is written. Field names the offending field ("lanes", "capabilities",
// "lease_ttl", …) and is empty when the whole value is at fault. It matches [ErrValidation]
// with errors.Is, and errors.Is(err, &ConfigError{}) matches any ConfigError.
type ConfigError struct {
	// Field is the field at fault, in snake_case.
	Field string
	// Message says what is wrong.
	Message string
	// Err is the underlying validation error, if any.
	Err error
}

// Error implements error.
func (e *ConfigError) Error() string {
	s := "flowfabric: worker config"
	if e.Field != "" {
		s += ": " + e.Field
	}
	return s + ": " + e.Message
}

// Unwrap returns the underlying validation error, if any.
func (e *ConfigError) Unwrap() error { return e.Err }

// Is matches any *ConfigError, and the validation sentinels of package fftype.
func (e *ConfigError) Is(target error) bool {
	switch t := target.(type) {
	case *ConfigError:
		return true
	case *fftype.Error:
		return t.Kind == fftype.KindValidation && (t.Code == "" || t.Code == CodeInvalidWorkerConfig)
	}
	return false
}

// CodeInvalidWorkerConfig is the validation code a [ConfigError] matches.
const CodeInvalidWorkerConfig = "invalid_worker_config"

func configErr(field string, err error) *ConfigError {
	var fe *fftype.Error
	if errors.As(err, &fe) {
		return &ConfigError{Field: field, Message: fe.Message, Err: err}
	}
	return &ConfigError{Field: field, Message: err.Error(), Err: err}
}

// Validate checks the configuration without touching a store. Every refusal is a
// *[ConfigError] naming the field.
func (c *WorkerConfig) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults validates c and returns a copy with the defaults filled in, lanes and
// capabilities normalised (sorted, without duplicates) and slices of its own.
func (c *WorkerConfig) withDefaults() (WorkerConfig, error) {
	if c == nil {
		return WorkerConfig{}, &ConfigError{Message: "no configuration given"}
	}
	out := *c
	if err := fftype.ValidateWorkerID("worker_id", out.WorkerID); err != nil {
		return out, configErr("worker_id", err)
	}
	if out.WorkerInstanceID == "" {
		out.WorkerInstanceID = fftype.NewUUID()
	} else if err := fftype.ValidateWorkerID("worker_instance_id", out.WorkerInstanceID); err != nil {
		return out, configErr("worker_instance_id", err)
	}
	if out.Namespace == "" {
		out.Namespace = fftype.DefaultNamespace
	} else if err := fftype.ValidateNamespace(out.Namespace); err != nil {
		return out, configErr("namespace", err)
	}
	if len(out.Lanes) == 0 {
		return out, &ConfigError{Field: "lanes", Message: "at least one lane is required"}
	}
	lanes := slices.Clone(out.Lanes)
	for _, l := range lanes {
		if err := fftype.ValidateLane(l); err != nil {
			return out, configErr("lanes", err)
		}
	}
	slices.Sort(lanes)
	out.Lanes = slices.Compact(lanes)
	if len(out.Lanes) > MaxWorkerLanes {
		return out, &ConfigError{Field: "lanes", Message: fmt.Sprintf("at most %d lanes", MaxWorkerLanes)}
	}
	caps, err := fftype.NormalizeCapabilities("capabilities", out.Capabilities)
	if err != nil {
		return out, configErr("capabilities", err)
	}
	out.Capabilities = caps
	if out.LeaseTTL != 0 && (out.LeaseTTL < fftype.MinLeaseTTL || out.LeaseTTL > fftype.MaxLeaseTTL) {
		return out, &ConfigError{Field: "lease_ttl", Message: "must be 0 (the policy's) or between " +
			fftype.MinLeaseTTL.String() + " and " + fftype.MaxLeaseTTL.String()}
	}
	switch {
	case out.ClaimPollInterval < 0:
		return out, &ConfigError{Field: "claim_poll_interval", Message: "must not be negative"}
	case out.ClaimPollInterval > 0 && out.ClaimPollInterval < time.Millisecond:
		return out, &ConfigError{Field: "claim_poll_interval", Message: "must be 0 (1s) or at least 1ms: an idle worker would poll the store without pause"}
	case out.ClaimPollInterval == 0:
		out.ClaimPollInterval = DefaultClaimPollInterval
	}
	switch {
	case out.MaxConcurrentTasks < 0:
		return out, &ConfigError{Field: "max_concurrent_tasks", Message: "must not be negative"}
	case out.MaxConcurrentTasks == 0:
		out.MaxConcurrentTasks = 1
	}
	if out.Shards < 0 || out.Shards > fftype.MaxShards {
		return out, &ConfigError{Field: "shards", Message: "must be 0 (the store's) or 1 to 1024"}
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out, nil
}

// livenessTTL is how long the worker's registration lives without a heartbeat: about twice
// the lease TTL, so a crashed process's instance id is free soon after its leases expired.
func (c *WorkerConfig) livenessTTL() time.Duration {
	ttl := c.LeaseTTL
	if ttl == 0 {
		ttl = fftype.DefaultLeaseTTL
	}
	return 2 * ttl
}
