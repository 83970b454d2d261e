package ffcli

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestHelpFlagSucceeds pins that "-h" on the commands that parse their own flags (demo and
// bench, whose short help says to run "flowfabric bench -h") prints their usage and
// succeeds, like -h on every other command, rather than exiting 1 with "help requested".
func TestHelpFlagSucceeds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cmd, usage string
	}{
		{cmd: "bench", usage: "Usage of flowfabric bench:"},
		{cmd: "demo", usage: "Usage of flowfabric demo:"},
	} {
		t.Run(tt.cmd, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			require.NoError(t, Run(t.Context(), []string{tt.cmd, "-h"}, &out), out.String())
			require.Contains(t, out.String(), tt.usage)
		})
	}
}

// TestRemoteCommandsTokenFromEnvironment pins how the commands that talk to a server take
// FF_API_TOKEN: they send it when --token is not given (--token wins), and their help
// never prints it. Not parallel: it sets FF_API_TOKEN.
func TestRemoteCommandsTokenFromEnvironment(t *testing.T) {
	base := startServer(t, "s3cret-token")
	t.Setenv("FF_API_TOKEN", "s3cret-token")
	for _, args := range [][]string{{"exec", "submit", "-h"}, {"exec", "-h"}, {"worker", "-h"}, {"workers", "-h"}} {
		out := cli(t, args...)
		require.Contains(t, out, "FF_API_TOKEN", "flowfabric %s", strings.Join(args, " "))
		require.NotContains(t, out, "s3cret-token", "flowfabric %s", strings.Join(args, " "))
	}

	out := cli(t, "exec", "submit", "--server", base, "--lane", "env", "--kind", "k", "--payload", `{"n":1}`)
	id := strings.Fields(out)[0]
	out = cli(t, "worker", "--server", base, "--lane", "env", "--once", "--", "sh", "-c", "cat")
	require.Contains(t, out, id)
	require.Equal(t, `{"n":1}`+"\n", cli(t, "exec", "result", "--server", base, id))
	require.Contains(t, cli(t, "workers", "--server", base), "no live workers")

	t.Setenv("FF_API_TOKEN", "wrong")
	require.Contains(t, cli(t, "exec", "get", "--server", base, "--token", "s3cret-token", id), id, "--token wins")
	var stderr bytes.Buffer
	err := Run(t.Context(), []string{"exec", "get", "--server", base, id}, &stderr)
	require.ErrorIs(t, err, fftype.ErrUnauthenticated, "FF_API_TOKEN is sent")
}

// TestExecUnknownSubcommandFails pins that a mistyped exec subcommand ("exec cancle ID")
// fails, so a script does not take the help it used to print, with exit status 0, for a
// cancelled execution; "exec" alone still prints its help.
func TestExecUnknownSubcommandFails(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := Run(t.Context(), []string{"exec", "cancle", "s0_01a21c0e-98f7-7000-9a36-173d5102502a", "--server", "http://127.0.0.1:1"}, &out)
	require.ErrorContains(t, err, `unknown command "cancle" for "flowfabric exec"`)

	require.Contains(t, cli(t, "exec"), "Available Commands")
}

// TestExecListRefusesALimitOutOfRange pins that "exec list --limit" takes only the 1 to
// 1000 its help names: 0, which the client would not send, is not taken for the server's
// default page size.
func TestExecListRefusesALimitOutOfRange(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	for _, limit := range []string{"0", "-1", "1001"} {
		err := Run(t.Context(), []string{"exec", "list", "--server", base, "--limit", limit}, io.Discard)
		require.ErrorContains(t, err, "1 to 1000", "--limit %s", limit)
	}
	require.Contains(t, cli(t, "exec", "list", "--server", base, "--limit", "1000"), "ID")
}

// TestExecResultPrintsABinaryResultAsItIs pins that "exec result ID > file" writes a
// binary result's bytes and nothing else (`worker -- gzip` stores one), even bytes that
// read as JSON; a JSON result gets a newline, to end the line on a terminal.
func TestExecResultPrintsABinaryResultAsItIs(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		result []byte
		enc    fftype.PayloadEncoding
		want   string
	}{
		{[]byte{0xff, 0xfe}, fftype.EncodingBinary, "\xff\xfe"},
		{[]byte("1"), fftype.EncodingBinary, "1"},
		{[]byte(`{"n":1}`), fftype.EncodingJSON, `{"n":1}` + "\n"},
	} {
		_, err := c.Create(t.Context(), fftype.CreateParams{Lane: "results", Kind: "k"})
		require.NoError(t, err)
		leases, err := c.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"results"}})
		require.NoError(t, err)
		require.Len(t, leases, 1)
		require.NoError(t, c.Complete(t.Context(), leases[0].ExecutionID, leases[0].Fence, tc.result, tc.enc))
		require.Equal(t, tc.want, cli(t, "exec", "result", "--server", base, string(leases[0].ExecutionID)), "%s %q", tc.enc, tc.result)
	}
}

// silentServer returns the address of a server that accepts connections and never
// answers, reads nothing, closes nothing, until the test ends.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestRemoteCommandsTimeOut pins that the commands that talk to a server give up on one
// that does not answer after --timeout (or FF_TIMEOUT; by default a minute) rather than
// wait forever: a one-off call, and the worker's start. Not parallel: it sets FF_TIMEOUT.
func TestRemoteCommandsTimeOut(t *testing.T) {
	root := NewRootCommand(io.Discard)
	for _, name := range [][]string{{"exec", "get"}, {"workers"}, {"worker"}} {
		cmd, _, err := root.Find(name)
		require.NoError(t, err)
		require.Equal(t, "1m0s", cmd.Flag("timeout").DefValue, "flowfabric %s", strings.Join(name, " "))
	}

	server := "http://" + silentServer(t)
	t.Setenv("FF_TIMEOUT", "200ms")
	for _, tt := range []struct {
		args   []string
		within string
	}{
		{args: []string{"exec", "get", "--server", server, "s0_01a21c6c-8eb8-7000-8570-aa541e77745e"}, within: "200ms"},
		{args: []string{"exec", "list", "--server", server, "--timeout", "300ms"}, within: "300ms"},
		{args: []string{"workers", "--server", server}, within: "200ms"},
		{args: []string{"worker", "--server", server, "--lane", "l", "--", "true"}, within: "200ms"},
	} {
		name := strings.Join(tt.args, " ")
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // if it does hang, fail instead
		err := Run(ctx, tt.args, io.Discard)
		require.NoError(t, ctx.Err(), "flowfabric %s gave up only when the test did", name)
		cancel()
		require.ErrorContains(t, err, "did not begin within the timeout ("+tt.within+")", "flowfabric %s", name)
	}

	t.Setenv("FF_TIMEOUT", "0s")
	require.ErrorContains(t, Run(t.Context(), []string{"exec", "list", "--server", server}, io.Discard), "--timeout 0s")
}
