package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// unmatchedRoute labels requests no route matched, so that raw paths
// never become label values.
const unmatchedRoute = "unmatched"

// metrics is the API's Prometheus registry: request counts and latencies
// by route pattern and status code, plus what the store says on each
// scrape (sandboxes by status, pool quota use).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "wrenn", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests served, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "wrenn", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP request latency (until the handler returns), by method, route pattern and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180},
		}, []string{"method", "route", "code"}),
	}
	m.reg.MustRegister(m.requests, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.st != nil {
		m.reg.MustRegister(&storeCollector{s: s})
	}
	return m
}

// observe records one request. The route is chi's pattern, known only
// after routing, so this runs after next returns.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw, ok := w.(*statusWriter)
		if !ok {
			sw = &statusWriter{ResponseWriter: w}
		}
		next.ServeHTTP(sw, r)
		route := unmatchedRoute
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		code := sw.status
		if code == 0 {
			code = http.StatusOK
		}
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
			http.MethodPatch, http.MethodOptions:
		default:
			method = "other" // bound the label's values
		}
		labels := prometheus.Labels{"method": method, "route": route, "code": strconv.Itoa(code)}
		s.metrics.requests.With(labels).Inc()
		s.metrics.latency.With(labels).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

var (
	descSandboxes = prometheus.NewDesc("wrenn_sandboxes",
		"Sandboxes by status (rows in the control plane's database).", []string{"status"}, nil)
	descPoolUsed = prometheus.NewDesc("wrenn_pool_used",
		"Pool quota in use, summed over every key, by resource.", []string{"resource"}, nil)
	descPoolLimit = prometheus.NewDesc("wrenn_pool_limit",
		"Pool quota, summed over every key that is not revoked, by resource.", []string{"resource"}, nil)
	descKeyPoolUsed = prometheus.NewDesc("wrenn_key_pool_used",
		"Pool quota in use by one key, by resource.", []string{"key_id", "resource"}, nil)
	descKeyPoolLimit = prometheus.NewDesc("wrenn_key_pool_limit",
		"Pool quota of one key, by resource.", []string{"key_id", "resource"}, nil)
	descStoreUp = prometheus.NewDesc("wrenn_metrics_store_up",
		"1 when the last scrape could read the database, 0 otherwise.", nil, nil)
)

// storeCollector reads the database on each scrape. Collect has no
// context, so it bounds its queries itself.
type storeCollector struct{ s *Server }

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSandboxes
	ch <- descPoolUsed
	ch <- descPoolLimit
	ch <- descStoreUp
	if c.s.cfg.MetricsPerKey {
		ch <- descKeyPoolUsed
		ch <- descKeyPoolLimit
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	up := 1.0
	counts, err := c.s.st.CountSandboxes(ctx)
	if err != nil {
		c.s.log.Warn("metrics: count sandboxes", "err", err)
		up = 0
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(descSandboxes, prometheus.GaugeValue, float64(n), string(st))
	}
	usage, err := c.s.st.PoolUsage(ctx)
	if err != nil {
		c.s.log.Warn("metrics: pool usage", "err", err)
		up = 0
	} else {
		var used, limit store.Pool
		for _, u := range usage {
			used = addPool(used, u.Used)
			if !u.Revoked {
				limit = addPool(limit, u.Limit)
			}
			if c.s.cfg.MetricsPerKey {
				emitPool(ch, descKeyPoolUsed, u.Used, u.APIKeyID)
				emitPool(ch, descKeyPoolLimit, u.Limit, u.APIKeyID)
			}
		}
		emitPool(ch, descPoolUsed, used)
		emitPool(ch, descPoolLimit, limit)
	}
	ch <- prometheus.MustNewConstMetric(descStoreUp, prometheus.GaugeValue, up)
}

func addPool(a, b store.Pool) store.Pool {
	return store.Pool{VCPUs: a.VCPUs + b.VCPUs, MemoryMB: a.MemoryMB + b.MemoryMB, StorageMB: a.StorageMB + b.StorageMB}
}

// emitPool sends one gauge per resource; labels come before "resource".
func emitPool(ch chan<- prometheus.Metric, d *prometheus.Desc, p store.Pool, labels ...string) {
	for _, r := range []struct {
		name string
		v    int
	}{{store.ResourceVCPUs, p.VCPUs}, {store.ResourceMemoryMB, p.MemoryMB}, {store.ResourceStorageMB, p.StorageMB}} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(r.v), append(labels, r.name)...)
	}
}
