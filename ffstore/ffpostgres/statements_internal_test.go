package ffpostgres

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWriteStatementNumbersEveryCombination checks, for every combination of parts, that
// the statement (assembled, then served from the cache) uses exactly the parameters
// $1…$n for its n arguments.
func TestWriteStatementNumbersEveryCombination(t *testing.T) {
	t.Parallel()
	st := newStatements(`"s"`)
	placeholder := regexp.MustCompile(`\$P?(\d+)`)
	for mask := 1; mask < 1<<writeParts; mask++ {
		var used [writeParts][]any
		for i := range writeParts {
			if mask&(1<<i) == 0 {
				continue
			}
			used[i] = make([]any, writePartParams[i])
		}
		first, args := st.writeStatement(&used, 7)
		again, _ := st.writeStatement(&used, 7)
		require.Equal(t, first, again, "mask %b", mask)
		require.Equal(t, 7, args[0])
		seen := map[int]bool{}
		for _, m := range placeholder.FindAllStringSubmatch(first, -1) {
			require.NotContains(t, m[0], "$P", "mask %b: a part's placeholder left unnumbered", mask)
			n, _ := strconv.Atoi(m[1])
			seen[n] = true
		}
		for n := 1; n <= len(args); n++ {
			require.True(t, seen[n], "mask %b: $%d unused", mask, n)
		}
		require.Len(t, seen, len(args), "mask %b: placeholders beyond the arguments", mask)
	}
}

// TestWriteStatementRefusesAWrongParameterCount: a part's text is kept by which parts a
// unit uses, so a part given more or fewer parameters than its SQL numbers would bind
// the following parts' arguments to the wrong placeholders. That is a bug in the store,
// caught before anything is sent.
func TestWriteStatementRefusesAWrongParameterCount(t *testing.T) {
	t.Parallel()
	st := newStatements(`"s"`)
	var used [writeParts][]any
	used[partAdd] = []any{[]string{"q"}, []string{"m"}} // three expected
	require.Panics(t, func() { st.writeStatement(&used, 0) })
}
