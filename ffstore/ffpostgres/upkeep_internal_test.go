package ffpostgres

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestUpkeepCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		t    tableCounters
		want string
	}{
		{"new table, few rows", tableCounters{rows: -1, insertedSinceVacuum: 500, modifiedSinceAnalyze: 500}, ""},
		{"new table filled in bulk", tableCounters{rows: -1, insertedSinceVacuum: 5000, modifiedSinceAnalyze: 5000}, "VACUUM (SKIP_LOCKED, ANALYZE)"},
		{"large table, small change", tableCounters{rows: 100_000, deadRows: 10_000, modifiedSinceAnalyze: 10_000}, ""},
		{"large table, many dead rows", tableCounters{rows: 100_000, deadRows: 15_000, insertedSinceVacuum: 7_000, modifiedSinceAnalyze: 5_000}, "VACUUM (SKIP_LOCKED)"},
		{"large table, a fifth churned", tableCounters{rows: 100_000, modifiedSinceAnalyze: 40_000}, ""},
		{"large table, half churned", tableCounters{rows: 100_000, modifiedSinceAnalyze: 60_000}, "ANALYZE (SKIP_LOCKED)"},
		// Vacuums since the last analyze keep rows current: 20,000 analyzed, 40,000 added.
		{"table tripled since its analyze", tableCounters{rows: 60_000, insertedSinceVacuum: 500, modifiedSinceAnalyze: 40_000}, "ANALYZE (SKIP_LOCKED)"},
		{"churned and dead rows", tableCounters{rows: 100_000, deadRows: 30_000, modifiedSinceAnalyze: 60_000}, "VACUUM (SKIP_LOCKED, ANALYZE)"},
	} {
		require.Equal(t, tc.want, upkeepCommand(tc.t), tc.name)
	}
}
