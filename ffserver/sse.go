package ffserver

import (
	"fmt"
	"net/http"
	"time"

	"github.com/flowfabric/flowfabric"
)

// sseHeartbeat is how often an idle event stream sends a comment, so proxies keep it open.
const sseHeartbeat = 15 * time.Second

// streamEvents writes a subscription as server-sent events: each event's id is the cursor
// that resumes after it (browsers send it back as Last-Event-ID on reconnect), its event
// name is the event type, its data the event as JSON. When start is not empty, the stream
// opens with it as an id alone, which sets a browser's lastEventId without an event. At
// each keep-alive, once the client has every event pushed so far, an id alone moves it on
// to the subscription's position when that has moved: past the events the filter skipped,
// which retention may delete, so that a client following a quiet filter does not resume
// from a position that expired though it missed nothing. A HEAD gets the status and
// headers alone, as for any route. The stream ends when the client goes away or the server
// shuts down; a subscription that fails (cursor_expired) ends it with an "error" event
// carrying the error body.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, sub *flowfabric.Subscription, start string) error {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", mediaEvents)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil // the status and headers are the answer; a stream into a body nobody reads would never end
	}
	if start != "" {
		if _, err := fmt.Fprintf(w, "id: %s\n\n", start); err != nil {
			return nil
		}
	}
	if err := rc.Flush(); err != nil {
		return nil // the client is gone, or the writer cannot stream
	}
	// The position the client resumes from, sent or, for a stream from the start, the one
	// it asked for; and how many deliveries it was sent.
	known, sent := sub.StartCursor(), uint64(0)
	beat := time.NewTicker(s.heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.closing:
			return nil // the server is shutting down; the client reconnects with its cursor
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			// Only once every delivery pushed before the position was sent: those not
			// sent yet come before it.
			if at, pushed := sub.Position(); pushed == sent && at != known {
				if _, err := fmt.Fprintf(w, "id: %s\n\n", at); err != nil {
					return nil
				}
				known = at
			}
		case d, ok := <-sub.Events():
			if !ok {
				if err := sub.Err(); err != nil {
					fmt.Fprint(w, "event: error\ndata: ")
					_ = NewJSONEncoder(w).Encode(errorBody(err)) // one line, and the newline ends the data
					fmt.Fprint(w, "\n")
					_ = rc.Flush()
				}
				return nil
			}
			if _, err := fmt.Fprintf(w, "id: %s\nevent: %s\ndata: ", d.Cursor, d.Event.Type); err != nil {
				return nil
			}
			if err := NewJSONEncoder(w).Encode(d.Event); err != nil {
				return nil
			}
			if _, err := fmt.Fprint(w, "\n"); err != nil {
				return nil
			}
			known, sent = d.Cursor, sent+1
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
	}
}
