package ffcli

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "demo.db")
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"demo", "-n", "4", "-db", db}, &out))
	s := out.String()
	require.Contains(t, s, "on the SQLite file "+db)
	require.Contains(t, s, "created 4 executions")
	require.Contains(t, s, "failed; retry scheduled: true")
	require.Contains(t, s, "attempt 1 (retry) completed")
	require.Equal(t, 4, strings.Count(s, " completed: "))
	require.Contains(t, s, "done: 4 of 4 executions completed")
}

// TestDemoTwice runs the demo twice on one file: the second run finds the first run's
// executions in the file and still reports only its own.
func TestDemoTwice(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "demo.db")
	lane := regexp.MustCompile(`in lane "([^"]+)"`)
	var lanes []string
	for _, n := range []string{"3", "2"} {
		var out bytes.Buffer
		require.NoError(t, Run(t.Context(), []string{"demo", "-n", n, "-db", db}, &out))
		s := out.String()
		require.Contains(t, s, "done: "+n+" of "+n+" executions completed")
		require.Equal(t, strings.Count(s, " completed: "), int(n[0]-'0'))
		m := lane.FindStringSubmatch(s)
		require.NotNil(t, m, s)
		lanes = append(lanes, m[1])
	}
	require.NotEqual(t, lanes[0], lanes[1], "each run uses a lane of its own")
}

func TestDemoRefusesBadArguments(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-n", "0"}, {"-n", "10001"}, {"stray"}, {"demo", "stray"}} {
		var out bytes.Buffer
		require.Error(t, Run(t.Context(), args, &out), "%q", args)
	}
}

// TestNoArgumentsPrintsTheCommands pins that "flowfabric" alone prints its help, which
// lists the commands, and runs none: no demo file appears. Not parallel: it changes
// directory.
func TestNoArgumentsPrintsTheCommands(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, args := range [][]string{nil, {"help"}} {
		var out bytes.Buffer
		require.NoError(t, Run(t.Context(), args, &out), "%q", args)
		require.Contains(t, out.String(), "Usage:\n  flowfabric [command]\n", "%q", args)
		for _, cmd := range []string{"dev", "server", "migrate", "exec", "worker", "workers", "demo", "bench"} {
			require.Regexp(t, "\n  "+cmd+" +[A-Z]", out.String(), "%q", args)
		}
	}
	require.NoFileExists(t, DefaultDemoDB)
}
