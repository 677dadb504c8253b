package server

import (
	"context"
	"time"

	"github.com/phx-exchange/phx/server/internal/bus"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// streamCollector exports the size and replication state of the JetStream
// streams of the hub's account (phx's streams and its KV buckets), read
// with one stream list request on each scrape, bounded by a short timeout.
type streamCollector struct {
	js      jetstream.JetStream
	timeout time.Duration

	msgs, bytes, consumers, lastSeq, replicas, replicaLag, ok *prometheus.Desc
}

func newStreamCollector(js jetstream.JetStream, timeout time.Duration) *streamCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &streamCollector{
		js: js, timeout: timeout,
		msgs:       d("phx_jetstream_stream_messages", "Messages stored in the stream.", "stream"),
		bytes:      d("phx_jetstream_stream_bytes", "Bytes stored in the stream.", "stream"),
		consumers:  d("phx_jetstream_stream_consumers", "Consumers of the stream (live subscriptions, the detector).", "stream"),
		lastSeq:    d("phx_jetstream_stream_last_sequence", "Sequence of the stream's last message.", "stream"),
		replicas:   d("phx_jetstream_stream_current_replicas", "Replicas of the stream that are current, the leader included (1 on a single server).", "stream"),
		replicaLag: d("phx_jetstream_stream_replica_lag_max", "Operations the furthest-behind replica of the stream still has to apply.", "stream"),
		ok:         d("phx_jetstream_scrape_ok", "1 if the last scrape read every stream's state from JetStream, else 0."),
	}
}

// Describe implements prometheus.Collector.
func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.msgs, c.bytes, c.consumers, c.lastSeq, c.replicas, c.replicaLag, c.ok} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	l := c.js.ListStreams(ctx)
	for info := range l.Info() {
		name := info.Config.Name
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
		}
		gauge(c.msgs, float64(info.State.Msgs))
		gauge(c.bytes, float64(info.State.Bytes))
		gauge(c.consumers, float64(info.State.Consumers))
		gauge(c.lastSeq, float64(info.State.LastSeq))
		current, lag := 1, uint64(0) // the leader, or the single server
		if cl := info.Cluster; cl != nil {
			if cl.Leader == "" {
				current = 0
			}
			for _, p := range cl.Replicas {
				if p.Current && !p.Offline {
					current++
				}
				lag = max(lag, p.Lag)
			}
		}
		gauge(c.replicas, float64(current))
		gauge(c.replicaLag, float64(lag))
	}
	ok := 1.0
	if l.Err() != nil {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(c.ok, prometheus.GaugeValue, ok)
}

// registerFeedRecoveries exports how often feeds re-created a JetStream
// consumer lost with a NATS node, how long that took, and how often a feed
// gave up (its subscriber then resumed from its cursor).
func registerFeedRecoveries(reg prometheus.Registerer, b *bus.Bus) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "phx_feed_consumer_recoveries_total", Help: "Feed consumers re-created after they were lost (a NATS node or the connection to it went away)."},
			func() float64 { n, _, _ := b.FeedRecoveries(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "phx_feed_consumer_recovery_seconds_total", Help: "Time spent re-creating lost feed consumers."},
			func() float64 { _, d, _ := b.FeedRecoveries(); return d.Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "phx_feed_consumer_recovery_failures_total", Help: "Feeds ended because a lost consumer could not be re-created within the bound."},
			func() float64 { _, _, n := b.FeedRecoveries(); return float64(n) }),
	)
}
