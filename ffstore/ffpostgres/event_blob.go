package ffpostgres

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// A unit's events travel and are kept as one blob, not as a row each: a unit's write
// statement inserts one event_pending row, and the sequencer moves it whole into one
// event_blocks row. Sending the events as nine parallel arrays cost more than all the
// rest of a claim's write statement; one bytea costs next to nothing on either side.
//
// The blob is the events in order, each:
//
//	int4 Version, int8 Time seconds, int4 Time nanoseconds (all big-endian)
//	Type, ExecutionID, FlowID, Namespace, Lane: int4 length, then the bytes
//	Data: int4 length (-1 for nil), then the bytes
//
// Fixed-width big-endian integers are what Postgres's int4send and int8send write, so a
// migration can build blobs from rows in SQL (see migrations[1]); that is why this is not
// the varint encoding ffvalkey keeps one stream entry in. Seq and Shard are not in the
// blob: they are the block's.

// errEventBlob reports a blob that does not decode.
var errEventBlob = errors.New("ffpostgres: malformed event block")

// appendEventBlob appends ev to blob.
func appendEventBlob(blob []byte, ev *fftype.Event) []byte {
	blob = binary.BigEndian.AppendUint32(blob, uint32(int32(ev.Version))) //nolint:gosec // a small version number
	blob = binary.BigEndian.AppendUint64(blob, uint64(ev.Time.Unix()))    //nolint:gosec // two's complement, decoded back
	blob = binary.BigEndian.AppendUint32(blob, uint32(ev.Time.Nanosecond()))
	for _, s := range [...]string{string(ev.Type), string(ev.ExecutionID), ev.FlowID, ev.Namespace, ev.Lane} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(s))) //nolint:gosec // events are far below 2 GiB
		blob = append(blob, s...)
	}
	if ev.Data == nil {
		return binary.BigEndian.AppendUint32(blob, math.MaxUint32) // -1
	}
	blob = binary.BigEndian.AppendUint32(blob, uint32(len(ev.Data))) //nolint:gosec // events are far below 2 GiB
	return append(blob, ev.Data...)
}

// decodeEventBlob appends to out the events of shard's block numbered first to last,
// skipping those with Seq at most after and stopping once out holds limit. A blob that
// does not hold exactly last-first+1 events is an error.
func decodeEventBlob(out []fftype.Event, shard int, first, last uint64, blob []byte, after uint64, limit int) ([]fftype.Event, error) {
	b := blob
	seq := first
	for ; seq <= last && len(out) < limit; seq++ {
		if len(b) < 16 {
			return out, errEventBlob
		}
		ev := fftype.Event{Shard: shard, Seq: seq}
		ev.Version = int(int32(binary.BigEndian.Uint32(b))) //nolint:gosec // written from an int32
		sec := int64(binary.BigEndian.Uint64(b[4:]))        //nolint:gosec // written from an int64
		nsec := binary.BigEndian.Uint32(b[12:])
		b = b[16:]
		if nsec >= 1e9 {
			return out, errEventBlob
		}
		ev.Time = time.Unix(sec, int64(nsec)).UTC()
		var strs [6][]byte
		for i := range strs {
			if len(b) < 4 {
				return out, errEventBlob
			}
			n := binary.BigEndian.Uint32(b)
			b = b[4:]
			if i == len(strs)-1 && n == math.MaxUint32 {
				continue // nil Data
			}
			if uint64(n) > uint64(len(b)) {
				return out, errEventBlob
			}
			strs[i], b = b[:n:n], b[n:]
		}
		if seq <= after {
			continue
		}
		ev.Type = fftype.EventType(strs[0])
		ev.ExecutionID = fftype.ExecutionID(strs[1])
		ev.FlowID, ev.Namespace, ev.Lane = string(strs[2]), string(strs[3]), string(strs[4])
		if strs[5] != nil {
			ev.Data = append([]byte{}, strs[5]...) // a copy, so that the event does not pin its block
		}
		out = append(out, ev)
	}
	if seq > last && len(b) != 0 {
		return out, errEventBlob
	}
	return out, nil
}
