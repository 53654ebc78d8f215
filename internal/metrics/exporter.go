package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// SandboxLister tells the exporter which sandboxes exist right now.
type SandboxLister interface {
	// Sandboxes returns the sandboxes on this host and where to read their
	// usage. It is called on every scrape, possibly concurrently.
	Sandboxes(ctx context.Context) ([]SandboxInfo, error)
}

// SandboxListerFunc adapts a function to SandboxLister.
type SandboxListerFunc func(ctx context.Context) ([]SandboxInfo, error)

// Sandboxes implements SandboxLister.
func (f SandboxListerFunc) Sandboxes(ctx context.Context) ([]SandboxInfo, error) { return f(ctx) }

// ExporterConfig configures an Exporter.
type ExporterConfig struct {
	// Lister and Collector produce the per-sandbox metrics; with a nil
	// Lister only the agent's own metrics are exported.
	Lister    SandboxLister
	Collector *Collector
	// ScrapeTimeout bounds listing and reading the sandboxes. Default 5s.
	ScrapeTimeout time.Duration
	// Logger receives scrape errors; default slog.Default().
	Logger *slog.Logger
}

// Exporter owns the agent's Prometheus registry.
type Exporter struct {
	reg *prometheus.Registry
	rpc *rpcMetrics
	log *slog.Logger
}

// NewExporter builds the registry: sandbox metrics (collected on scrape),
// agent RPC metrics, and the Go runtime and process collectors.
func NewExporter(cfg ExporterConfig) (*Exporter, error) {
	if cfg.ScrapeTimeout == 0 {
		cfg.ScrapeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Lister != nil && cfg.Collector == nil {
		cfg.Collector = NewCollector(nil, nil)
	}
	e := &Exporter{reg: prometheus.NewRegistry(), rpc: newRPCMetrics(), log: cfg.Logger}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	cs = append(cs, e.rpc.collectors()...)
	if cfg.Lister != nil {
		cs = append(cs, newSandboxCollector(cfg.Lister, cfg.Collector, cfg.ScrapeTimeout, cfg.Logger))
	}
	for _, c := range cs {
		if err := e.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return e, nil
}

// Registry is the registry the exporter fills; callers may add their own
// collectors to it.
func (e *Exporter) Registry() *prometheus.Registry { return e.reg }

// Handler serves the registry in the Prometheus exposition formats; mount
// it at /metrics. A failing part of a scrape is logged and left out; the
// rest is still served.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{e.log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      e.reg, // promhttp_metric_handler_errors_total
	})
}

// slogPrinter adapts slog to promhttp's Logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics scrape", "err", fmt.Sprint(v...)) }

const ns = "wrenn"

// sandboxCollector is a prometheus.Collector that asks the lister for the
// current sandboxes on every scrape.
type sandboxCollector struct {
	lister  SandboxLister
	col     *Collector
	timeout time.Duration
	log     *slog.Logger

	count, cpu, throttled, mem, memPeak, memLimit, ooms, pids *prometheus.Desc
	disk, rx, tx, rxPkts, txPkts                              *prometheus.Desc
	errs                                                      *prometheus.CounterVec
}

func newSandboxCollector(l SandboxLister, c *Collector, timeout time.Duration, log *slog.Logger) *sandboxCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "sandbox", name), help, []string{"sandbox_id"}, nil)
	}
	return &sandboxCollector{
		lister: l, col: c, timeout: timeout, log: log,
		count:     prometheus.NewDesc(ns+"_sandboxes", "Sandboxes on this host.", nil, nil),
		cpu:       d("cpu_seconds_total", "CPU time used by the sandbox's VMM (cgroup)."),
		throttled: d("cpu_throttled_periods_total", "CFS periods in which the sandbox's CPU quota throttled it."),
		mem:       d("memory_bytes", "Memory charged to the sandbox's cgroup now."),
		memPeak:   d("memory_peak_bytes", "Highest memory charged to the sandbox's cgroup."),
		memLimit:  d("memory_limit_bytes", "Memory limit of the sandbox's cgroup (absent when unlimited)."),
		ooms:      d("oom_kills_total", "Processes the OOM killer killed in the sandbox's cgroup."),
		pids:      d("pids", "Tasks in the sandbox's cgroup."),
		disk:      d("disk_bytes", "Bytes allocated to the sandbox's rootfs clone."),
		rx:        d("network_receive_bytes_total", "Bytes the sandbox received (host-side veth transmit)."),
		tx:        d("network_transmit_bytes_total", "Bytes the sandbox sent (host-side veth receive)."),
		rxPkts:    d("network_receive_packets_total", "Packets the sandbox received."),
		txPkts:    d("network_transmit_packets_total", "Packets the sandbox sent."),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "sandbox", Name: "stats_errors_total",
			Help: "Failures reading sandbox usage, by source (list, cgroup, disk, net).",
		}, []string{"source"}),
	}
}

func (c *sandboxCollector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{c.count, c.cpu, c.throttled, c.mem, c.memPeak, c.memLimit, c.ooms, c.pids,
		c.disk, c.rx, c.tx, c.rxPkts, c.txPkts}
}

// Describe implements prometheus.Collector.
func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
	c.errs.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	defer c.errs.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	infos, err := c.lister.Sandboxes(ctx)
	if err != nil {
		c.errs.WithLabelValues("list").Inc()
		ch <- prometheus.NewInvalidMetric(c.count, fmt.Errorf("list sandboxes: %w", err))
		return
	}
	infos = dedup(infos, c.log)
	ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(len(infos)))
	for _, s := range c.col.Collect(ctx, infos) {
		for src, err := range s.Errors {
			c.errs.WithLabelValues(src).Inc()
			c.log.Warn("read sandbox usage", "sandbox_id", s.SandboxID, "source", src, "err", err)
		}
		c.emit(ch, s)
	}
}

func (c *sandboxCollector) emit(ch chan<- prometheus.Metric, s Sample) {
	put := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(d, t, v, s.SandboxID)
	}
	if s.HasCgroup {
		put(c.cpu, prometheus.CounterValue, s.CPU.Seconds())
		put(c.throttled, prometheus.CounterValue, float64(s.CPUThrottled))
		put(c.mem, prometheus.GaugeValue, float64(s.Memory))
		if s.MemoryPeak > 0 {
			put(c.memPeak, prometheus.GaugeValue, float64(s.MemoryPeak))
		}
		if s.MemoryLimit > 0 {
			put(c.memLimit, prometheus.GaugeValue, float64(s.MemoryLimit))
		}
		put(c.ooms, prometheus.CounterValue, float64(s.OOMKills))
		put(c.pids, prometheus.GaugeValue, float64(s.PIDs))
	}
	if s.HasDisk {
		put(c.disk, prometheus.GaugeValue, float64(s.DiskBytes))
	}
	if s.HasNet {
		put(c.rx, prometheus.CounterValue, float64(s.NetRxBytes))
		put(c.tx, prometheus.CounterValue, float64(s.NetTxBytes))
		put(c.rxPkts, prometheus.CounterValue, float64(s.NetRxPackets))
		put(c.txPkts, prometheus.CounterValue, float64(s.NetTxPackets))
	}
}

// dedup drops entries without an ID and repeated IDs (the registry would
// reject the whole scrape for a duplicate series).
func dedup(infos []SandboxInfo, log *slog.Logger) []SandboxInfo {
	seen := make(map[string]bool, len(infos))
	out := infos[:0:0]
	for _, in := range infos {
		if in.SandboxID == "" || seen[in.SandboxID] {
			log.Warn("sandbox lister returned a duplicate or empty id", "sandbox_id", in.SandboxID)
			continue
		}
		seen[in.SandboxID] = true
		out = append(out, in)
	}
	return out
}

var _ prometheus.Collector = (*sandboxCollector)(nil)
