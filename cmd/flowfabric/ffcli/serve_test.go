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
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
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

// TestDevRefusesAFileInNoDirectory pins that "flowfabric dev --db" on a path whose
// directory does not exist fails as bad input, naming the file.
func TestDevRefusesAFileInNoDirectory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "no-such-dir", "ff.db")
	err := Run(t.Context(), []string{"dev", "--addr", "127.0.0.1:0", "--db", path}, &bytes.Buffer{})
	require.ErrorIs(t, err, fftype.ErrValidation)
	require.ErrorContains(t, err, path)
}

// TestNegativeShutdownTimeoutRefused pins that server and dev refuse a negative
// --shutdown-timeout, which would cut every request in flight at once on Ctrl-C, the
// opposite of the drain it asks for.
func TestNegativeShutdownTimeoutRefused(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"server", "dev"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			args := []string{name, "--addr", "127.0.0.1:0", "--shutdown-timeout", "-5s"}
			if name == "server" {
				args = append(args, "--store", "mem:")
			} else {
				args = append(args, "--db", filepath.Join(t.TempDir(), "ff.db"))
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			var out bytes.Buffer
			err := Run(ctx, args, &out)
			require.ErrorContains(t, err, "--shutdown-timeout -5s", out.String())
		})
	}
}

// TestEmptyVariableIsUnset pins that an FF_* variable set to "" (a compose file's
// FF_ADDR: ${FF_ADDR} with the variable unset) counts as unset, so its flag keeps its
// default: taken as given, an empty FF_ADDR had the server listen on every interface on
// a random port. Not parallel: it sets the variables.
func TestEmptyVariableIsUnset(t *testing.T) {
	for _, v := range []string{"FF_ADDR", "FF_STORE", "FF_SHUTDOWN_TIMEOUT", "FF_SERVER", "FF_TIMEOUT"} {
		t.Setenv(v, "")
	}
	root := NewRootCommand(io.Discard)
	for _, tc := range []struct {
		cmd, flag, want string
	}{
		{"server", "addr", "127.0.0.1:8080"},
		{"server", "store", ""},
		{"server", "shutdown-timeout", "15s"},
		{"exec", "server", "http://127.0.0.1:8080"},
		{"exec", "timeout", "1m0s"},
	} {
		cmd, _, err := root.Find([]string{tc.cmd})
		require.NoError(t, err)
		require.NoError(t, cmd.ParseFlags(nil))
		require.NoError(t, cmd.PersistentPreRunE(cmd, nil), "%s --%s", tc.cmd, tc.flag)
		require.Equal(t, tc.want, cmd.Flag(tc.flag).Value.String(), "%s --%s", tc.cmd, tc.flag)
	}
}

// TestEmptyAddrRefused pins that server and dev refuse --addr "", which would listen on
// every interface on a random port, before they open a store.
func TestEmptyAddrRefused(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"server", "dev"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "ff.db")
			args := []string{name, "--addr", ""}
			if name == "server" {
				args = append(args, "--store", "sqlite://"+filepath.ToSlash(path))
			} else {
				args = append(args, "--db", path)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second) // ends a server that started
			defer cancel()
			var out bytes.Buffer
			require.ErrorContains(t, Run(ctx, args, &out), "--addr", out.String())
			require.NoFileExists(t, path, "refused before the store was opened")
		})
	}
}

// startServe runs serve in process with o (its store a fresh SQLite file, its address a
// free loopback port) and returns its address, a function that stops it as Ctrl-C does
// and a channel serve's result arrives on.
func startServe(t *testing.T, o *serveOptions) (addr string, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	ready := make(chan string, 1)
	result := make(chan error, 1)
	o.store, o.addr, o.logLevel, o.ready = "sqlite:///"+filepath.ToSlash(filepath.Join(t.TempDir(), "ff.db")), "127.0.0.1:0", "error", func(a string) { ready <- a }
	if o.timeout == 0 {
		o.timeout = ffserver.DefaultRequestTimeout
	}
	go func() { result <- serve(ctx, io.Discard, o) }()
	select {
	case addr = <-ready:
	case err := <-result:
		t.Fatalf("serve did not start: %v", err)
	}
	return addr, cancel, result
}

// TestShutdownClosesConnectionsWithNoRequest pins that a connection a client opened and
// sent nothing on yet (a browser's preconnect), which net/http's Shutdown waits 5s for,
// does not fail the shutdown: once --shutdown-timeout passes it is closed, and the command
// succeeds because no request was cut.
func TestShutdownClosesConnectionsWithNoRequest(t *testing.T) {
	t.Parallel()
	addr, stop, done := startServe(t, &serveOptions{shutdown: 200 * time.Millisecond})
	idle, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer idle.Close()
	// The server accepts connections in order, so once a later one is answered, the idle
	// one is the server's too.
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + addr + "/healthz")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())

	stop()
	require.NoError(t, <-done, "no request was in flight")
}

// TestShutdownFailsWhenItCutsARequest pins the other side: a request still in flight when
// --shutdown-timeout passes is cut, and the command fails saying so.
func TestShutdownFailsWhenItCutsARequest(t *testing.T) {
	t.Parallel()
	addr, stop, done := startServe(t, &serveOptions{shutdown: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	// The server answers 100 Continue once the handler reads the body, which then stalls.
	_, err = fmt.Fprint(conn, "POST /v1/executions HTTP/1.1\r\nHost: ff\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n")
	require.NoError(t, err)
	status, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, status, "100 Continue")

	stop()
	err = <-done
	require.Error(t, err)
	require.Contains(t, err.Error(), "1 request")
}

// TestRedact pins how a store URL is printed in the server's banner and by migrate: a
// password is masked wherever a URL may carry it (its userinfo, a password or sslpassword
// parameter), and nothing else changes.
func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url, want string
	}{
		{url: "postgres://app:s3cret@db:5432/ff?sslmode=disable", want: "postgres://app:xxxxx@db:5432/ff?sslmode=disable"},
		{url: "postgres://app@db/ff?schema=s", want: "postgres://app@db/ff?schema=s"},
		{url: "postgres://db/ff", want: "postgres://db/ff"},
		{url: "postgres://app@db/ff?password=s3cret&schema=s", want: "postgres://app@db/ff?password=xxxxx&schema=s"},
		{url: "postgres://db/ff?sslpassword=s3cret", want: "postgres://db/ff?sslpassword=xxxxx"},
		{url: "postgres://db/ff?Password=s3cret", want: "postgres://db/ff?Password=xxxxx"},
		{url: "redis://:s3cret@cache:6379/0", want: "redis://:xxxxx@cache:6379/0"},
		{url: "sqlite:///var/lib/ff.db?synchronous=normal", want: "sqlite:///var/lib/ff.db?synchronous=normal"},
		{url: "mem:", want: "mem:"},
		{url: "postgres://app:s3cret@db/%zz", want: "(store URL not shown: it does not parse as a URL)"},
	} {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, redact(tt.url))
		})
	}
}

// TestServerLogsTheStoresWarnings pins that the server's log (stderr, --log-level) carries
// the store's log lines too: here the Redis store's warning that the server has appendonly
// off.
func TestServerLogsTheStoresWarnings(t *testing.T) {
	t.Parallel()
	rd := testdb.NewRedis(t, testdb.RedisOptions{}) // --appendonly no
	bin := buildCLI(t)
	cmd := exec.CommandContext(t.Context(), bin, "server")
	cmd.Env = append(os.Environ(), "FF_STORE="+rd.URL(0)+"?prefix=cliux", "FF_ADDR=127.0.0.1:0", "FF_LOG_LEVEL=warn")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	require.True(t, sc.Scan(), "the server prints where it listens")
	require.Contains(t, sc.Text(), "listening on")
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	for sc.Scan() {
	}
	require.NoError(t, cmd.Wait())
	require.Contains(t, stderr.String(), "appendonly off", "the server's log:\n%s", stderr.String())
}
