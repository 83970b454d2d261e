package ffclient

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// TestServerClockReadersDoNotWaitOnTheServer: while one reader of the clock reads the
// server's time again, the others go on with the last offset rather than wait for it.
func TestServerClockReadersDoNotWaitOnTheServer(t *testing.T) {
	client, err := flowfabric.NewClient(ffmem.New(nil), nil)
	require.NoError(t, err)
	srv, err := ffserver.New(client, ffserver.Config{})
	require.NoError(t, err)
	var block atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/info" && block.Load() {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		srv.ServeHTTP(w, r)
	}))
	defer hs.Close()
	c, err := New(hs.URL, nil)
	require.NoError(t, err)
	k := &serverClock{c: c}
	k.Now() // the first reading

	block.Store(true)
	k.mu.Lock()
	k.lastTry = time.Now().Add(-clockSync)
	k.mu.Unlock()
	var syncDone atomic.Bool
	go func() {
		k.Now() // reads the server's time again, and waits for the server
		syncDone.Store(true)
	}()
	<-entered
	k.Now()
	require.False(t, syncDone.Load(), "a reader returned while another waited on the server")
	close(release)
	require.Eventually(t, syncDone.Load, 5*time.Second, time.Millisecond)
}
