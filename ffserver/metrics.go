package ffserver

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/fftype"
)

// metrics holds the server's Prometheus registry. Execution counters are fed by the event
// log (so they count the work of every process on the store, from when the server
// started); queue depth is read at scrape time (0 for a lane seen before that has drained),
// and left out of a scrape while the store does not answer; request latency is observed
// per route.
type metrics struct {
	client   *flowfabric.Client
	registry *prometheus.Registry
	page     http.Handler // serves the registry
	events   *prometheus.CounterVec
	requests *prometheus.HistogramVec
}

// eventMetric maps the event types the original's metric families count.
var eventMetric = map[fftype.EventType]string{ //nolint:gochecknoglobals // a constant table
	fftype.EventClaimed:        "claims",
	fftype.EventResumed:        "claims",
	fftype.EventReclaimed:      "reclaims",
	fftype.EventCompleted:      "completions",
	fftype.EventFailed:         "failures",
	fftype.EventRetryScheduled: "retries",
	fftype.EventLeaseExpired:   "lease_expiries",
	fftype.EventCancelled:      "cancellations",
	fftype.EventExpired:        "expirations",
	fftype.EventCreated:        "creations",
}

func newMetrics(client *flowfabric.Client, log *slog.Logger, requestTimeout time.Duration) *metrics {
	m := &metrics{
		client:   client,
		registry: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flowfabric", Name: "execution_transitions_total",
			Help: "Execution transitions seen in the event log since the server started, by kind (claims, completions, failures, retries, lease_expiries, reclaims, ...) and lane.",
		}, []string{"transition", "lane"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "flowfabric", Name: "http_request_duration_seconds",
			Help:    "HTTP request latency by route and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route", "code"}),
	}
	m.registry.MustRegister(m.events, m.requests, collectors.NewGoCollector(), &depthCollector{client: client, log: log, timeout: min(maxDepthRead, requestTimeout/2)},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.page = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return m
}

// serveMetrics answers a scrape.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	s.metrics.page.ServeHTTP(w, r)
	return nil
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Observe(d.Seconds())
}

// subscribe starts following the event log from its end.
func (m *metrics) subscribe(ctx context.Context) (*flowfabric.Subscription, error) {
	return m.client.Subscribe(ctx, fftype.EventFilter{}, flowfabric.CursorEnd)
}

// follow counts the transitions sub delivers, and resubscribes from the end of the log
// if the subscription fails, until ctx ends.
func (m *metrics) follow(ctx context.Context, sub *flowfabric.Subscription, log *slog.Logger) {
	for {
		if sub != nil {
			for d := range sub.Events() {
				if name, ok := eventMetric[d.Event.Type]; ok {
					m.events.WithLabelValues(name, d.Event.Lane).Inc()
				}
			}
			if err := sub.Err(); err != nil {
				log.Warn("metrics: event subscription ended; following from the end again", "err", err)
			}
			sub.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		var err error
		if sub, err = m.subscribe(ctx); err != nil {
			log.Warn("metrics: cannot follow the event log; retrying", "err", err)
			sub = nil
		}
	}
}

// depthCollector reports how many executions wait eligible per lane, read at scrape time.
// A lane it has seen waiting is reported as 0 once drained, rather than left out: a
// series that vanishes reads as "no data" in Prometheus, not as an empty queue.
type depthCollector struct {
	client  *flowfabric.Client
	log     *slog.Logger
	timeout time.Duration // bounds the read of the depths: half the request timeout, at most maxDepthRead

	mu   sync.Mutex          // serializes scrapes' use of seen
	seen map[string]struct{} // the lanes reported so far, at most maxDepthLanes
}

// maxDepthRead bounds a scrape's read of the queue depths; a scrape also answers within
// half the request timeout, as every request must within all of it (Prometheus collectors
// get no request context).
const maxDepthRead = 5 * time.Second

// maxDepthLanes bounds the lanes a depthCollector remembers, so that lanes that come and
// go cannot grow it without end. Past it, a new lane is reported only while it has
// executions waiting.
const maxDepthLanes = 10_000

var depthDesc = prometheus.NewDesc("flowfabric_queue_depth", //nolint:gochecknoglobals // a metric descriptor
	"Executions waiting eligible in a lane, read at scrape time; 0 for a lane seen since the server started that has none.", []string{"lane"}, nil)

func (c *depthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- depthDesc }

func (c *depthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	depths, err := c.client.QueueDepths(ctx)
	if err != nil {
		// Failing the scrape would lose every other metric with it, among them the
		// request counts that show the store's 503s.
		c.log.Warn("metrics: queue depth left out of the scrape: reading it failed", "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]struct{}{}
	}
	for lane := range depths {
		if len(c.seen) < maxDepthLanes {
			c.seen[lane] = struct{}{}
		}
	}
	for lane := range c.seen {
		if _, ok := depths[lane]; !ok {
			depths[lane] = 0
		}
	}
	for lane, n := range depths {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(n), lane)
	}
}
