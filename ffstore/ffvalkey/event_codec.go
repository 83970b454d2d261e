package ffvalkey

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// Events are stored as one stream entry each, id "<seq>-0", with one field "e" holding
// the event in this encoding (Seq and Shard come from the entry and the stream):
//
//	byte 1 (encoding version)
//	uvarint Version
//	varint  Time seconds, uvarint Time nanoseconds
//	6 strings: Type, ExecutionID, FlowID, Namespace, Lane, Data — each a uvarint length
//	           plus one, then the bytes; length 0 means nil (only Data uses it)

const eventEncoding = 1

func encodeEvent(ev *fftype.Event) []byte {
	n := 1 + 3*binary.MaxVarintLen64 + 6*binary.MaxVarintLen64 +
		len(ev.Type) + len(ev.ExecutionID) + len(ev.FlowID) + len(ev.Namespace) + len(ev.Lane) + len(ev.Data)
	b := make([]byte, 0, n)
	b = append(b, eventEncoding)
	b = binary.AppendUvarint(b, uint64(ev.Version))
	b = binary.AppendVarint(b, ev.Time.Unix())
	b = binary.AppendUvarint(b, uint64(ev.Time.Nanosecond()))
	for _, s := range []string{string(ev.Type), string(ev.ExecutionID), ev.FlowID, ev.Namespace, ev.Lane} {
		b = binary.AppendUvarint(b, uint64(len(s))+1)
		b = append(b, s...)
	}
	if ev.Data == nil {
		b = binary.AppendUvarint(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(ev.Data))+1)
		b = append(b, ev.Data...)
	}
	return b
}

var errBadEvent = errors.New("ffvalkey: malformed event entry") //nolint:gochecknoglobals // a sentinel

func decodeEvent(b []byte, ev *fftype.Event) error {
	if len(b) == 0 || b[0] != eventEncoding {
		return errBadEvent
	}
	b = b[1:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	ver, ok := uv()
	if !ok {
		return errBadEvent
	}
	sec, n := binary.Varint(b)
	if n <= 0 {
		return errBadEvent
	}
	b = b[n:]
	nsec, ok := uv()
	if !ok || nsec >= 1e9 {
		return errBadEvent
	}
	var strs [6][]byte
	for i := range strs {
		l, ok := uv()
		if !ok || l > uint64(len(b))+1 {
			return errBadEvent
		}
		if l == 0 {
			continue
		}
		strs[i] = b[: l-1 : l-1]
		b = b[l-1:]
	}
	if len(b) != 0 {
		return errBadEvent
	}
	ev.Version = int(ver)
	ev.Time = time.Unix(sec, int64(nsec)).UTC()
	ev.Type = fftype.EventType(strs[0])
	ev.ExecutionID = fftype.ExecutionID(strs[1])
	ev.FlowID = string(strs[2])
	ev.Namespace = string(strs[3])
	ev.Lane = string(strs[4])
	ev.Data = nil
	if strs[5] != nil {
		ev.Data = strs[5]
	}
	return nil
}
