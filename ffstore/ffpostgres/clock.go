package ffpostgres

import (
	"context"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/jackc/pgx/v5"
)

// storeClock reads the server's clock on a connection of its own, not from the pool: the
// engine samples the store's clock from inside units, which hold pool connections, so a
// clock read that waited for the pool could wait for itself once every connection is held
// by a unit doing the same. Concurrent reads share one query.
type storeClock struct {
	mu      sync.Mutex
	pending *clockRead // the read in flight; callers join it

	connMu sync.Mutex // held by the one reader at a time, and by close
	conn   *pgx.Conn
	closed bool
}

type clockRead struct {
	done chan struct{}
	now  time.Time
	err  error
}

// Now returns the database server's clock (clock_timestamp()). It fails after Close,
// with ctx.Err() when ctx is done, and with a retryable unavailable error when the
// database cannot be reached within the connect timeout.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	if s.closed.Load() {
		return time.Time{}, errClosed()
	}
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	c := &s.clock
	c.mu.Lock()
	r := c.pending
	if r == nil {
		r = &clockRead{done: make(chan struct{})}
		c.pending = r
		go func() {
			r.now, r.err = s.readClock()
			c.mu.Lock()
			c.pending = nil
			c.mu.Unlock()
			close(r.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		if r.err != nil && s.closed.Load() {
			return time.Time{}, errClosed()
		}
		return r.now, r.err
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// readClock runs the clock query on the clock's connection, connecting first if needed,
// all within the connect timeout. A connection whose query fails is dropped; if it was
// one kept from an earlier read, which the server may have ended meanwhile (a restart
// does), the read is tried once more on a new connection.
func (s *Store) readClock() (time.Time, error) {
	c := &s.clock
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.closed {
		return time.Time{}, errClosed()
	}
	ctx, cancel := ffstore.WithStoreTimeout(s.stopCtx, s.opts.ConnectTimeout) // shared: no caller's
	defer cancel()
	reused := c.conn != nil && !c.conn.IsClosed()
	now, err := c.read(ctx, s.connect)
	if err != nil && reused && ctx.Err() == nil {
		now, err = c.read(ctx, s.connect)
	}
	return now, translate(ctx, err, "read clock")
}

// read runs the clock query on c's connection, connecting first if there is none. A
// connection whose query failed is closed and dropped. The caller holds connMu.
func (c *storeClock) read(ctx context.Context, connect func(context.Context) (*pgx.Conn, error)) (time.Time, error) {
	if c.conn == nil || c.conn.IsClosed() {
		conn, err := connect(ctx)
		if err != nil {
			return time.Time{}, err
		}
		c.conn = conn
	}
	var now time.Time
	if err := c.conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
		_ = c.conn.Close(ctx)
		c.conn = nil
		return time.Time{}, err
	}
	return now, nil
}

// close closes the clock's connection and refuses later reads.
func (c *storeClock) close() {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	c.closed = true
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.conn.Close(ctx)
		c.conn = nil
	}
}
