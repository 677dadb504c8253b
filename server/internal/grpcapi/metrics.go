package grpcapi

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/authz"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/policy"
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
	published    *prometheus.CounterVec
	rejected     *prometheus.CounterVec

	audit atomic.Pointer[audit.Log] // read by auditQueue and auditRecords
	lags  feedLags                  // live subscribers' lag, read on scrape
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
	m.published = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "phx_items_published_total", Help: "Items stored by kind and outcome (accepted, duplicate: a retry already stored).",
	}, []string{"kind", "outcome"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "phx_items_rejected_total",
		Help: "Items (or whole publishing calls) refused, by kind, status code and reason: the hub setting (k_devices), the field (top_failures[].devices) or the cause (stale_revision, role, storage).",
	}, []string{"kind", "code", "reason"})
	m.lags.init()
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.authFailures, m.signals, m.subscribers, m.delivered, m.rateLimited, m.cutOff,
			m.auditQueue, m.auditRecords, m.published, m.rejected, &m.lags)
	}
	return m
}

func (m *Metrics) observe(method string, code codes.Code, d time.Duration) {
	m.requests.WithLabelValues(method, code.String()).Inc()
	m.latency.WithLabelValues(method).Observe(d.Seconds())
}

// publishKinds are the methods that publish an item, by the kind they publish.
var publishKinds = map[string]phxv1.Kind{
	phxv1.HealthService_PublishSignals_FullMethodName:   phxv1.Kind_KIND_HEALTH_SIGNAL,
	phxv1.RolloutService_AnnounceRollout_FullMethodName: phxv1.Kind_KIND_ROLLOUT,
	phxv1.RolloutService_UpdateRollout_FullMethodName:   phxv1.Kind_KIND_ROLLOUT,
	phxv1.IncidentService_ReportIncident_FullMethodName: phxv1.Kind_KIND_INCIDENT,
	phxv1.IncidentService_UpdateIncident_FullMethodName: phxv1.Kind_KIND_INCIDENT,
	phxv1.IncidentService_AddPost_FullMethodName:        phxv1.Kind_KIND_INCIDENT,
	phxv1.IncidentService_Respond_FullMethodName:        phxv1.Kind_KIND_INCIDENT,
}

// publishCall counts the outcome of a call that publishes an item: raw is
// the handler's (or authentication's) error before it became a status.
// PublishSignals counts its accepted items itself, item by item.
func (m *Metrics) publishCall(method string, raw error, code codes.Code) {
	kind, ok := publishKinds[method]
	if !ok {
		return
	}
	if code != codes.OK {
		m.rejected.WithLabelValues(kind.String(), code.String(), rejectReason(raw)).Inc()
		return
	}
	if method != phxv1.HealthService_PublishSignals_FullMethodName {
		m.published.WithLabelValues(kind.String(), "accepted").Inc()
	}
}

var reIndex = regexp.MustCompile(`\[[0-9]+\]`)

// rejectReason names why an item was refused, with few distinct values:
// the hub setting of a minimum-cohort refusal, the field path without
// indexes, or the kind of error.
func rejectReason(err error) string {
	var fe *fieldError
	switch {
	case err == nil:
		return "internal"
	case errors.As(err, &fe):
		if fe.rule != "" {
			setting, _, _ := strings.Cut(fe.rule, "=")
			return setting
		}
		if fe.field != "" {
			return reIndex.ReplaceAllString(fe.field, "[]")
		}
		return "request"
	case errors.Is(err, authn.ErrUnauthenticated):
		return "credentials"
	case errors.Is(err, authn.ErrNotMember):
		return "not_member"
	case errors.Is(err, authz.ErrDenied):
		return "role"
	case errors.Is(err, policy.ErrWidened):
		return "audience_widened"
	case errors.Is(err, bus.ErrConflict):
		return "stale_revision"
	case errors.Is(err, errNotFound), errors.Is(err, bus.ErrNotFound):
		return "not_found"
	case errors.Is(err, errExists):
		return "exists"
	case errors.Is(err, errShuttingDown):
		return "shutting_down"
	case errors.Is(err, bus.ErrDuplicateInProcess), errors.Is(err, errContended):
		return "contended"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	if _, ok := status.FromError(err); ok {
		return "other"
	}
	return "storage"
}

// feedLags tracks how far each live subscription is behind the end of the
// streams it reads, in messages: JetStream's count of messages still
// pending for the subscription's consumer as of the last message it
// handled. Per subscriber that is too many series; it is exported per
// stream as the largest lag of any subscriber and the sum over all.
type feedLags struct {
	maxDesc, sumDesc *prometheus.Desc

	mu   sync.Mutex
	subs map[*feedLag]struct{}
}

// feedLag is one subscription's lag per stream.
type feedLag struct {
	pending [bus.NumFeeds]atomic.Uint64
}

func (l *feedLags) init() {
	l.maxDesc = prometheus.NewDesc("phx_feed_lag_max_messages",
		"Largest number of messages any live subscription has still to read, per stream.", []string{"stream"}, nil)
	l.sumDesc = prometheus.NewDesc("phx_feed_lag_messages",
		"Messages all live subscriptions together have still to read, per stream.", []string{"stream"}, nil)
	l.subs = map[*feedLag]struct{}{}
}

// add starts tracking a subscription; the function it returns stops it.
func (l *feedLags) add() (*feedLag, func()) {
	f := &feedLag{}
	l.mu.Lock()
	l.subs[f] = struct{}{}
	l.mu.Unlock()
	return f, func() {
		l.mu.Lock()
		delete(l.subs, f)
		l.mu.Unlock()
	}
}

// Describe implements prometheus.Collector.
func (l *feedLags) Describe(ch chan<- *prometheus.Desc) {
	ch <- l.maxDesc
	ch <- l.sumDesc
}

// Collect implements prometheus.Collector.
func (l *feedLags) Collect(ch chan<- prometheus.Metric) {
	var maxes, sums [bus.NumFeeds]uint64
	l.mu.Lock()
	for f := range l.subs {
		for i := range f.pending {
			p := f.pending[i].Load()
			maxes[i] = max(maxes[i], p)
			sums[i] += p
		}
	}
	l.mu.Unlock()
	for i := range bus.NumFeeds {
		name := bus.FeedStream(i).StreamName()
		ch <- prometheus.MustNewConstMetric(l.maxDesc, prometheus.GaugeValue, float64(maxes[i]), name)
		ch <- prometheus.MustNewConstMetric(l.sumDesc, prometheus.GaugeValue, float64(sums[i]), name)
	}
}
