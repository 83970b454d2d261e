package fftype

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxShards bounds the shard count a store may be created with.
const MaxShards = 1024

// ExecutionID identifies an execution. Its text form is "s<shard>_<uuid>", for example
// "s3_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b": the shard the execution lives on, then a
// lowercase hyphenated UUID. It uses no character that is special in shells or URLs. The
// shard is always read back from the id and never recomputed, so ids survive changes of
// the shard count. Minted UUIDs are version 7, so ids minted by one process sort in
// creation order.
type ExecutionID string

// String returns the text form of the id.
func (id ExecutionID) String() string { return string(id) }

// Shard returns the shard embedded in the id. It returns -1 if the id is malformed; use
// [ParseExecutionID] to validate untrusted input.
func (id ExecutionID) Shard() int {
	s, _, err := splitExecutionID(string(id))
	if err != nil {
		return -1
	}
	return s
}

// ParseExecutionID parses and validates the text form of an execution id. It accepts only
// the canonical form (lowercase hyphenated UUID, decimal shard without leading zeros).
func ParseExecutionID(s string) (ExecutionID, error) {
	if _, _, err := splitExecutionID(s); err != nil {
		return "", err
	}
	return ExecutionID(s), nil
}

func splitExecutionID(s string) (int, string, error) {
	bad := func(why string) error {
		return Validationf(CodeInvalidID, "execution id %q: %s (want s<shard>_<uuid>)", truncate(s, 80), why)
	}
	if len(s) < 3 || s[0] != 's' {
		return 0, "", bad("missing shard prefix")
	}
	us := strings.IndexByte(s, '_')
	if us < 2 {
		return 0, "", bad("missing shard")
	}
	digits := s[1:us]
	if len(digits) > 1 && digits[0] == '0' {
		return 0, "", bad("shard has leading zeros")
	}
	shard, err := strconv.Atoi(digits)
	if err != nil || shard < 0 || shard >= MaxShards || digits[0] == '+' || digits[0] == '-' {
		return 0, "", bad("shard is not a number below " + strconv.Itoa(MaxShards))
	}
	u := s[us+1:]
	if !isCanonicalUUID(u) {
		return 0, "", bad("not a lowercase hyphenated UUID")
	}
	return shard, u, nil
}

func isCanonicalUUID(u string) bool {
	if len(u) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := u[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// NewExecutionID mints an id on the given shard with a fresh version-7 UUID.
func NewExecutionID(shard int) ExecutionID {
	return ExecutionIDFromUUID(shard, NewUUID())
}

// ExecutionIDFromUUID builds an id from a shard and a UUID in canonical form. It panics if
// the UUID is not canonical or the shard is out of range; it is meant for ids built from
// values this package produced.
func ExecutionIDFromUUID(shard int, uuid string) ExecutionID {
	if shard < 0 || shard >= MaxShards || !isCanonicalUUID(uuid) {
		panic("fftype: invalid shard or uuid for execution id")
	}
	return ExecutionID("s" + strconv.Itoa(shard) + "_" + uuid)
}

// ShardForKey returns the shard that an idempotency key maps to: the FNV-1a hash of
// namespace and key, modulo shards. A retried create with the same key therefore lands on
// the shard of its first copy.
func ShardForKey(namespace, key string, shards int) int {
	h := fnv.New32a()
	h.Write([]byte(namespace))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(shards))
}

var uuidState struct {
	sync.Mutex
	lastMS  int64
	counter uint16
}

// NewUUID returns a random version-7 UUID in canonical form. Within one process, UUIDs
// minted in the same millisecond carry an increasing 12-bit counter, so they sort in the
// order they were minted.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("fftype: crypto/rand failed: " + err.Error())
	}
	ms := time.Now().UnixMilli()
	uuidState.Lock()
	if ms <= uuidState.lastMS {
		ms = uuidState.lastMS
		uuidState.counter++
		if uuidState.counter > 0x0fff {
			ms++
			uuidState.counter = 0
		}
	} else {
		uuidState.counter = 0
	}
	uuidState.lastMS = ms
	counter := uuidState.counter
	uuidState.Unlock()

	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(ms))
	copy(b[0:6], ts[2:8])
	b[6] = 0x70 | byte(counter>>8)
	b[7] = byte(counter)
	b[8] = 0x80 | (b[8] & 0x3f)
	return formatUUID(b)
}

func formatUUID(b [16]byte) string {
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
