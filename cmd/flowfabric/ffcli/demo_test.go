package ffcli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), []string{"-n", "4"}, &out))
	s := out.String()
	require.Contains(t, s, "created 4 executions")
	require.Contains(t, s, "failed; retry scheduled: true")
	require.Contains(t, s, "attempt 1 (retry) completed")
	require.Equal(t, 4, strings.Count(s, " completed: "))
	require.Contains(t, s, "done: 4 of 4 executions completed")
}

func TestDemoRefusesBadCount(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.Error(t, Run(t.Context(), []string{"-n", "0"}, &out))
}
