package ffvalkey

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestParseURLLeavesServerNameToTheDial: rueidis dials every node of a Cluster, even one
// a rediss:// URL reached, with the one tls.Config. A ServerName set there would check
// every node's certificate against that one name; left empty, the TLS dial checks each
// against the address it dials.
func TestParseURLLeavesServerNameToTheDial(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		"rediss://cache.example:6380/2",
		"rediss+cluster://10.0.0.1:7000,10.0.0.2:7000",
		"valkeys+cluster://a.example:7000?addr=b.example:7000",
	} {
		c, err := parseURL(raw)
		require.NoError(t, err, raw)
		require.NotNil(t, c.client.TLSConfig, raw)
		require.Empty(t, c.client.TLSConfig.ServerName, raw)
	}
}
