package engine

import (
	"strconv"
	"strings"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// Kinds of the records of one execution that a claim reads right after popping it.
const (
	kindExec    = "x"
	kindPayload = "p"
)

// Record keys. Keys of one execution follow ffstore's convention "<kind>:<id>[/<suffix>]";
// shard-local keys put a '~' after the colon so that no name in them can be mistaken for
// an execution id.
func execKey(id fftype.ExecutionID) string    { return kindExec + ":" + string(id) }
func payloadKey(id fftype.ExecutionID) string { return kindPayload + ":" + string(id) }
func resultKey(id fftype.ExecutionID) string  { return "r:" + string(id) }

// binaryResultKey holds a result completed as binary; resultKey holds JSON (and, from
// before binary results had their own key, either).
func binaryResultKey(id fftype.ExecutionID) string { return "rb:" + string(id) }
func attemptKey(id fftype.ExecutionID, index int) string {
	return "a:" + string(id) + "/" + strconv.Itoa(index)
}
func idemKey(ns, key string) string { return idemKeyOfMember(idemMember(ns, key)) }

// idemMember names an idempotency key in queueIdem. sep, which neither a namespace nor a
// key may contain, keeps namespaces apart: with "/", ("a/b", "c") and ("a", "b/c") would
// be one key, and a create in one namespace a duplicate of another's.
func idemMember(ns, key string) string { return ns + sep + key }

// idemKeyOfMember maps a member of queueIdem to its record key.
func idemKeyOfMember(member string) string { return "idem:~" + member }
func laneKey(lane string) string           { return "lane:~" + lane }

// laneShard holds the lane registry (pause state).
const laneShard = 0

// sep separates the parts of a queue name. No lane, namespace or capability token may
// contain it.
const sep = "\x1f"

// Queue names. Every queue is per shard.
const (
	queueAll            = "idx" + sep + "all"           // every execution, by creation time
	queueDelayed        = "t" + sep + "delayed"         // runnable executions waiting for a time
	queueLease          = "t" + sep + "lease"           // held leases, by expiry
	queueAttemptTimeout = "t" + sep + "attempt_timeout" // running attempts with a timeout
	queueDeadline       = "t" + sep + "deadline"        // non-terminal executions with a deadline
	queueGrant          = "t" + sep + "grant"           // outstanding grants, by expiry
	queueRetention      = "t" + sep + "retention"       // terminal executions, by end time (timerLag)
	queueIdem           = "t" + sep + "idem"            // idempotency keys, by expiry
	timerPrefix         = "t" + sep
	eligiblePrefix      = "e" + sep
)

// eligibleQueue names the eligible queue of (lane, namespace, required capabilities); the
// name carries the sorted set caps as capsPart writes it.
func eligibleQueue(lane, ns string, caps []string) string {
	return eligibleQueueNamed(lane, ns, capsPart(caps))
}

// eligibleQueueNamed names the eligible queue of (lane, namespace) whose capability part
// is part.
func eligibleQueueNamed(lane, ns, part string) string {
	return eligiblePrefix + lane + sep + ns + sep + part
}

// inlineEligibleQueue is the name the eligible queue of x had before long capability
// sets were named by digest: the set always inline. For a set named by digest it is
// another name of the same queue, which queue entries written before then (or by
// processes of earlier builds during a rolling upgrade) still use; "" for a short set,
// whose name never changed.
func inlineEligibleQueue(x *fftype.Execution) string {
	if joinedLen(x.Capabilities) <= maxInlineCaps {
		return ""
	}
	return eligibleQueueNamed(x.Lane, x.Namespace, strings.Join(x.Capabilities, ","))
}

// eligibleLanePrefix is the prefix shared by every eligible queue of a lane.
func eligibleLanePrefix(lane string) string { return eligiblePrefix + lane + sep }

// parseEligibleQueue splits an eligible queue name into its parts; caps is the
// capability part as capsPart wrote it, which Engine.covers reads.
func parseEligibleQueue(q string) (lane, ns, caps string, ok bool) {
	rest, found := strings.CutPrefix(q, eligiblePrefix)
	if !found {
		return "", "", "", false
	}
	lane, rest, found = strings.Cut(rest, sep)
	if !found {
		return "", "", "", false
	}
	ns, caps, found = strings.Cut(rest, sep)
	if !found || strings.Contains(caps, sep) {
		return "", "", "", false
	}
	return lane, ns, caps, true
}

// priorityBits is how many low bits of an eligible score hold the creation time in ms.
const priorityBits = 43

// priorityScore orders an eligible queue: higher priority first, then older first.
func priorityScore(priority int, created time.Time) int64 {
	return int64(fftype.MaxPriority-priority)<<priorityBits | ms(created)&(1<<priorityBits-1)
}

// priorityOfScore recovers the priority from an eligible score.
func priorityOfScore(score int64) int { return fftype.MaxPriority - int(score>>priorityBits) }

// ms converts a time to Unix milliseconds for a queue score, clamping times before 1970 to
// 0. It rounds up: the engine's clock reads whole milliseconds, but a time computed with a
// duration that has a fraction of a millisecond does not, and a timer whose score were
// rounded down would look due before its record is, be put back with the same score, and
// be popped again at once until the clock passed its time.
func ms(t time.Time) int64 {
	m := t.UnixMilli()
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		m++
	}
	return max(m, 0)
}

// fromMS converts Unix milliseconds to a time.
func fromMS(m int64) time.Time { return time.UnixMilli(m) }
