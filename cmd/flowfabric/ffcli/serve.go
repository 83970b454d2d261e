package ffcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffconnect"
	"github.com/flowfabric/flowfabric/ffserver"
)

// serveOptions configures the server and dev commands.
type serveOptions struct {
	store    string
	addr     string
	token    string
	cors     string
	logLevel string
	shutdown time.Duration
	timeout  time.Duration // each request's bound (ffserver.Config.RequestTimeout)
	dev      bool
	ready    func(addr string) // tests learn the listening address here
}

// env returns the value of the environment variable name, or def if it is unset or empty
// (as a compose file's FF_ADDR: ${FF_ADDR} leaves it when the variable is unset).
func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newServerCommand(out io.Writer) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Serve the HTTP API and run the engine on a store",
		Long: `Serve the HTTP API (/v1, /healthz, /readyz, /metrics, /v1/openapi.json) and run the
engine's timers on the store named by --store: sqlite:///path/file.db, postgres://…,
redis://…, redis+cluster://…, valkey://…, or mem:. Every flag also reads an FF_* variable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.store == "" {
				return errors.New("server: --store (or FF_STORE) is required, e.g. sqlite:///var/lib/flowfabric/ff.db")
			}
			return serve(cmd.Context(), out, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.store, "store", "", "store URL")
	f.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address")
	f.StringVar(&o.token, "token", "", "bearer token required on every route but health checks")
	f.StringVar(&o.cors, "cors-origins", "", "comma-separated origins browsers may call from, or *")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&o.shutdown, "shutdown-timeout", 15*time.Second, "how long shutdown waits for requests in flight")
	requestTimeoutFlag(cmd, o)
	envFlags(cmd, map[string]string{"store": "FF_STORE", "addr": "FF_ADDR", "token": "FF_API_TOKEN",
		"cors-origins": "FF_CORS_ORIGINS", "log-level": "FF_LOG_LEVEL", "shutdown-timeout": "FF_SHUTDOWN_TIMEOUT",
		"request-timeout": "FF_REQUEST_TIMEOUT"})
	return cmd
}

// requestTimeoutFlag adds --request-timeout, the bound of each request, to cmd.
func requestTimeoutFlag(cmd *cobra.Command, o *serveOptions) {
	cmd.Flags().DurationVar(&o.timeout, "request-timeout", ffserver.DefaultRequestTimeout,
		"how long a request may take to send its body and be answered (a long-polling claim gets its wait on top; an event stream must open within it, then runs unbounded)")
}

// envFlags lets each named flag of cmd (a persistent one for cmd's subcommands too) be
// set by an environment variable instead, read when the command runs: a flag given on the
// command line wins, a variable that is empty counts as unset (see [env]), and one that
// does not parse as its flag's type fails the command. Each flag's usage names its
// variable. It sets cmd's PersistentPreRunE, which a subcommand's own would replace.
func envFlags(cmd *cobra.Command, vars map[string]string) {
	for name, v := range vars {
		f := cmd.Flag(name)
		f.Usage += " (" + v + ")"
	}
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		for name, v := range vars {
			val := env(v, "")
			if val == "" || cmd.Flags().Changed(name) {
				continue
			}
			if err := cmd.Flags().Set(name, val); err != nil {
				return fmt.Errorf("%s=%q: %w", v, val, err)
			}
		}
		return nil
	}
}

func newDevCommand(out io.Writer) *cobra.Command {
	o := &serveOptions{dev: true}
	var db string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the server and engine on an SQLite file in the working directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.store, err = sqliteURL(db); err != nil {
				return err
			}
			return serve(cmd.Context(), out, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&db, "db", "flowfabric.db", "the SQLite file")
	f.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address")
	f.StringVar(&o.logLevel, "log-level", "warn", "debug, info, warn or error")
	// Above the 5s net/http gives a connection that has sent no request yet, so a browser's
	// preconnect ends on its own rather than being cut.
	f.DurationVar(&o.shutdown, "shutdown-timeout", 10*time.Second, "how long shutdown waits for requests in flight")
	requestTimeoutFlag(cmd, o)
	envFlags(cmd, map[string]string{"db": "FF_DEV_DB", "addr": "FF_ADDR", "log-level": "FF_LOG_LEVEL",
		"shutdown-timeout": "FF_SHUTDOWN_TIMEOUT", "request-timeout": "FF_REQUEST_TIMEOUT"})
	return cmd
}

// serve runs the API until ctx ends, then shuts down gracefully: it stops accepting,
// drains requests in flight (long-polling claims included), stops the engine's loops and
// closes the store. Connections still open after o.shutdown are closed; that fails serve
// only if it cut a request in flight.
func serve(ctx context.Context, out io.Writer, o *serveOptions) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	if o.shutdown < 0 {
		return fmt.Errorf("--shutdown-timeout %s: want 0 (cut requests in flight at once) or more", o.shutdown)
	}
	if o.addr == "" {
		// net.Listen would take "" as every interface, on a random port.
		return errors.New(`--addr "": want host:port, e.g. 127.0.0.1:8080 (":8080" listens on every interface)`)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	store, err := ffconnect.Open(ctx, o.store, &ffconnect.OpenOpts{Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	client, err := flowfabric.NewClient(store, &flowfabric.Config{Logger: log})
	if err != nil {
		return err
	}
	var origins []string
	for _, s := range strings.Split(o.cors, ",") {
		if s = strings.TrimSpace(s); s != "" {
			origins = append(origins, s)
		}
	}
	srv, err := ffserver.New(client, ffserver.Config{Token: o.token, CORSOrigins: origins, RequestTimeout: o.timeout, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	client.Start(ctx)
	defer client.Stop()
	srv.Start(ctx)
	defer srv.Close()

	var busy busyConns
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), ConnState: busy.track}
	hs.RegisterOnShutdown(srv.BeginShutdown)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	addr := ln.Addr().String()
	banner(out, addr, o)
	if o.ready != nil {
		o.ready(addr)
	}
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintln(out, "shutting down: draining requests in flight (interrupt again to stop at once)")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdown)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		// Past the timeout, close what is left. Shutdown also waits up to 5s for a
		// connection that has not sent a request yet (a browser's preconnect); cutting
		// such a connection loses nothing, so only a request cut mid-flight fails.
		n := busy.count()
		if cerr := hs.Close(); cerr != nil {
			log.Warn("shutdown: closing connections", "error", cerr)
		}
		if n > 0 {
			return fmt.Errorf("shutdown: %d request(s) still in flight after %s were cut off: %w", n, o.shutdown, err)
		}
		log.Warn("shutdown: closed connections with no request in flight", "shutdown_timeout", o.shutdown)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// busyConns tracks an http.Server's connections that are serving a request; its track
// method is the server's ConnState hook. Safe for concurrent use.
type busyConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// track records that c entered state s.
func (b *busyConns) track(c net.Conn, s http.ConnState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s != http.StateActive {
		delete(b.conns, c)
		return
	}
	if b.conns == nil {
		b.conns = map[net.Conn]struct{}{}
	}
	b.conns[c] = struct{}{}
}

// count returns how many connections are serving a request.
func (b *busyConns) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

func banner(out io.Writer, addr string, o *serveOptions) {
	base := "http://" + addr
	if !o.dev {
		fmt.Fprintf(out, "flowfabric server listening on %s (store %s)\n", base, redact(o.store))
		return
	}
	fmt.Fprintf(out, `FlowFabric dev server
  listening on  %[1]s
  store         %[2]s
  API document  %[1]s/v1/openapi.json
  metrics       %[1]s/metrics

Try it, in another terminal:
  go run ./cmd/flowfabric exec submit --lane email --kind send --payload '{"to":"ada@example.com"}'
  go run ./cmd/flowfabric worker --lane email -- sh -c 'cat; echo'   # payload in on stdin, result out on stdout
  go run ./cmd/flowfabric exec list --lane email
or with curl:
  curl -s %[1]s/v1/executions -d '{"lane":"email","kind":"send","payload":{"to":"ada@example.com"}}'
  curl -s %[1]s/v1/claim -d '{"worker_id":"me","worker_instance_id":"me-1","lanes":["email"]}'

Stop with Ctrl-C.
`, base, o.store)
}

// redact returns the store URL u for logs and banners with each password masked: the
// userinfo's and that of a password or sslpassword parameter (Postgres takes either).
// A u that does not parse as a URL is not shown.
func redact(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(store URL not shown: it does not parse as a URL)"
	}
	q := parsed.Query()
	masked := false
	for name := range q {
		if strings.EqualFold(name, "password") || strings.EqualFold(name, "sslpassword") {
			q[name] = []string{"xxxxx"}
			masked = true
		}
	}
	if masked {
		parsed.RawQuery = q.Encode()
	}
	return parsed.Redacted()
}
