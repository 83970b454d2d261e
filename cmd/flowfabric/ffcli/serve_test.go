package ffcli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffserver"
)

// TestServerRequestTimeout runs the real binary's server with FF_REQUEST_TIMEOUT: a
// request whose body stalls is answered 503 "timeout" once the timeout passes.
func TestServerRequestTimeout(t *testing.T) {
	t.Parallel()
	bin := buildCLI(t)
	cmd, sc, base := startServerBinary(t, bin, append(os.Environ(), "FF_STORE=mem:", "FF_ADDR=127.0.0.1:0", "FF_LOG_LEVEL=error", "FF_REQUEST_TIMEOUT=300ms"))

	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	_, err = fmt.Fprint(conn, "POST /v1/executions HTTP/1.1\r\nHost: ff\r\nContent-Length: 100\r\n\r\n{\"lane\":")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(raw))
	var e ffserver.ErrorBody
	require.NoError(t, json.Unmarshal(raw, &e), string(raw))
	require.Equal(t, "timeout", e.Code)
	require.Less(t, time.Since(start), 10*time.Second, "answered at the 300ms timeout, not the 30s default")

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	for sc.Scan() { // the rest of its output, until it exits
	}
	require.NoError(t, cmd.Wait(), "a clean shutdown on SIGINT")
}

// cancelOnBanner is an io.Writer for a dev command run in process: it keeps what the
// command prints and cancels the run once the banner says the server listens.
type cancelOnBanner struct {
	syncBuffer
	cancel context.CancelFunc
}

func (w *cancelOnBanner) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("Stop with Ctrl-C.")) {
		w.cancel()
	}
	return w.syncBuffer.Write(p)
}

// TestDevDBIsAFilePath pins that dev --db takes a file path, not a piece of URL: a name
// holding '%', '?' or '#' opens (creates) exactly that file.
func TestDevDBIsAFilePath(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"a%41b.db", "what?.db", "no#1.db", "all %41?x=1#y.db"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), name)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			out := &cancelOnBanner{cancel: cancel}
			err := Run(ctx, []string{"dev", "--db", path, "--addr", "127.0.0.1:0", "--log-level", "error"}, out)
			require.NoError(t, err, out.String())
			require.Contains(t, out.String(), "Stop with Ctrl-C.", "dev started")
			require.FileExists(t, path)
		})
	}
}
