// Package ffserver serves the FlowFabric HTTP API: executions, grants, lanes, the event
// log as server-sent events, the dead-letter view, and a worker protocol (claim with
// long-poll, renew, progress, complete, fail, cancel, delay, release) so that a worker in
// any language needs only HTTP and JSON. It is an http.Handler; the caller owns the
// listener and the http.Server.
//
// A JSON payload or result inside a JSON body, a lease's say, keeps its value (numbers
// their digits, objects their keys' order) but not its whitespace, which is compacted
// away; GET /v1/executions/{id}/payload and …/result answer the bytes as stored.
//
// Errors are JSON bodies {"error", "code", "kind", "retryable"} with the status of their
// kind, from one table: not_found 404, validation 400, conflict/state/contention 409,
// limited 429, too_large 413, unauthenticated 401, unavailable 503; the exceptions are a
// wrong method, 405 method_not_allowed (kind validation) with an Allow header, and an
// internal error, 500 internal (kind unavailable, retryable), which reveals nothing and
// reads the same as an item's error in a bulk call. A caller's mistake is never a 500.
//
// Authentication is a bearer token compared in constant time; /healthz and /readyz stay
// open.
// Namespaces are not an authorization boundary yet: any holder of the token can act on
// every namespace.
package ffserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/fftype"
)

// Body limits.
const (
	// DefaultLargeBodyBytes bounds bodies that carry payloads or tags: create, bulk
	// create, complete, tags. 0 in Config means this.
	DefaultLargeBodyBytes = 32 << 20
	// ControlBodyBytes bounds every other body.
	ControlBodyBytes = 64 << 10
	// MaxClaimWait bounds a claim's long-poll.
	MaxClaimWait = 30 * time.Second
	// DefaultRequestTimeout bounds a request when Config.RequestTimeout is 0.
	DefaultRequestTimeout = 30 * time.Second
)

// Config tunes a Server. The zero value serves without authentication (logging a warning)
// and allows no cross-origin requests.
type Config struct {
	// Token, when set, is required as "Authorization: Bearer <token>" on every route but
	// /healthz and /readyz.
	Token string
	// CORSOrigins lists the origins browsers may call from: exact origins such as
	// "https://ops.example.com", or "*" for any. An entry that is not a valid origin makes
	// New fail: a bad list never turns permissive.
	CORSOrigins []string
	// LargeBodyBytes bounds bodies that carry payloads. 0 means 32 MiB.
	LargeBodyBytes int64
	// RequestTimeout bounds each request, from its arrival: its body must be read and its
	// answer ready within it, or it is answered 503 with code "timeout" (retryable) and
	// nothing else is written. A long-polling claim gets its wait on top; an event stream
	// must open within it, and is then not bounded. 0 means 30s; a negative value is
	// refused.
	RequestTimeout time.Duration
	// Logger receives request errors. Nil discards them.
	Logger *slog.Logger
}

// Server is the HTTP API over one client.
type Server struct {
	client  *flowfabric.Client
	cfg     Config
	log     *slog.Logger
	token   [32]byte // sha256 of the token, compared in constant time
	origins map[string]bool
	anyOrig bool
	mux     *http.ServeMux
	methods []string // the methods of the routes, for the Allow header of a 405
	metrics *metrics

	doc map[string]any // the OpenAPI document

	// closing is closed by BeginShutdown: event streams end and long-polling claims answer
	// at once, so an http.Server's Shutdown does not wait on them.
	closing     chan struct{}
	closingOnce sync.Once
	// heartbeat is how often an idle event stream sends a keep-alive: sseHeartbeat, or
	// less in tests (see export_test.go).
	heartbeat time.Duration

	mu      sync.Mutex
	stop    context.CancelFunc
	stopped chan struct{}
}

// New returns a server for client.
func New(client *flowfabric.Client, cfg Config) (*Server, error) {
	if client == nil {
		return nil, errors.New("ffserver: nil client")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LargeBodyBytes <= 0 {
		cfg.LargeBodyBytes = DefaultLargeBodyBytes
	}
	switch {
	case cfg.RequestTimeout < 0:
		return nil, fmt.Errorf("ffserver: the request timeout is %s; it must not be negative", cfg.RequestTimeout)
	case cfg.RequestTimeout == 0:
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	s := &Server{client: client, cfg: cfg, log: cfg.Logger, origins: map[string]bool{}, mux: http.NewServeMux(),
		closing: make(chan struct{}), heartbeat: sseHeartbeat}
	if cfg.Token != "" {
		s.token = sha256.Sum256([]byte(cfg.Token))
	} else {
		s.log.Warn("ffserver: no API token configured: every route is open to anyone who can reach the server")
	}
	for _, o := range cfg.CORSOrigins {
		if o == "*" {
			s.anyOrig = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("ffserver: CORS origin %q is not an origin like https://example.com", o)
		}
		s.origins[o] = true
	}
	s.metrics = newMetrics(client, s.log, cfg.RequestTimeout)
	rts := apiRoutes()
	s.doc = openAPIDoc(rts)
	for _, rt := range rts {
		s.mux.Handle(rt.method+" "+rt.path, s.wrap(rt))
		if !slices.Contains(s.methods, rt.method) {
			s.methods = append(s.methods, rt.method)
		}
	}
	slices.Sort(s.methods)
	s.mux.HandleFunc("/", s.noRoute)
	return s, nil
}

// noRoute answers a request that no route matches: 405 with the methods the path has, if
// it has any, and 404 otherwise.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range s.methods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "/" {
			allow = append(allow, m)
		}
	}
	if allow == nil {
		writeError(w, r, s.log, fftype.NotFoundf("route_not_found", "no route %s %s", r.Method, r.URL.Path))
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, &ErrorBody{Code: "method_not_allowed", Kind: string(fftype.KindValidation),
		Error: fmt.Sprintf("%s does not take %s; it takes %s", r.URL.Path, r.Method, strings.Join(allow, ", "))})
}

// Start begins the server's background work (event-fed metrics) until Close or ctx ends.
func (s *Server) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return
	}
	ctx, s.stop = context.WithCancel(ctx)
	s.stopped = make(chan struct{})
	// Subscribe before returning, so every transition after Start is counted.
	sub, err := s.metrics.subscribe(ctx)
	if err != nil {
		s.log.Warn("metrics: cannot follow the event log yet; retrying", "err", err)
		sub = nil
	}
	go func() {
		defer close(s.stopped)
		s.metrics.follow(ctx, sub, s.log)
	}()
}

// Close stops the background work and waits for it.
func (s *Server) Close() {
	s.mu.Lock()
	cancel, done := s.stop, s.stopped
	s.stop = nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// BeginShutdown ends the server's long-lived requests — event streams end (one still
// opening is answered 503 shutting_down), long-polling claims answer with what they have —
// so that http.Server.Shutdown can drain the rest. Register it with
// http.Server.RegisterOnShutdown. Other requests made afterwards still work.
func (s *Server) BeginShutdown() { s.closingOnce.Do(func() { close(s.closing) }) }

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cors(w, r) {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// cors sets CORS headers for allowed origins and answers preflights; it reports whether
// the request was fully answered.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || !(s.anyOrig || s.origins[origin]) {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
		h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, Last-Event-ID")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// authorized checks the bearer token in constant time. The scheme is a case-insensitive
// token separated from the credentials by one or more spaces (RFC 9110 §11.1, §11.4):
// "bearer tok" is "Bearer tok".
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.Token == "" {
		return true
	}
	scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	got = strings.TrimLeft(got, " ")
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1 && strings.EqualFold(scheme, "Bearer")
}

// wrap turns a route's handler into an http.Handler: authentication, the check of the
// query's parameters, the request timeout, panic recovery, error writing and request
// metrics. The body must arrive within
// the request timeout; the handler's context ends with it too, unless the route is long
// (a long-poll or a stream) and bounds itself.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		deadline := start.Add(s.cfg.RequestTimeout)
		if rt.request != nil {
			r.Body = newDeadlineBody(sw, r.Body, deadline)
		}
		if !rt.long {
			ctx, cancel := context.WithDeadline(r.Context(), deadline)
			defer cancel()
			r = r.WithContext(ctx)
		}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("handler panicked", "route", rt.path, "panic", p, "stack", string(debug.Stack()))
				if !sw.wrote {
					writeError(sw, r, s.log, fmt.Errorf("panic: %v", p))
				}
			}
			s.metrics.observe(rt.method+" "+rt.path, sw.status, time.Since(start))
		}()
		if rt.auth && !s.authorized(r) {
			writeError(sw, r, s.log, &fftype.Error{Kind: fftype.KindUnauthenticated, Code: "unauthenticated",
				Message: "missing or invalid Authorization: Bearer token"})
			return
		}
		if err := rt.checkQuery(r.URL.RawQuery); err != nil {
			writeError(sw, r, s.log, err)
			return
		}
		if err := rt.handle(s, sw, r); err != nil {
			writeError(sw, r, s.log, err)
		}
	})
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	w.status, w.wrote = code, true
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap exposes the underlying writer to http.ResponseController, whose Flush then
// reports a write that failed (a client gone).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// deadlineBody bounds the reading of a request body with the connection's read deadline.
// It clears the deadline once the body was read to its end: while the handler runs on (a
// long-poll), net/http keeps reading the connection to notice a client that goes away, and
// a deadline passing then would cancel the request. A body not read to its end keeps the
// deadline, so that net/http's discarding of its rest is bounded too.
type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	cleared bool
}

// newDeadlineBody returns body bounded by deadline, or body itself where the writer
// cannot set read deadlines.
func newDeadlineBody(w http.ResponseWriter, body io.ReadCloser, deadline time.Time) io.ReadCloser {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(deadline) != nil {
		return body
	}
	return &deadlineBody{ReadCloser: body, rc: rc}
}

// Read implements io.Reader.
func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.cleared {
		b.cleared = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
