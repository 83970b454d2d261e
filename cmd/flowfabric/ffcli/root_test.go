package ffcli

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
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
