package testdb_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/internal/testdb"
)

func redisClient(t *testing.T, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// TestRedisRestart checks that a server with appendonly keeps its data over Restart, on
// the same port, and that one without loses it.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	for _, durable := range []bool{true, false} {
		t.Run(map[bool]string{true: "AppendOnly", false: "NoPersistence"}[durable], func(t *testing.T) {
			t.Parallel()
			var opts testdb.RedisOptions
			if durable {
				opts.Args = []string{"--appendonly", "yes", "--appendfsync", "always"}
			}
			r := testdb.NewRedis(t, opts)
			ctx := t.Context()
			c := redisClient(t, r.Addr)
			require.NoError(t, c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error())
			port := r.Port
			require.NoError(t, r.Restart())
			require.Equal(t, port, r.Port)
			v, err := c.Do(ctx, c.B().Get().Key("k").Build()).ToString()
			if durable {
				require.NoError(t, err)
				require.Equal(t, "v", v)
			} else {
				require.True(t, rueidis.IsRedisNil(err), "got %q, %v", v, err)
			}
		})
	}
}

// TestRedisCluster checks that a started Cluster serves every slot on three primaries.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cl, err := testdb.StartRedisCluster(3, testdb.RedisClusterOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Remove() })
	require.Len(t, cl.Nodes, 3)
	require.Contains(t, cl.URL(), "redis+cluster://127.0.0.1:")
	c := redisClient(t, cl.Nodes[0].Addr)
	checkCluster(t, c)
}

// TestRedisTLSCluster checks that the nodes of a TLS Cluster listen on addresses of their
// own, each with a certificate for its address alone, and serve every slot over TLS to a
// client that checks each node against the address it dials.
func TestRedisTLSCluster(t *testing.T) {
	t.Parallel()
	cl, err := testdb.StartRedisCluster(3, testdb.RedisClusterOptions{TLS: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Remove() })
	require.Len(t, cl.Nodes, 3)
	require.Equal(t, "rediss+cluster://"+cl.Nodes[0].Addr+","+cl.Nodes[1].Addr+","+cl.Nodes[2].Addr+
		"?ca_file="+url.QueryEscape(cl.CAFile), cl.URL())
	pemBytes, err := os.ReadFile(cl.CAFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pemBytes))
	for i, n := range cl.Nodes {
		host, _, err := net.SplitHostPort(n.Addr)
		require.NoError(t, err)
		require.Equal(t, net.IPv4(127, 0, 0, byte(2+i)).String(), host)
		conn, err := tls.Dial("tcp", n.Addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		require.NoError(t, err, "the certificate is for the node's address")
		_ = conn.Close()
		other, _, _ := net.SplitHostPort(cl.Nodes[(i+1)%3].Addr)
		_, err = tls.Dial("tcp", n.Addr, &tls.Config{RootCAs: pool, ServerName: other, MinVersion: tls.VersionTLS12})
		require.Error(t, err, "the certificate is not for another node's address")
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cl.Nodes[0].Addr}, DisableCache: true,
		TLSConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	checkCluster(t, c)
}

// checkCluster checks that c is a Cluster client of three nodes that serves every slot.
func checkCluster(t *testing.T, c rueidis.Client) {
	t.Helper()
	require.Equal(t, rueidis.ClientModeCluster, c.Mode())
	for _, key := range []string{"a", "b", "c", "{x}1", "{y}2"} {
		require.NoError(t, c.Do(t.Context(), c.B().Set().Key(key).Value("v").Build()).Error(), key)
	}
	info, err := c.Do(t.Context(), c.B().ClusterInfo().Build()).ToString()
	require.NoError(t, err)
	require.Contains(t, info, "cluster_state:ok")
	require.Contains(t, info, "cluster_known_nodes:3")
}

func TestRedisPrefixIsFresh(t *testing.T) {
	t.Parallel()
	require.NotEqual(t, testdb.RedisPrefix(t), testdb.RedisPrefix(t))
}

// TestRedisTLS checks that a TLS server with a password serves clients that trust its
// CA and give the password, refuses plain connections, and restarts (SHUTDOWN goes over
// TLS too).
func TestRedisTLS(t *testing.T) {
	t.Parallel()
	r := testdb.NewRedis(t, testdb.RedisOptions{TLS: true, Password: "s3cret"})
	require.Equal(t, "rediss://:s3cret@"+r.Addr+"/2?ca_file="+url.QueryEscape(r.TLS.CAFile), r.URL(2))
	pemBytes, err := os.ReadFile(r.TLS.CAFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pemBytes))
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{r.Addr}, DisableCache: true, Password: "s3cret", SelectDB: 2,
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx := t.Context()
	require.NoError(t, c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error())

	_, err = rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{r.Addr}, DisableCache: true, Password: "s3cret",
		Dialer: net.Dialer{Timeout: 2 * time.Second}})
	require.Error(t, err, "a plain connection is refused")

	require.NoError(t, r.Restart())
	require.True(t, rueidis.IsRedisNil(c.Do(ctx, c.B().Get().Key("k").Build()).Error()), "the server restarted without persistence")
}
