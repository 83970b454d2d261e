// Package testdb starts throw-away database servers for this module's own tests. It is
// test plumbing, not an API for users: it changes whenever the tests need it to.
//
// A test binary that needs Postgres calls [SharedPostgres] (one server per binary, started
// on first use, with durability off for speed) or [StartPostgres] (a server of its own,
// with the given settings, which the test may stop and restart), and wraps its TestMain
// with [Main] so the shared server is stopped and its data removed when the binary ends.
// A server that cannot be started fails the test; it never skips it.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvPostgresBin names a directory holding initdb and postgres, overriding the search.
const EnvPostgresBin = "FF_POSTGRES_BIN"

// postgresBinDirs are searched, in order, for initdb and postgres (Debian's packages
// install them outside PATH).
var postgresBinDirs = []string{ //nolint:gochecknoglobals // read-only search list
	"/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin",
	"/usr/local/pgsql/bin",
}

// startTimeout bounds initdb plus the server's start.
const startTimeout = 90 * time.Second

// PostgresOptions configures a server started by [StartPostgres].
type PostgresOptions struct {
	// Fast turns durability off (fsync, synchronous_commit, full_page_writes): a crash of
	// the machine may lose or corrupt data, which a throw-away server does not mind. The
	// default keeps Postgres's own durable defaults.
	Fast bool
	// Settings are extra server settings, passed as -c name=value.
	Settings map[string]string
}

// Postgres is a running throw-away server: one data directory in a temporary directory,
// listening on a free loopback port. Its superuser is "postgres" with trust
// authentication; the database "postgres" exists.
type Postgres struct {
	Port int

	dir    string // temporary directory: data/ and the socket live here
	bin    string // directory of initdb and postgres
	cred   *syscall.Credential
	opts   PostgresOptions
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	log    serverLog
}

// StartPostgres creates a data directory with initdb and starts a server on it. The caller
// owns the server and must call [Postgres.Remove]. When the process runs as root, initdb and
// postgres (which both refuse to run as root) run as the "postgres" user, which then owns
// the temporary directory.
func StartPostgres(opts PostgresOptions) (*Postgres, error) {
	bin, err := findPostgresBin()
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin, opts: opts}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("testdb: running as root, so the server must run as the postgres user, which is missing (install postgresql): %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if p.dir, err = os.MkdirTemp("", "ffpg-"); err != nil {
		return nil, fmt.Errorf("testdb: %w", err)
	}
	if p.cred != nil {
		if err := os.Chown(p.dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			_ = os.RemoveAll(p.dir)
			return nil, fmt.Errorf("testdb: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	initdb := p.command(ctx, "initdb", "-D", p.dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(p.dir)
		return nil, fmt.Errorf("testdb: initdb: %w\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		if p.Port, err = freePort(); err != nil {
			_ = os.RemoveAll(p.dir)
			return nil, err
		}
		err = p.Start()
		if err == nil {
			return p, nil
		}
		if attempt == 3 || !strings.Contains(err.Error(), "could not bind") {
			_ = os.RemoveAll(p.dir)
			return nil, err
		}
	}
}

func findPostgresBin() (string, error) {
	dirs := postgresBinDirs
	if d := os.Getenv(EnvPostgresBin); d != "" {
		dirs = []string{d}
	}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "postgres")); err == nil && !st.IsDir() {
			return d, nil
		}
	}
	if path, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(path), nil
	}
	return "", fmt.Errorf("testdb: no postgres binaries in %s or on PATH: install postgresql-15 (apt-get install -y postgresql-15, as .ci/run does) or set %s",
		strings.Join(dirs, ", "), EnvPostgresBin)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testdb: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (p *Postgres) dataDir() string { return filepath.Join(p.dir, "data") }

// command prepares one of the server's binaries, as the postgres user when root.
func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	cmd.Dir = p.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	// A test binary that dies must not leave its server running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGQUIT}
	return cmd
}

// Start starts the server on its data directory and port and waits until it accepts
// connections. It fails if the server is running.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return errors.New("testdb: the server is already running")
	}
	args := []string{"-D", p.dataDir(), "-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + p.dir,
		"-c", "max_connections=300", "-c", "shared_buffers=256MB", "-c", "max_locks_per_transaction=256",
		"-c", "log_min_messages=warning", "-c", "log_min_error_statement=panic", "-c", "log_checkpoints=off",
	}
	if p.opts.Fast {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for k, v := range p.opts.Settings {
		args = append(args, "-c", k+"="+v)
	}
	cmd := p.command(context.Background(), "postgres", args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("testdb: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testdb: start postgres: %w", err)
	}
	exited, err := awaitReady(cmd, stderr, &p.log, "ready to accept connections", "postgres", startTimeout)
	if err != nil {
		return err
	}
	p.cmd, p.exited = cmd, exited
	return nil
}

// Stop shuts the server down (fast shutdown: open transactions are rolled back and clients
// disconnected) and waits for it to exit, keeping its data. Stopping a stopped server does
// nothing.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd, p.exited = nil, nil
	return nil
}

// Restart stops the server and starts it again on the same data and port.
func (p *Postgres) Restart() error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.Start()
}

// Remove stops the server and deletes its data directory.
func (p *Postgres) Remove() error {
	err := p.Stop()
	return errors.Join(err, os.RemoveAll(p.dir))
}

// URL returns a connection URL for database on the server, as its superuser.
func (p *Postgres) URL(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, database)
}

// CreateDatabase creates a fresh database with a unique name and returns its URL.
func (p *Postgres) CreateDatabase(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("testdb: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	name := uniqueName("db")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("testdb: %w", err)
	}
	return p.URL(name), nil
}

// shared is the server of SharedPostgres.
var shared struct { //nolint:gochecknoglobals // one server per test binary, by design
	once sync.Once
	pg   *Postgres
	err  error
}

// SharedPostgres returns the test binary's shared server, starting it on first use with
// durability off. It fails t if the server cannot be started. Tests isolate themselves
// from each other with [Schema] or [Postgres.CreateDatabase]; they must not stop it.
func SharedPostgres(t testing.TB) *Postgres {
	t.Helper()
	shared.once.Do(func() { shared.pg, shared.err = StartPostgres(PostgresOptions{Fast: true}) })
	if shared.err != nil {
		t.Fatalf("the throw-away Postgres server cannot be started: %v", shared.err)
	}
	return shared.pg
}

// NewPostgres starts a server for t alone (see [StartPostgres]) and removes it when t
// ends. It fails t if the server cannot be started.
func NewPostgres(t testing.TB, opts PostgresOptions) *Postgres {
	t.Helper()
	p, err := StartPostgres(opts)
	if err != nil {
		t.Fatalf("the throw-away Postgres server cannot be started: %v", err)
	}
	t.Cleanup(func() { _ = p.Remove() })
	return p
}

var nameCounter atomic.Int64 //nolint:gochecknoglobals // unique names within the process

func uniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s_%d_%d_%s", prefix, os.Getpid(), nameCounter.Add(1), hex.EncodeToString(b[:]))
}

// Schema returns a fresh, unused schema name (the schema itself does not exist yet), so
// that every test, and every parallel subtest, gets state of its own on a shared server.
func Schema(t testing.TB) string {
	t.Helper()
	return uniqueName("t")
}

// Main runs the tests of m, then stops the shared server (if one was started) and deletes
// its data, and returns the exit code for os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	if shared.pg != nil {
		if err := shared.pg.Remove(); err != nil {
			fmt.Fprintln(os.Stderr, "testdb: removing the shared Postgres server:", err)
		}
	}
	return code
}
