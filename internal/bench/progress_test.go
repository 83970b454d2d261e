package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProgressBar(t *testing.T) {
	t.Parallel()
	t0 := time.Now()

	t.Run("terminal", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		b := newProgressBar(&out, true, t0)
		b.report(Progress{Phase: "drain", Done: 50, Total: 200, Unit: "executions"}, t0.Add(time.Second))
		b.report(Progress{Phase: "run", Done: 30, Total: 60, Unit: "s", Completed: 1234}, t0.Add(2*time.Second))
		b.Clear()
		b.Clear()
		require.Equal(t, "\rdrain [#######.......................]  25% 50/200 executions, 1s\x1b[K"+
			"\rrun [###############...............]  50% 30/60 s, 1234 completed, 2s\x1b[K"+
			"\r\x1b[K", out.String())
	})

	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		b := newProgressBar(&out, false, t0)
		p := Progress{Phase: "seed", Done: 10, Total: 10, Unit: "executions"}
		b.report(p, t0.Add(time.Second))
		require.Empty(t, out.String(), "a short run prints nothing")
		b.report(p, t0.Add(plainEvery))
		b.report(p, t0.Add(plainEvery+time.Second))
		b.Clear()
		require.Equal(t, "seed [##############################] 100% 10/10 executions, 10s\n", out.String())
		require.False(t, strings.Contains(out.String(), "\r"))
	})

	require.False(t, isTerminal(&bytes.Buffer{}))
}
