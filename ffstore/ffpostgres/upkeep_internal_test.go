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
		{"large table, churned in part", tableCounters{rows: 100_000, modifiedSinceAnalyze: 90_000}, ""},
		{"large table, churned through", tableCounters{rows: 100_000, modifiedSinceAnalyze: 110_000}, "ANALYZE (SKIP_LOCKED)"},
		{"table grown tenfold", tableCounters{rows: 5_000, insertedSinceVacuum: 500, modifiedSinceAnalyze: 45_000}, "ANALYZE (SKIP_LOCKED)"},
		{"churned through and dead rows", tableCounters{rows: 100_000, deadRows: 30_000, modifiedSinceAnalyze: 120_000}, "VACUUM (SKIP_LOCKED, ANALYZE)"},
	} {
		require.Equal(t, tc.want, upkeepCommand(tc.t), tc.name)
	}
}
