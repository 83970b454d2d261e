package ffcli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/fftype"
)

// startServer runs the server command in process on a fresh SQLite file and a free
// loopback port, and returns its base URL. It stops when the test ends.
func startServer(t *testing.T, token string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	var out bytes.Buffer
	// The shutdown bound exceeds the 5s net/http waits for a connection that was opened
	// but has sent nothing yet (an HTTP client racing a dial against a connection that came
	// free leaves one now and then), so such a connection ends on its own.
	o := &serveOptions{store: "sqlite://" + filepath.ToSlash(filepath.Join(t.TempDir(), "ff.db")), addr: "127.0.0.1:0",
		token: token, logLevel: "error", shutdown: 10 * time.Second, ready: func(a string) { addr <- a }}
	go func() { done <- serve(ctx, &out, o) }()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done, "graceful shutdown")
		require.Contains(t, out.String(), "shutting down")
	})
	return base
}

// cli runs the flowfabric command in process and returns what it printed.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	root := NewRootCommand(&out)
	root.SetArgs(args)
	require.NoError(t, root.ExecuteContext(t.Context()), "flowfabric %s\n%s", strings.Join(args, " "), out.String())
	return out.String()
}

// buildCLI builds the real binary once per test run.
// startServerBinary starts `flowfabric server` from bin with env and returns the process, a
// scanner of its output after the line saying where it listens, and its base URL.
func startServerBinary(t *testing.T, bin string, env []string) (*exec.Cmd, *bufio.Scanner, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, "server")
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	require.True(t, sc.Scan(), "the server prints where it listens")
	return cmd, sc, strings.Fields(strings.TrimPrefix(sc.Text(), "flowfabric server listening on "))[0]
}

func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "flowfabric")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/flowfabric/flowfabric/cmd/flowfabric")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

func TestEndToEndCLIAndGoClient(t *testing.T) {
	t.Parallel()
	base := startServer(t, "e2e-token")
	out := cli(t, "exec", "submit", "--server", base, "--token", "e2e-token", "--lane", "cli", "--kind", "echo", "--payload", `{"n":21}`)
	id := strings.Fields(out)[0]
	require.Contains(t, out, "waiting")

	out = cli(t, "worker", "--server", base, "--token", "e2e-token", "--lane", "cli", "--once", "--", "sh", "-c", "cat")
	require.Contains(t, out, id+" completed")
	out = cli(t, "exec", "result", "--server", base, "--token", "e2e-token", id)
	require.JSONEq(t, `{"n":21}`, strings.TrimSpace(out))
	out = cli(t, "exec", "list", "--server", base, "--token", "e2e-token", "--lane", "cli", "--state", "completed")
	require.Contains(t, out, id)

	// A failing command fails the attempt; the policy retries it. With --once, the worker
	// fails too.
	out = cli(t, "exec", "submit", "--server", base, "--token", "e2e-token", "--lane", "fails", "--kind", "k")
	failing := strings.Fields(out)[0]
	var failed bytes.Buffer
	err := Run(t.Context(), []string{"worker", "--server", base, "--token", "e2e-token", "--lane", "fails", "--once", "--",
		"sh", "-c", "echo nope >&2; exit 3"}, &failed)
	require.ErrorContains(t, err, failing+" failed: exit status 3")
	require.Contains(t, failed.String(), failing+" failed")
	require.Contains(t, failed.String(), "retry scheduled: true")

	c, err := ffclient.New(base, &ffclient.Config{Token: "e2e-token"})
	require.NoError(t, err)
	atts, err := c.Attempts(t.Context(), fftype.ExecutionID(failing))
	require.NoError(t, err)
	require.Contains(t, atts[0].FailureReason, "exit status 3: nope")

	out = cli(t, "exec", "cancel", "--server", base, "--token", "e2e-token", "--reason", "enough", failing)
	require.Contains(t, out, "cancelled")
	out = cli(t, "exec", "get", "--server", base, "--token", "e2e-token", failing)
	var x map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &x))
	require.Equal(t, "cancelled", x["state"])

	var buf bytes.Buffer
	root := NewRootCommand(&buf)
	root.SetArgs([]string{"exec", "get", "--server", base, "--token", "wrong", failing})
	require.ErrorIs(t, root.ExecuteContext(t.Context()), fftype.ErrUnauthenticated)

	// An event stream still open when the server stops must not hold up its graceful
	// shutdown: the test's cleanup requires serve to return nil within its timeout.
	streaming := make(chan struct{})
	go func() {
		var once sync.Once
		_ = c.Events(context.Background(), fftype.EventFilter{}, "start", func(fftype.Delivery) error {
			once.Do(func() { close(streaming) })
			return nil
		})
	}()
	<-streaming
}

func TestEndToEndBinaryAndCurlWorker(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	bin := buildCLI(t)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Env = append(os.Environ(), "FF_SERVER="+base)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "flowfabric %s: %s", strings.Join(args, " "), out)
		return string(out)
	}
	out := run("exec", "submit", "--lane", "shell", "--kind", "greet", "--payload", `{"name":"Ada"}`)
	id := strings.Fields(out)[0]

	// A worker written in shell with curl and jq: claim, compute, complete.
	script := filepath.Join(t.TempDir(), "worker.sh")
	require.NoError(t, os.WriteFile(script, []byte(`#!/bin/sh
set -eu
S="$1"
resp=$(curl -sf "$S/v1/claim" -d '{"worker_id":"sh","worker_instance_id":"sh-1","lanes":["shell"],"wait_ms":5000}')
id=$(printf '%s' "$resp" | jq -r '.leases[0].execution_id')
fence=$(printf '%s' "$resp" | jq -c '.leases[0].fence')
name=$(printf '%s' "$resp" | jq -r '.leases[0].payload.name')
curl -sf "$S/v1/executions/$id/complete" -d "{\"fence\":$fence,\"result\":{\"greeting\":\"hello $name\"}}" >/dev/null
echo "$id"
`), 0o755))
	cmd := exec.CommandContext(t.Context(), "sh", script, base)
	got, err := cmd.CombinedOutput()
	require.NoError(t, err, string(got))
	require.Equal(t, id, strings.TrimSpace(string(got)))

	out = run("exec", "result", id)
	require.JSONEq(t, `{"greeting":"hello Ada"}`, strings.TrimSpace(out))

	// Raw HTTP mistakes get clear JSON errors.
	bad := exec.CommandContext(t.Context(), "curl", "-s", "-o", "-", "-w", "\n%{http_code}", base+"/v1/executions", "-d", "{nope")
	got, err = bad.CombinedOutput()
	require.NoError(t, err, string(got))
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	require.Equal(t, "400", lines[len(lines)-1])
	require.Contains(t, lines[0], `"code":"invalid_input"`)
}

// TestServerFlagsFromEnvironment runs the real binary's server configured only by FF_*
// variables: it listens where FF_ADDR says, on the FF_STORE store, requires the
// FF_API_TOKEN token, and shuts down cleanly on SIGINT. A variable that does not parse
// fails the command, and every flag of server, dev and migrate names its variable.
func TestServerFlagsFromEnvironment(t *testing.T) {
	t.Parallel()
	root := NewRootCommand(io.Discard)
	for _, name := range []string{"server", "dev", "migrate"} {
		cmd, _, err := root.Find([]string{name})
		require.NoError(t, err)
		for _, line := range strings.Split(strings.TrimSpace(cmd.Flags().FlagUsages()), "\n") {
			require.Regexp(t, `\(FF_[A-Z_]+\)`, line, "flowfabric %s: a flag has no FF_* variable", name)
		}
	}

	bin := buildCLI(t)
	environ := append(os.Environ(), "FF_STORE=sqlite://"+filepath.ToSlash(filepath.Join(t.TempDir(), "ff.db")),
		"FF_ADDR=127.0.0.1:0", "FF_API_TOKEN=env-token", "FF_LOG_LEVEL=error")
	bad := exec.CommandContext(t.Context(), bin, "server")
	bad.Env = append(environ, "FF_SHUTDOWN_TIMEOUT=soon")
	got, err := bad.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(got), `FF_SHUTDOWN_TIMEOUT="soon"`)

	cmd, sc, base := startServerBinary(t, bin, append(environ, "FF_SHUTDOWN_TIMEOUT=3s"))

	anon, err := ffclient.New(base, nil)
	require.NoError(t, err)
	_, err = anon.List(t.Context(), fftype.ListParams{})
	require.ErrorIs(t, err, fftype.ErrUnauthenticated, "FF_API_TOKEN is required")
	c, err := ffclient.New(base, &ffclient.Config{Token: "env-token"})
	require.NoError(t, err)
	_, err = c.Create(t.Context(), fftype.CreateParams{Lane: "env", Kind: "k"})
	require.NoError(t, err)

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "shutting down") {
			break
		}
	}
	require.NoError(t, cmd.Wait(), "a clean shutdown on SIGINT")
}

// TestSecondInterruptStopsAtOnce: while the server drains a request that will not finish,
// a second SIGINT ends the process instead of waiting out the shutdown timeout.
func TestSecondInterruptStopsAtOnce(t *testing.T) {
	t.Parallel()
	bin := buildCLI(t)
	cmd, sc, base := startServerBinary(t, bin, append(os.Environ(),
		"FF_STORE=sqlite://"+filepath.ToSlash(filepath.Join(t.TempDir(), "ff.db")), "FF_ADDR=127.0.0.1:0",
		"FF_LOG_LEVEL=error", "FF_SHUTDOWN_TIMEOUT=10m", "FF_REQUEST_TIMEOUT=10m"))
	// A request in flight: its body never finishes arriving.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	// Until a handler reads it, the request is not in flight: the shutdown would drop it
	// and end cleanly, before the second signal (which must come repeatSignalGap after the
	// first) could end it. The server answers "100 Continue" when the handler starts
	// reading the body.
	_, err = fmt.Fprintf(conn, "POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
	require.NoError(t, err)
	status, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 100 Continue\r\n", status)
	_, err = fmt.Fprint(conn, "{")
	require.NoError(t, err)

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "shutting down") {
	}
	time.Sleep(repeatSignalGap) // sooner, it would count as the same Ctrl-C
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.Error(t, err, "stopped by the second signal, not by a clean shutdown")
	case <-time.After(time.Minute):
		t.Fatal("the second interrupt did not stop the process")
	}
}
