package grpcapi

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/phx-exchange/phx/server/internal/audit"
)

// Metrics are the hub's Prometheus metrics for its API.
type Metrics struct {
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	signals      *prometheus.CounterVec
	subscribers  prometheus.Gauge
	delivered    *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
	cutOff       prometheus.Counter
	auditQueue   prometheus.GaugeFunc
	auditRecords prometheus.CounterFunc

	audit atomic.Pointer[audit.Log] // read by auditQueue and auditRecords
}

// NewMetrics creates the metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phx_grpc_requests_total", Help: "gRPC calls by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "phx_grpc_request_duration_seconds", Help: "gRPC call duration (streams: lifetime).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"method"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phx_auth_failures_total", Help: "Calls refused for missing or bad credentials.",
		}, []string{"method"}),
		signals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phx_signals_total", Help: "Health signals by outcome (accepted, duplicate, rejected).",
		}, []string{"outcome"}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phx_feed_subscribers", Help: "Live Subscribe streams.",
		}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phx_feed_delivered_total", Help: "Envelopes delivered to subscribers by kind.",
		}, []string{"kind"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phx_rate_limited_total", Help: "Calls refused by a per-org rate limit, by class (signals, writes, reads).",
		}, []string{"class"}),
		cutOff: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_feed_cut_off_total", Help: "Subscribe streams ended because the subscriber stopped reading.",
		}),
	}
	m.auditQueue = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "phx_audit_queue", Help: "Audit records waiting to be stored.",
	}, func() float64 {
		if l := m.audit.Load(); l != nil {
			return float64(l.Depth())
		}
		return 0
	})
	m.auditRecords = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "phx_audit_records_total", Help: "Audit records this hub stored.",
	}, func() float64 {
		if l := m.audit.Load(); l != nil {
			return float64(l.Stored())
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.authFailures, m.signals, m.subscribers, m.delivered, m.rateLimited, m.cutOff, m.auditQueue, m.auditRecords)
	}
	return m
}

func (m *Metrics) observe(method string, code codes.Code, d time.Duration) {
	m.requests.WithLabelValues(method, code.String()).Inc()
	m.latency.WithLabelValues(method).Observe(d.Seconds())
}
