package testdb

// Throw-away Redis servers. A test binary that needs Redis calls [SharedRedis] (one
// standalone server per binary, without persistence), [SharedRedisCluster] (one 3-primary
// Cluster per binary) or [NewRedis] (a server of its own, with the settings it gives, that
// it may restart), and wraps its TestMain with [RedisMain] so the shared servers are
// stopped and their data removed when the binary ends. Tests isolate themselves on a
// shared server with [RedisPrefix]. A server started with RedisOptions.TLS speaks only
// TLS, with a certificate from a throw-away CA ([WriteTLSFiles]), and so does a Cluster
// started with RedisClusterOptions.TLS. A server that cannot be started fails the test;
// it never skips it.

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// EnvRedisBin names a directory holding redis-server and redis-cli, overriding PATH.
const EnvRedisBin = "FF_REDIS_BIN"

// redisStartTimeout bounds the start of one server, and the forming of a Cluster.
const redisStartTimeout = 60 * time.Second

// RedisOptions configures a throw-away server.
type RedisOptions struct {
	// Args are extra redis-server arguments, for example
	// []string{"--appendonly", "yes", "--appendfsync", "always"}. Without them the
	// server keeps nothing on disk.
	Args []string
	// Cluster starts the server in cluster mode (it serves nothing until it is part of
	// a Cluster with every slot assigned).
	Cluster bool
	// TLS makes the server accept only TLS connections, with a certificate for 127.0.0.1
	// signed by a throw-away CA written to its directory (see [Redis.TLS]). Clients are
	// not asked for certificates.
	TLS bool
	// Password, if set, is required of clients (requirepass).
	Password string

	// host and ca are set by StartRedisCluster for the nodes of a TLS Cluster: the
	// loopback address the server listens on, and the CA that signs its certificate,
	// which then names host alone. Without them: 127.0.0.1, and a CA of the server's own
	// that signs a certificate for 127.0.0.1, ::1 and localhost.
	host string
	ca   *certAuthority
}

// Redis is one redis-server process on a loopback port, with a data directory of its
// own. Its methods are safe for concurrent use.
type Redis struct {
	Port int
	Addr string // 127.0.0.1:Port, or a TLS Cluster node's own loopback address
	Dir  string
	TLS  TLSFiles // the CA and server certificate, when RedisOptions.TLS is set

	bin  string
	opts RedisOptions

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    serverLog
}

func redisBinary(name string) (string, error) {
	if dir := os.Getenv(EnvRedisBin); dir != "" {
		return filepath.Join(dir, name), nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("testdb: %s not found (install the redis-server package, as .ci/run does, or set %s): %w", name, EnvRedisBin, err)
	}
	return p, nil
}

// redisFreePort returns a port of the loopback address host that is free, and whose
// cluster bus port (the port + 10000) is free too.
func redisFreePort(host string) (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("testdb: find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if port+10000 > 65535 {
			_ = l.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port+10000)))
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = bus.Close()
		return port, nil
	}
	return 0, errors.New("testdb: no free port pair for redis-server")
}

// StartRedis starts a server on a free port of 127.0.0.1 in a new temporary directory and
// waits until it accepts connections. The caller stops it with [Redis.Remove].
func StartRedis(opts RedisOptions) (*Redis, error) {
	bin, err := redisBinary("redis-server")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ff-redis-")
	if err != nil {
		return nil, fmt.Errorf("testdb: %w", err)
	}
	host := cmp.Or(opts.host, "127.0.0.1")
	var files TLSFiles
	switch {
	case opts.TLS && opts.ca != nil:
		files, err = opts.ca.writeFiles(dir, host)
	case opts.TLS:
		files, err = WriteTLSFiles(dir)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	var lastErr error
	for range 5 { // another process may take the port between the check and the start
		port, err := redisFreePort(host)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		r := &Redis{Port: port, Addr: net.JoinHostPort(host, strconv.Itoa(port)), Dir: dir, TLS: files, bin: bin, opts: opts}
		if lastErr = r.Start(); lastErr == nil {
			return r, nil
		}
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

// Start starts the server on its directory and port (again, after Stop) and waits until
// it accepts connections, having loaded whatever its persistence kept. It fails if the
// server is running.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("testdb: the server is already running")
	}
	args := []string{
		"--bind", r.host(), "--dir", r.Dir,
		"--logfile", "", "--daemonize", "no", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--loglevel", "notice",
	}
	if r.opts.TLS {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(r.Port),
			"--tls-cert-file", r.TLS.CertFile, "--tls-key-file", r.TLS.KeyFile,
			"--tls-ca-cert-file", r.TLS.CAFile, "--tls-auth-clients", "no")
	} else {
		args = append(args, "--port", strconv.Itoa(r.Port))
	}
	if r.opts.Password != "" {
		args = append(args, "--requirepass", r.opts.Password)
	}
	if r.opts.Cluster {
		// Announced: the bus connections a node makes leave from 127.0.0.1, which its
		// peers would otherwise take for its address.
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000", "--cluster-announce-ip", r.host())
		if r.opts.TLS {
			// The bus speaks TLS too, on the TLS port + 10000 (the plain port is 0).
			args = append(args, "--tls-cluster", "yes")
		}
	}
	args = append(args, r.opts.Args...)
	cmd := exec.Command(r.bin, args...)
	cmd.Dir = r.Dir
	// A test binary that dies must not leave its server running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("testdb: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testdb: start redis-server: %w", err)
	}
	exited, err := awaitReady(cmd, stdout, &r.log, "Ready to accept connections", "redis-server", redisStartTimeout)
	if err != nil {
		return err
	}
	r.cmd, r.exited = cmd, exited
	return nil
}

// URL returns a URL of the server's database db: redis://, or for a TLS server
// rediss:// with a ca_file parameter naming the CA that signed its certificate, and with
// the password when the server requires one.
func (r *Redis) URL(db int) string {
	scheme, userinfo, query := "redis", "", ""
	if r.opts.TLS {
		scheme, query = "rediss", "?ca_file="+url.QueryEscape(r.TLS.CAFile)
	}
	if r.opts.Password != "" {
		userinfo = url.UserPassword("", r.opts.Password).String() + "@"
	}
	return fmt.Sprintf("%s://%s%s/%d%s", scheme, userinfo, r.Addr, db, query)
}

// host returns the loopback address the server listens on.
func (r *Redis) host() string {
	h, _, _ := net.SplitHostPort(r.Addr)
	return h
}

// cliArgs returns the redis-cli arguments that reach the server.
func (r *Redis) cliArgs() []string {
	args := []string{"-h", r.host(), "-p", strconv.Itoa(r.Port)}
	if r.opts.TLS {
		args = append(args, "--tls", "--cacert", r.TLS.CAFile)
	}
	if r.opts.Password != "" {
		args = append(args, "-a", r.opts.Password, "--no-auth-warning")
	}
	return args
}

// Shutdown asks the server to shut down as an operator would (SHUTDOWN, which flushes
// the append-only file when there is one) and waits for it to exit, keeping its data.
// Shutting down a stopped server does nothing.
func (r *Redis) Shutdown() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	cli, err := redisBinary("redis-cli")
	if err == nil {
		// The server closes the connection as it exits, so the command reports an error.
		_ = exec.Command(cli, append(r.cliArgs(), "shutdown")...).Run()
	}
	select {
	case <-r.exited:
	case <-time.After(redisStartTimeout):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd, r.exited = nil, nil
	return nil
}

// Kill stops the server at once, as a crash would, keeping its data directory.
func (r *Redis) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd, r.exited = nil, nil
}

// Restart shuts the server down and starts it again on the same directory and port.
func (r *Redis) Restart() error {
	if err := r.Shutdown(); err != nil {
		return err
	}
	return r.Start()
}

// Remove stops the server and deletes its directory.
func (r *Redis) Remove() error {
	r.Kill()
	return os.RemoveAll(r.Dir)
}

// NewRedis starts a server for t alone (see [StartRedis]) and removes it when t ends. It
// fails t if the server cannot be started.
func NewRedis(t testing.TB, opts RedisOptions) *Redis {
	t.Helper()
	r, err := StartRedis(opts)
	if err != nil {
		t.Fatalf("the throw-away Redis server cannot be started: %v", err)
	}
	t.Cleanup(func() { _ = r.Remove() })
	return r
}

// RedisClusterOptions configures a throw-away Cluster.
type RedisClusterOptions struct {
	// TLS makes every node speak only TLS, to clients and to each other, with a
	// certificate for its own address alone, signed by one throw-away CA (see
	// [RedisCluster.CAFile]). Node i listens on 127.0.0.(2+i), so that no node's
	// certificate is valid for another, as in a Cluster of several hosts.
	TLS bool
}

// RedisCluster is a Cluster of throw-away servers, every one a primary.
type RedisCluster struct {
	Nodes  []*Redis
	CAFile string // the CA that signed every node's certificate, for a TLS Cluster
}

// URL returns a redis+cluster:// URL listing every node as a seed, or for a TLS Cluster
// a rediss+cluster:// one with a ca_file parameter naming the CA.
func (c *RedisCluster) URL() string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	if c.CAFile != "" {
		return "rediss+cluster://" + strings.Join(addrs, ",") + "?ca_file=" + url.QueryEscape(c.CAFile)
	}
	return "redis+cluster://" + strings.Join(addrs, ",")
}

// Remove stops every node and deletes their directories.
func (c *RedisCluster) Remove() error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.Remove())
	}
	return errors.Join(errs...)
}

// StartRedisCluster starts n servers in cluster mode, joins them into a Cluster of n
// primaries and no replicas with redis-cli --cluster create (which splits the slots
// evenly), and waits until every node reports cluster_state:ok and knows every slot.
func StartRedisCluster(n int, opts RedisClusterOptions) (*RedisCluster, error) {
	cli, err := redisBinary("redis-cli")
	if err != nil {
		return nil, err
	}
	nodeOpts := RedisOptions{Cluster: true, TLS: opts.TLS}
	if opts.TLS {
		if nodeOpts.ca, err = newCertAuthority(); err != nil {
			return nil, err
		}
	}
	c := &RedisCluster{}
	for i := range n {
		if opts.TLS {
			nodeOpts.host = net.IPv4(127, 0, 0, byte(2+i)).String()
		}
		node, err := StartRedis(nodeOpts)
		if err != nil {
			_ = c.Remove()
			return nil, err
		}
		c.Nodes = append(c.Nodes, node)
		c.CAFile = node.TLS.CAFile
	}
	var args []string
	if opts.TLS {
		args = []string{"--tls", "--cacert", c.CAFile}
	}
	args = append(args, "--cluster", "create")
	for _, node := range c.Nodes {
		args = append(args, node.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		_ = c.Remove()
		return nil, fmt.Errorf("testdb: redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := c.waitReady(ctx); err != nil {
		_ = c.Remove()
		return nil, err
	}
	return c, nil
}

// waitReady polls every node until it reports cluster_state:ok and maps all slots.
func (c *RedisCluster) waitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		ok := true
		for _, node := range c.Nodes {
			state, err := node.clusterState(ctx)
			if err != nil || !strings.Contains(state, "cluster_state:ok") || !strings.Contains(state, "cluster_slots_ok:16384") {
				ok, last = false, fmt.Sprintf("%s: %v %s", node.Addr, err, state)
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testdb: the Cluster did not become ready: %s", last)
		case <-tick.C:
		}
	}
}

// clusterState returns the node's CLUSTER INFO.
func (r *Redis) clusterState(ctx context.Context) (string, error) {
	opt := rueidis.ClientOption{InitAddress: []string{r.Addr}, ForceSingleClient: true, DisableCache: true}
	if r.opts.TLS {
		pemBytes, err := os.ReadFile(r.TLS.CAFile)
		if err != nil {
			return "", err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		opt.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return "", err
	}
	defer client.Close()
	// Pinned: a Do that fails while a node is still starting returns before the client's
	// writer is done with the command, which must not be recycled for the next poll.
	return client.Do(ctx, client.B().ClusterInfo().Build().Pin()).ToString()
}

// redisShared holds the servers of SharedRedis and SharedRedisCluster.
var redisShared struct { //nolint:gochecknoglobals // one server and one Cluster per test binary, by design
	once        sync.Once
	server      *Redis
	err         error
	clusterOnce sync.Once
	cluster     *RedisCluster
	clusterErr  error
}

// SharedRedis returns the test binary's shared standalone server, started on first use
// without persistence. It fails t if the server cannot be started. Tests isolate
// themselves with [RedisPrefix] (or a database of their own); they must not stop it.
func SharedRedis(t testing.TB) *Redis {
	t.Helper()
	redisShared.once.Do(func() { redisShared.server, redisShared.err = StartRedis(RedisOptions{}) })
	if redisShared.err != nil {
		t.Fatalf("the throw-away Redis server cannot be started: %v", redisShared.err)
	}
	return redisShared.server
}

// SharedRedisCluster returns the test binary's shared Cluster of three primaries, started
// on first use. It fails t if the Cluster cannot be started.
func SharedRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	redisShared.clusterOnce.Do(func() { redisShared.cluster, redisShared.clusterErr = StartRedisCluster(3, RedisClusterOptions{}) })
	if redisShared.clusterErr != nil {
		t.Fatalf("the throw-away Redis Cluster cannot be started: %v", redisShared.clusterErr)
	}
	return redisShared.cluster
}

// OnSharedRedis runs fn in two parallel subtests of t, "Server" and "Cluster", with the
// URL of the shared server and of the shared Cluster.
func OnSharedRedis(t *testing.T, fn func(t *testing.T, url string)) {
	t.Helper()
	t.Run("Server", func(t *testing.T) {
		t.Parallel()
		fn(t, SharedRedis(t).URL(0))
	})
	t.Run("Cluster", func(t *testing.T) {
		t.Parallel()
		fn(t, SharedRedisCluster(t).URL())
	})
}

// RedisPrefix returns a fresh key prefix, so that every test, and every parallel subtest,
// gets state of its own on a shared server.
func RedisPrefix(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("t%d-%d", os.Getpid(), redisNames.Add(1))
}

var redisNames atomic.Int64 //nolint:gochecknoglobals // unique prefixes within the process

// RedisMain runs the tests of m, then stops the shared Redis server and Cluster (those
// that were started) and deletes their data, and returns the exit code for os.Exit.
func RedisMain(m *testing.M) int {
	code := m.Run()
	RedisStopShared()
	return code
}

// RedisStopShared stops the shared server and Cluster, if they were started.
func RedisStopShared() {
	if redisShared.server != nil {
		if err := redisShared.server.Remove(); err != nil {
			fmt.Fprintln(os.Stderr, "testdb: removing the shared Redis server:", err)
		}
	}
	if redisShared.cluster != nil {
		if err := redisShared.cluster.Remove(); err != nil {
			fmt.Fprintln(os.Stderr, "testdb: removing the shared Redis Cluster:", err)
		}
	}
}
