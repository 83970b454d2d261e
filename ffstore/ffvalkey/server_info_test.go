package ffvalkey_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestCheckServer runs the version check on INFO replies as servers send them.
func TestCheckServer(t *testing.T) {
	t.Parallel()
	const redis70 = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n\r\n# Persistence\r\nloading:0\r\naof_enabled:0\r\n\r\n# Cluster\r\ncluster_enabled:0\r\n"
	const redis72aof = "# Server\r\nredis_version:7.2.4\r\nredis_mode:cluster\r\n# Persistence\r\naof_enabled:1\r\n# Cluster\r\ncluster_enabled:1\r\n"
	const redis62 = "# Server\r\nredis_version:6.2.14\r\n# Persistence\r\naof_enabled:1\r\n"
	const redis80rc = "# Server\r\nredis_version:8.0.0-rc1\r\n"
	// Valkey reports an old redis_version for compatibility, and its own version beside it.
	const valkey72 = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:7.2.5\r\nredis_mode:standalone\r\n# Persistence\r\naof_enabled:1\r\n"
	const valkey80 = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n# Cluster\r\ncluster_enabled:1\r\n"
	const valkeyOld = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:7.0.0\r\n"
	const noVersion = "# Server\r\nos:Linux\r\n"

	tests := []struct {
		name, info        string
		product, version  string
		aof, aofKnown, cl bool
		tooOld            bool
	}{
		{name: "Redis70", info: redis70, product: "redis", version: "7.0.15", aofKnown: true},
		{name: "Redis72ClusterAOF", info: redis72aof, product: "redis", version: "7.2.4", aof: true, aofKnown: true, cl: true},
		{name: "Redis80RC", info: redis80rc, product: "redis", version: "8.0.0"},
		{name: "Valkey72", info: valkey72, product: "valkey", version: "7.2.5", aof: true, aofKnown: true},
		{name: "Valkey80", info: valkey80, product: "valkey", version: "8.0.1", cl: true},
		{name: "Redis62", info: redis62, product: "redis", tooOld: true},
		{name: "ValkeyBelow72", info: valkeyOld, product: "valkey", tooOld: true},
		{name: "NoVersion", info: noVersion, tooOld: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			product, version, aof, aofKnown, cluster, err := ffvalkey.CheckServer("127.0.0.1:6379", tt.info)
			if tt.tooOld {
				require.ErrorIs(t, err, fftype.ErrUnavailable)
				require.Equal(t, ffvalkey.CodeServerTooOld, fftype.CodeOf(err))
				require.Contains(t, err.Error(), "Redis 7.0.0+ or Valkey 7.2.0+")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.product, product)
			require.Equal(t, tt.version, version)
			require.Equal(t, tt.aof, aof)
			require.Equal(t, tt.aofKnown, aofKnown)
			require.Equal(t, tt.cl, cluster)
		})
	}
}

// TestOpenRefusesRedis62 opens a store on a fake server that answers as Redis 6.2 does:
// it takes one INFO section at most and answers a syntax error to several. Open must
// still find the version and refuse the server as too old.
func TestOpenRefusesRedis62(t *testing.T) {
	t.Parallel()
	addr := startRedis62(t)
	_, err := ffvalkey.Open(t.Context(), "redis://"+addr+"?dial_timeout=2s", nil)
	require.Equal(t, ffvalkey.CodeServerTooOld, fftype.CodeOf(err), "open on Redis 6.2: %v", err)
	require.Contains(t, err.Error(), "Redis 7.0.0+ or Valkey 7.2.0+")
	require.False(t, fftype.IsRetryable(err))
}

// startRedis62 serves, on a port of its own, the commands a client sends when it connects
// and INFO, answering as Redis 6.2 does; it returns the address.
func startRedis62(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				answerAsRedis62(conn)
			})
		}
	})
	return l.Addr().String()
}

// answerAsRedis62 answers the commands on conn until it closes.
func answerAsRedis62(conn net.Conn) {
	const info = "# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n\r\n# Persistence\r\naof_enabled:0\r\n\r\n# Cluster\r\ncluster_enabled:0\r\n\r\n# Replication\r\nrole:master\r\n"
	r := bufio.NewReader(conn)
	for {
		args, err := readRESPCommand(r)
		if err != nil || len(args) == 0 {
			return
		}
		var reply string
		switch cmd := strings.ToUpper(args[0]); {
		case cmd == "HELLO":
			reply = "%7\r\n+server\r\n+redis\r\n+version\r\n+6.2.14\r\n+proto\r\n:3\r\n+id\r\n:5\r\n+mode\r\n+standalone\r\n+role\r\n+master\r\n+modules\r\n*0\r\n"
		case cmd == "PING":
			reply = "+PONG\r\n"
		case cmd == "INFO" && len(args) > 2:
			reply = "-ERR syntax error\r\n" // Redis before 7.0 takes one section at most
		case cmd == "INFO":
			reply = fmt.Sprintf("=%d\r\ntxt:%s\r\n", len(info)+4, info)
		default:
			reply = "-ERR unknown command '" + args[0] + "'\r\n"
		}
		if _, err := io.WriteString(conn, reply); err != nil {
			return
		}
	}
}

// readRESPCommand reads one command in RESP (an array of bulk strings).
func readRESPCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimRight(line, "\r\n"), "*"))
	if err != nil {
		return nil, err
	}
	args := make([]string, n)
	for i := range args {
		h, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimPrefix(strings.TrimRight(h, "\r\n"), "$"))
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}
