package ffvalkey

import (
	"bytes"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestHeadsAfterRestart: a server restarted without persistence numbers its commits from 1
// again. The first read of heads after it races a commit of this process that fills a
// queue the cache knew from before the restart, at a higher number. A worker woken by that
// commit's event must find its head at once.
func TestHeadsAfterRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testdb.NewRedis(t, testdb.RedisOptions{})
	s, err := Open(ctx, srv.URL(0), &Options{Shards: 1, KeyPrefix: testdb.RedisPrefix(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	prefixes := []string{"e:l:"}
	update := func(fn func(tx ffstore.Tx)) error {
		return s.Update(ctx, 0, func(tx ffstore.Tx) error { fn(tx); return nil })
	}
	for run := range 10 {
		for range 20 { // commit numbers well above those a restarted server hands out
			require.NoError(t, update(func(tx ffstore.Tx) { tx.Put("r", []byte("x")) }))
		}
		require.NoError(t, update(func(tx ffstore.Tx) { tx.QueueAdd("e:l:q", "old", 1) }))
		_, err := s.QueueHeads(ctx, prefixes)
		require.NoError(t, err)

		require.NoError(t, srv.Restart())
		// The first unit after the restart loads the library again. Each connection the
		// restart broke fails the first command sent on it, so the calls below, which
		// are idempotent, are repeated until one goes through.
		require.Eventually(t, func() bool {
			return update(func(tx ffstore.Tx) { tx.QueueAdd("e:l:other", "o", 1) }) == nil
		}, 10*time.Second, 10*time.Millisecond)

		var wg sync.WaitGroup
		wg.Go(func() { _, _ = s.QueueHeads(ctx, prefixes) })
		require.Eventually(t, func() bool {
			return update(func(tx ffstore.Tx) { tx.QueueAdd("e:l:q", "new", 2) }) == nil
		}, 10*time.Second, 10*time.Millisecond)
		wg.Wait()
		var heads []ffstore.QueueHead
		require.Eventually(t, func() bool {
			heads, err = s.QueueHeads(ctx, prefixes)
			return err == nil
		}, 10*time.Second, 10*time.Millisecond)
		require.True(t, slices.ContainsFunc(heads, func(h ffstore.QueueHead) bool { return h.Queue == "e:l:q" }),
			"run %d: the head of this process's commit after the restart is missing from %v", run, heads)
	}
}

// TestHeadsAfterLostCommitReply: a commit the server applied but whose reply was lost
// returns an error. This process ignores its own wake-up messages, so the commit itself
// must mark the shard's heads stale: a worker that reads the commit's event must find its
// head at once.
func TestHeadsAfterLostCommitReply(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cut := startReplyCutter(t, testdb.SharedRedis(t).Addr, []byte("e:l:lost"))
	prefixes := []string{"e:l:"}
	for run := range 8 {
		s, err := Open(ctx, "redis://"+cut.addr()+"/0", &Options{Shards: 1, KeyPrefix: testdb.RedisPrefix(t)})
		require.NoError(t, err)
		_, err = s.QueueHeads(ctx, prefixes) // the set is loaded: later calls are served from memory
		require.NoError(t, err)
		cut.arm()
		err = s.Update(ctx, 0, func(tx ffstore.Tx) error {
			tx.QueueAdd("e:l:lost", "m", 1)
			tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventCreated})
			return nil
		})
		require.Error(t, err, "run %d: the commit's reply was lost", run)
		require.Eventually(t, func() bool {
			evs, err := s.ReadEvents(ctx, 0, 0, 10)
			return err == nil && len(evs) == 1
		}, 5*time.Second, 5*time.Millisecond, "run %d: the server applied the commit", run)
		heads, err := s.QueueHeads(ctx, prefixes)
		require.NoError(t, err)
		require.True(t, slices.ContainsFunc(heads, func(h ffstore.QueueHead) bool { return h.Queue == "e:l:lost" }),
			"run %d: the head of the applied commit is missing from %v", run, heads)
		require.NoError(t, s.Close())
	}
}

// replyCutter forwards connections to a server. Once armed, the connection that sends a
// command containing its match is cut on the client's side right after the command is
// forwarded; the server's side stays open, so the server applies the command, and its
// reply is thrown away.
type replyCutter struct {
	ln     net.Listener
	server string
	match  []byte
	armed  atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startReplyCutter(t *testing.T, server string, match []byte) *replyCutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &replyCutter{ln: ln, server: server, match: match}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

func (p *replyCutter) addr() string { return p.ln.Addr().String() }

func (p *replyCutter) arm() { p.armed.Store(true) }

func (p *replyCutter) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.server)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		var cut atomic.Bool
		p.wg.Go(func() { // server to client, until the cut
			buf := make([]byte, 64<<10)
			for {
				n, err := server.Read(buf)
				if n > 0 && !cut.Load() {
					_, _ = client.Write(buf[:n])
				}
				if err != nil {
					return
				}
			}
		})
		p.wg.Go(func() { // client to server
			buf := make([]byte, 64<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					hit := bytes.Contains(buf[:n], p.match) && p.armed.CompareAndSwap(true, false)
					if hit {
						cut.Store(true)
					}
					if _, err := server.Write(buf[:n]); err != nil {
						return
					}
					if hit {
						_ = client.Close()
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
}

func (p *replyCutter) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
