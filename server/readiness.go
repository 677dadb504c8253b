package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// readiness follows whether the hub can do its work: its NATS connection is
// up and JetStream answers. It sets the grpc.health.v1 status of the whole
// hub ("") and of every phx.v1 service, answers /readyz, and exports
// phx_ready.
//
// A disconnected or reconnecting NATS connection makes the hub not ready at
// once (the connection's handlers trigger a check); while connected, a cheap
// JetStream account-info request every interval checks that JetStream
// answers, and two failures in a row make the hub not ready. The first good
// check makes it ready again. Once shut down it stays not ready.
type readiness struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	hs       *health.Server
	services []string
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger

	kick chan struct{}

	mu       sync.Mutex
	ready    bool
	reason   string
	failures int
	stopped  bool
}

// newReadiness returns a readiness that starts not ready ("starting") and
// registers phx_ready and phx_nats_reconnects_total on reg.
func newReadiness(nc *nats.Conn, js jetstream.JetStream, hs *health.Server, services []string, interval time.Duration, log *slog.Logger, reg prometheus.Registerer) *readiness {
	r := &readiness{
		nc: nc, js: js, hs: hs, services: services, interval: interval,
		timeout: min(interval, 2*time.Second), log: log,
		kick: make(chan struct{}, 1), reason: "starting",
	}
	r.setStatus(false)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "phx_ready", Help: "1 while the hub is ready (NATS connected, JetStream answering), else 0.",
		}, func() float64 {
			if ok, _ := r.Ready(); ok {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "phx_nats_reconnects_total", Help: "Times the hub's NATS connection reconnected.",
		}, func() float64 { return float64(nc.Stats().Reconnects) }),
	)
	// Chain after any handlers the configuration set.
	prevDisc, prevRec, prevClosed := nc.DisconnectErrHandler(), nc.ReconnectHandler(), nc.ClosedHandler()
	nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		r.log.Warn("nats disconnected", "err", err)
		r.trigger()
		if prevDisc != nil {
			prevDisc(c, err)
		}
	})
	nc.SetReconnectHandler(func(c *nats.Conn) {
		r.log.Info("nats reconnected", "server", c.ConnectedUrlRedacted())
		r.trigger()
		if prevRec != nil {
			prevRec(c)
		}
	})
	nc.SetClosedHandler(func(c *nats.Conn) {
		r.trigger()
		if prevClosed != nil {
			prevClosed(c)
		}
	})
	return r
}

// trigger asks for a check now.
func (r *readiness) trigger() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run checks every interval and whenever the connection changes state,
// until ctx ends.
func (r *readiness) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
		r.check(ctx)
	}
}

// check evaluates readiness once.
func (r *readiness) check(ctx context.Context) {
	var err error
	if st := r.nc.Status(); st != nats.CONNECTED {
		err = fmt.Errorf("nats connection %s", strings.ToLower(st.String()))
	} else {
		actx, cancel := context.WithTimeout(ctx, r.timeout)
		_, err = r.js.AccountInfo(actx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			err = fmt.Errorf("jetstream: %w", err)
			r.mu.Lock()
			r.failures++
			transient := r.ready && r.failures < 2
			r.mu.Unlock()
			if transient {
				r.log.Debug("readiness probe failed once", "err", err)
				return
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	was := r.ready
	if err == nil {
		r.ready, r.reason, r.failures = true, "", 0
	} else {
		r.ready, r.reason = false, err.Error()
	}
	if r.ready != was {
		r.setStatus(r.ready)
		if r.ready {
			r.log.Info("ready")
		} else {
			r.log.Warn("not ready", "reason", r.reason)
		}
	}
}

// setStatus sets the grpc.health.v1 status of "" and every service.
func (r *readiness) setStatus(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, s := range append([]string{""}, r.services...) {
		r.hs.SetServingStatus(s, st)
	}
}

// Ready reports whether the hub is ready and, if not, why.
func (r *readiness) Ready() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready, r.reason
}

// Shutdown makes the hub not ready for good, before it drains.
func (r *readiness) Shutdown() {
	r.mu.Lock()
	r.stopped, r.ready, r.reason = true, false, "shutting down"
	r.mu.Unlock()
	r.hs.Shutdown()
}

// ServeReady answers /readyz: 200 when ready, 503 with the reason otherwise.
func (r *readiness) ServeReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if ok, reason := r.Ready(); !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", reason)
		return
	}
	fmt.Fprintln(w, "ready")
}

// serveLive answers /livez: the process is up and serving HTTP. It does not
// depend on NATS, so an outage of the cluster makes replicas not ready
// without restarting them.
func serveLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// phxServices returns the names of the phx services registered on a server
// (from its GetServiceInfo), sorted.
func phxServices[T any](info map[string]T) []string {
	var names []string
	for name := range info {
		if strings.HasPrefix(name, "phx.") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
