package ffpostgres

import (
	"context"
	"errors"
	"fmt"
	"github.com/flowfabric/flowfabric/ffstore"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Changes implements [ffstore.ChangeNotifier]. The channel wakes at once after this
// process's commits, and after other processes' commits once their NOTIFY arrives on the
// store's listening connection: one dedicated connection per store (not from the pool),
// opened by the first call. After that connection drops, or fails to answer a ping after
// 30 s without a notification (its server gone without a word), the listener reconnects
// and wakes every reader, since it may have missed notifications meanwhile.
func (s *Store) Changes(ctx context.Context) <-chan struct{} {
	ch := s.changes.Changes(ctx)
	s.listenMu.Lock()
	if !s.listener && !s.closed.Load() {
		s.listener = true
		s.wg.Go(s.listen)
	}
	s.listenMu.Unlock()
	return ch
}

// notifyGap is the least time between two NOTIFYs of one process. A NOTIFY costs a round
// trip and a transaction here, Postgres's notify lock, and a message to every listening
// process, this one included; at a few thousand commits a second that was 5–7% of the
// drain benchmark's throughput. Other processes learn of a busy process's commits up to
// this much later; a process that was quiet for longer notifies at once.
const notifyGap = 5 * time.Millisecond

// runNotifier sends one NOTIFY for each burst of commits of this process: commits made
// while one is in flight (or being retried), or within notifyGap of the last, coalesce
// into the next. It runs until Close drains it (notifyDrain) and nothing is due, or
// Close's bound ends notifyCtx.
func (s *Store) runNotifier() {
	gap := time.NewTimer(0)
	defer gap.Stop()
	for {
		select {
		case <-s.notifyCh:
		case <-s.notifyDrain:
			select {
			case <-s.notifyCh: // the last commits' request
			default:
				return
			}
		}
		select {
		case <-s.notifyCtx.Done():
			return
		case <-gap.C:
		}
		gap.Reset(notifyGap)
		s.notify()
	}
}

// notify sends one NOTIFY, each try bounded by the connect timeout, and retries with
// backoff until one is sent or notifyCtx ends: a NOTIFY dropped after a failed try (no
// pooled connection to be had, or a dead one) would leave other processes unaware of the
// commits it stood for until they poll. Commits never wait for it.
func (s *Store) notify() {
	backoff := backoffMin
	for {
		// A try that runs out of its bound is retryable, like any failed send.
		ctx, cancel := ffstore.WithStoreTimeout(s.notifyCtx, s.opts.ConnectTimeout)
		err := translate(ctx, s.exec(ctx, s.sql.notify, s.channel), "notify")
		cancel()
		if err == nil || s.notifyCtx.Err() != nil || !fftype.IsRetryable(err) {
			return // a pool its owner closed before the store never sends again
		}
		s.log.Debug("notify other processes; retrying", "error", err, "backoff", backoff)
		var ok bool
		if backoff, ok = backOff(s.notifyCtx, backoff); !ok {
			return
		}
	}
}

// Retry backoff of the notifier and the listener's reconnects.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 5 * time.Second
)

// backOff waits d, unless ctx ends first, and returns the wait after the next failure and
// whether to try again.
func backOff(ctx context.Context, d time.Duration) (time.Duration, bool) {
	select {
	case <-ctx.Done():
		return d, false
	case <-time.After(d):
		return min(2*d, backoffMax), true
	}
}

// listen holds the LISTEN connection until Close, reconnecting after failures.
func (s *Store) listen() {
	backoff := backoffMin
	first := true
	for s.stopCtx.Err() == nil {
		err := s.listenOnce(func() {
			backoff = backoffMin
			if !first {
				s.log.Info("change listener reconnected")
			}
			first = false
			// Whatever was notified while no connection listened is lost: wake every
			// reader so it reads again.
			s.changes.Notify()
		})
		if s.stopCtx.Err() != nil {
			return
		}
		s.log.Warn("change listener lost its connection; reconnecting", "error", err, "backoff", backoff)
		var ok bool
		if backoff, ok = backOff(s.stopCtx, backoff); !ok {
			return
		}
	}
}

// listenIdle is how long the listener waits for a notification before it checks that its
// connection still answers.
const listenIdle = 30 * time.Second

// listenOnce connects, LISTENs, calls listening, and relays notifications until the
// connection fails or the store closes.
func (s *Store) listenOnce(listening func()) error {
	ctx, cancel := context.WithTimeout(s.stopCtx, s.opts.ConnectTimeout)
	defer cancel()
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	// Under the connect timeout too: a connection that goes silent now would otherwise
	// leave the store listening to nothing, and readers never woken.
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	listening()
	for {
		ctx, cancel := context.WithTimeout(s.stopCtx, s.opts.listenIdle)
		_, err := conn.WaitForNotification(ctx)
		cancel()
		if err == nil {
			s.changes.Notify()
			continue
		}
		if s.stopCtx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		// Quiet for a while: make sure the server is still there. A connection whose
		// server vanished without a word (a host gone, a partition) would otherwise wait
		// for notifications until TCP keepalive gave up on it, most of an hour.
		// And that it still accepts writes: after a failover, the NOTIFYs of units come
		// from the new primary, which a connection to the old one never hears.
		validate := s.pool.Config().ConnConfig.ValidateConnect // the check the store's connections pass
		if validate == nil {
			validate = pgconn.ValidateConnectTargetSessionAttrsReadWrite
		}
		ctx, cancel = context.WithTimeout(s.stopCtx, s.opts.ConnectTimeout)
		err = validate(ctx, conn.PgConn())
		cancel()
		if err != nil {
			return fmt.Errorf("the listening connection stopped answering or turned read-only: %w", err)
		}
	}
}
