package flowfabric

import "testing"

func TestClip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"}, // the cut falls inside é
		{"héllo", 3, "hé"},
		{"ab😀c", 4, "ab"},
		{"\xffabcdef", 4, "\xffabc"}, // invalid UTF-8 before the cut is not a reason to drop everything
	} {
		if got := clip(tc.s, tc.n); got != tc.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}
