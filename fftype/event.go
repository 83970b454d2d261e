package fftype

import (
	"encoding/json"
	"slices"
	"time"
)

// EventType names a transition recorded in the event log.
type EventType string

// Event types. Each transition appends exactly one event to its shard's log, in the same
// atomic unit as the transition.
const (
	EventCreated         EventType = "created"
	EventClaimed         EventType = "claimed"
	EventResumed         EventType = "resumed"
	EventReclaimed       EventType = "reclaimed"
	EventProgress        EventType = "progress"
	EventCompleted       EventType = "completed"
	EventFailed          EventType = "failed"
	EventRetryScheduled  EventType = "retry_scheduled"
	EventCancelled       EventType = "cancelled"
	EventDelayed         EventType = "delayed"
	EventPromoted        EventType = "promoted"
	EventLeaseExpired    EventType = "lease_expired"
	EventLeaseReleased   EventType = "lease_released"
	EventLeaseRevoked    EventType = "lease_revoked"
	EventReplayed        EventType = "replayed"
	EventExpired         EventType = "expired"
	EventPriorityChanged EventType = "priority_changed"
	EventTagsChanged     EventType = "tags_changed"
	EventGrantIssued     EventType = "grant_issued"
	EventGrantExpired    EventType = "grant_expired"
	EventDeleted         EventType = "deleted"
	EventLanePaused      EventType = "lane_paused"
	EventLaneResumed     EventType = "lane_resumed"

	// The worker registry's events; they carry no execution.
	EventWorkerRegistered   EventType = "worker_registered"
	EventWorkerDeregistered EventType = "worker_deregistered"
	EventWorkerMarkedDead   EventType = "worker_marked_dead"
)

// eventTypes is every EventType this binary records.
var eventTypes = []EventType{ //nolint:gochecknoglobals // read-only
	EventCreated, EventClaimed, EventResumed, EventReclaimed, EventProgress, EventCompleted,
	EventFailed, EventRetryScheduled, EventCancelled, EventDelayed, EventPromoted,
	EventLeaseExpired, EventLeaseReleased, EventLeaseRevoked, EventReplayed, EventExpired,
	EventPriorityChanged, EventTagsChanged, EventGrantIssued, EventGrantExpired, EventDeleted,
	EventLanePaused, EventLaneResumed, EventWorkerRegistered, EventWorkerDeregistered,
	EventWorkerMarkedDead,
}

// EventTypes returns every event type this binary records, in no particular order.
func EventTypes() []EventType { return slices.Clone(eventTypes) }

// Known reports whether t is an event type this binary records.
func (t EventType) Known() bool { return slices.Contains(eventTypes, t) }

// EventVersion is the version of the event encoding written by this binary.
const EventVersion = 1

// Event is one entry of a shard's durable log. Seq is assigned by the store at append time
// and is gap-free and increasing within the shard.
type Event struct {
	Seq         uint64          `json:"seq"`
	Shard       int             `json:"shard"`
	Version     int             `json:"v"`
	Type        EventType       `json:"type"`
	Time        time.Time       `json:"time"`
	ExecutionID ExecutionID     `json:"execution_id,omitempty"`
	FlowID      string          `json:"flow_id,omitempty"`
	Namespace   string          `json:"namespace,omitempty"`
	Lane        string          `json:"lane,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
}

// EventFilter selects events. Zero fields match everything; Types matches any of its
// types.
type EventFilter struct {
	Namespace   string      `json:"namespace,omitempty"`
	Lane        string      `json:"lane,omitempty"`
	ExecutionID ExecutionID `json:"execution_id,omitempty"`
	FlowID      string      `json:"flow_id,omitempty"`
	Types       []EventType `json:"types,omitempty"`
}

// Match reports whether ev passes the filter.
func (f *EventFilter) Match(ev *Event) bool {
	if f.Namespace != "" && ev.Namespace != f.Namespace || f.Lane != "" && ev.Lane != f.Lane ||
		f.ExecutionID != "" && ev.ExecutionID != f.ExecutionID || f.FlowID != "" && ev.FlowID != f.FlowID {
		return false
	}
	if len(f.Types) == 0 {
		return true
	}
	for _, t := range f.Types {
		if t == ev.Type {
			return true
		}
	}
	return false
}

// Delivery is one event handed to a subscriber, with the cursor that resumes a
// subscription right after it.
type Delivery struct {
	Event  Event  `json:"event"`
	Cursor string `json:"cursor"`
}
