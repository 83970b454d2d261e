package ffcli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

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
