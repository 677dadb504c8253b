// Package server is the phx hub as a library: Config, New and Run(ctx).
// It serves the phx.v1 gRPC services over TLS 1.3 with client certificates,
// stores and fans out items through NATS JetStream (embedded by default, an
// external cluster with NATSURL), and shuts down gracefully when ctx ends.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/pki"
	"github.com/phx-exchange/phx/internal/tlsutil"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/detect"
	"github.com/phx-exchange/phx/server/internal/detectrun"
	"github.com/phx-exchange/phx/server/internal/grpcapi"
	"github.com/phx-exchange/phx/server/internal/natsembed"
	"github.com/phx-exchange/phx/server/internal/noise"
	"github.com/phx-exchange/phx/server/internal/policy"
	"github.com/phx-exchange/phx/server/internal/token"
)

// Config configures a hub.
type Config struct {
	// Dev writes (if missing) a dev CA, the hub's certificate, one client
	// certificate per dev org and the dev member registry under DataDir, and
	// uses them unless TLSCert/TLSKey/ClientCA/Members are set.
	Dev bool
	// DataDir holds the embedded JetStream store and, with Dev, the dev PKI.
	DataDir string
	// Listen is the gRPC address (default 127.0.0.1:7443).
	Listen string
	// NATSURL, if set, uses an external NATS cluster instead of the embedded
	// server (streams with NATSReplicas replicas).
	NATSURL string
	// NATSReplicas per stream on an external cluster (default 3).
	NATSReplicas int
	// NATSOptions are extra options for the external connection (credentials, TLS).
	NATSOptions []nats.Option
	// TLSCert and TLSKey are the hub's certificate and key (reloaded on change).
	TLSCert, TLSKey string
	// ClientCA is the CA bundle that signs member certificates.
	ClientCA string
	// Members is the member registry file (reloaded on change).
	Members string
	// MetricsListen, if set, serves Prometheus metrics on /metrics.
	MetricsListen string
	// HealthRetention is how long health cells are kept (default 7 days).
	HealthRetention time.Duration
	// SyncAlways fsyncs every JetStream write before acknowledging it
	// (embedded server only).
	SyncAlways bool
	// KDevices and KTenants are the minimum cohorts: a health cell with
	// fewer exposed devices or distinct tenants (or a failure bucket with
	// fewer devices) is refused (defaults 50 and 5).
	KDevices, KTenants uint32
	// NoiseEpsilon is the epsilon of each count of a health cell delivered
	// to a wide audience (CERTs, the operator); NoiseCellBudget caps a
	// cell's total (defaults 1 and 8).
	NoiseEpsilon, NoiseCellBudget float64
	// TokenKeys is the directory of the Ed25519 keys that sign and verify
	// bearer tokens (default <DataDir>/tokens; a first key is generated if it
	// holds none). Hub replicas share one: copy it to each. Reloaded on
	// change, so a key can be added and made active without a restart.
	TokenKeys string
	// TokenMaxTTL caps the lifetime of issued tokens (default 30 days).
	TokenMaxTTL time.Duration
	// NoDetector turns the hub's detector off (it is on by default).
	// Replicas that run it take turns through a lease: one runs it at a
	// time, and another takes over when it stops or dies.
	NoDetector bool
	// DetectorLeaseTTL is how long the detector's lease holds without a
	// renewal (default 15s): the longest a dead holder's detector stays
	// unreplaced. DetectorRenewInterval is how often its holder renews it
	// (default a third of that).
	DetectorLeaseTTL, DetectorRenewInterval time.Duration
	// ReadinessInterval is how often the hub checks that JetStream answers,
	// for its readiness (grpc.health.v1 and /readyz; default 5s).
	ReadinessInterval time.Duration
	// RateSignals, RateWrites and RateReads are each org's token buckets
	// for health signals, other writes, and reads and subscribes (zero: the
	// defaults, grpcapi.DefaultRate*; a negative PerSecond: no limit). The
	// member registry may override them per org.
	RateSignals, RateWrites, RateReads members.Rate
	// FeedQueue and FeedStall bound a subscriber that does not keep up: at
	// most FeedQueue envelopes wait for it, and once they have waited
	// FeedStall unread its stream ends with Aborted (it resumes from its
	// cursor). Zero: 256 and 30s.
	FeedQueue int
	FeedStall time.Duration
	// ShutdownTimeout bounds the graceful shutdown (default 10s).
	ShutdownTimeout time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Server is a hub.
type Server struct {
	cfg   Config
	log   *slog.Logger
	ready chan struct{}

	mu     sync.Mutex
	addr   net.Addr
	bus    *bus.Bus
	reg    *members.Store
	tokens *token.Service
	// hubCert and clientCAs reload on change by themselves (checked at most
	// once a second, on use); ReloadMembers checks them too, to log.
	hubCert   *tlsutil.Reloader
	clientCAs *tlsutil.CAPool
	seenCert  *tls.Certificate
	seenCAs   *x509.CertPool

	metricsAddr net.Addr // guarded by mu
}

// New checks cfg and returns a Server; Run starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:7443"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "phx-data"
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.ReadinessInterval <= 0 {
		cfg.ReadinessInterval = 5 * time.Second
	}
	if cfg.NATSReplicas <= 0 {
		cfg.NATSReplicas = 3
	}
	if cfg.HealthRetention <= 0 {
		// The same default as the bus's, so that publishing refuses the
		// cells the stream would not keep.
		cfg.HealthRetention = 7 * 24 * time.Hour
	}
	if cfg.TokenKeys == "" {
		cfg.TokenKeys = filepath.Join(cfg.DataDir, "tokens")
	}
	if cfg.TokenMaxTTL <= 0 {
		cfg.TokenMaxTTL = grpcapi.DefaultTokenMaxTTL
	}
	if cfg.Dev {
		l := pki.Layout{DataDir: cfg.DataDir}
		cfg.TLSCert = or(cfg.TLSCert, l.HubCert())
		cfg.TLSKey = or(cfg.TLSKey, l.HubKey())
		cfg.ClientCA = or(cfg.ClientCA, l.CACert())
		cfg.Members = or(cfg.Members, l.Members())
	}
	var missing []string
	for name, v := range map[string]string{"tls-cert": cfg.TLSCert, "tls-key": cfg.TLSKey, "client-ca": cfg.ClientCA, "members": cfg.Members} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("server: %v must be set (or use --dev)", missing)
	}
	return &Server{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Ready is closed once the hub takes calls.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the gRPC listen address, once Ready.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// MetricsAddr is the metrics listen address, once Ready (nil without
// MetricsListen).
func (s *Server) MetricsAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metricsAddr
}

// ReloadMembers re-reads the member registry file, the token keys, the
// hub's certificate and the client CA bundle now, those that changed.
func (s *Server) ReloadMembers() error {
	s.mu.Lock()
	reg, tokens, hubCert, clientCAs := s.reg, s.tokens, s.hubCert, s.clientCAs
	s.mu.Unlock()
	if reg == nil {
		return errors.New("server not running")
	}
	changed, err := reg.Reload()
	if changed {
		s.log.Info("member registry reloaded", "orgs", len(reg.Get().Orgs()))
	}
	if tokens != nil {
		before := tokens.Keys()
		after, kerr := tokens.Reload()
		if kerr != nil {
			err = errors.Join(err, fmt.Errorf("token keys: %w", kerr))
		} else if after.Kid != before.Kid || !slices.Equal(after.Kids(), before.Kids()) {
			s.log.Info("token keys reloaded", "signing", after.Kid, "verifying", after.Kids())
		}
	}
	if hubCert != nil {
		if _, cerr := hubCert.Reload(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("hub certificate (the last good one is served): %w", cerr))
		}
		// Compared with what this last saw: a handshake may have loaded it.
		cur, _ := hubCert.GetCertificate(nil)
		s.mu.Lock()
		changed := s.seenCert != nil && s.seenCert != cur
		s.seenCert = cur
		s.mu.Unlock()
		if changed {
			s.log.Info("hub certificate reloaded", "file", s.cfg.TLSCert)
		}
	}
	if clientCAs != nil {
		if _, cerr := clientCAs.Reload(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("client CA bundle (the last good one is trusted): %w", cerr))
		}
		cur := clientCAs.Pool()
		s.mu.Lock()
		changed := s.seenCAs != nil && s.seenCAs != cur
		s.seenCAs = cur
		s.mu.Unlock()
		if changed {
			s.log.Info("client CA bundle reloaded", "file", s.cfg.ClientCA)
		}
	}
	return err
}

// Run runs the hub until ctx ends, then shuts down gracefully: it stops
// taking calls, ends live streams (clients resume by cursor), flushes NATS,
// and stops the embedded server.
func (s *Server) Run(ctx context.Context) error {
	cfg := s.cfg
	if cfg.Dev {
		created, err := pki.InitDev(cfg.DataDir)
		if err != nil {
			return fmt.Errorf("dev PKI: %w", err)
		}
		for _, f := range created {
			s.log.Info("wrote dev file", "file", f)
		}
	}
	reg, err := members.NewStore(cfg.Members)
	if err != nil {
		return fmt.Errorf("members: %w", err)
	}
	// The hub's certificate and the client CA bundle follow their files.
	hubCert, err := tlsutil.NewReloader(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	clientCAs, err := tlsutil.NewCAPool(cfg.ClientCA)
	if err != nil {
		return fmt.Errorf("client CA: %w", err)
	}
	tlsCfg := tlsutil.ServerConfigFrom(hubCert, clientCAs)

	// NATS: embedded (in-process) or external.
	var (
		nc       *nats.Conn
		embedded *natsembed.Server
		replicas = 1
	)
	if cfg.NATSURL == "" {
		storeDir := filepath.Join(cfg.DataDir, "jetstream")
		if err := os.MkdirAll(storeDir, 0o755); err != nil {
			return err
		}
		embedded, err = natsembed.Start(ctx, natsembed.Config{StoreDir: storeDir, SyncAlways: cfg.SyncAlways, Logger: s.log})
		if err != nil {
			return err
		}
		defer embedded.Shutdown()
		nc, err = embedded.Connect()
	} else {
		replicas = cfg.NATSReplicas
		opts := append([]nats.Option{nats.Name("phxd"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(false)}, cfg.NATSOptions...)
		nc, err = nats.Connect(cfg.NATSURL, opts...)
	}
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	b, err := bus.New(ctx, nc, bus.Config{Replicas: replicas, HealthMaxAge: cfg.HealthRetention, Logger: s.log})
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	secret, err := b.Secret(ctx, "pseudonym-hmac")
	if err != nil {
		return err
	}
	noiseSeed, err := b.Secret(ctx, "noise-seed")
	if err != nil {
		return err
	}
	noiser, err := noise.New(noiseSeed, cfg.NoiseEpsilon, cfg.NoiseCellBudget)
	if err != nil {
		return err
	}
	tokens, err := token.NewService(cfg.TokenKeys)
	if err != nil {
		return fmt.Errorf("token keys: %w", err)
	}
	ledger, err := token.OpenLedger(ctx, b, cfg.TokenMaxTTL, s.log)
	if err != nil {
		return fmt.Errorf("token ledger: %w", err)
	}
	auditLog := audit.New(b.JetStream(), b.Stream(bus.StreamAudit), audit.Config{Logger: s.log})
	s.mu.Lock()
	s.bus, s.reg, s.tokens = b, reg, tokens
	s.hubCert, s.clientCAs = hubCert, clientCAs
	s.mu.Unlock()

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerFeedRecoveries(promReg, b)
	draining := make(chan struct{})
	api := grpcapi.New(grpcapi.Config{
		Bus:           b,
		Registry:      reg,
		Authenticator: authn.NewReloading(clientCAs.Pool, reg).WithTokens(tokens, ledger),
		Tokens:        tokens,
		Ledger:        ledger,
		TokenMaxTTL:   cfg.TokenMaxTTL,
		Privacy:       grpcapi.Privacy{KDevices: cfg.KDevices, KTenants: cfg.KTenants},
		Noise:         noiser,
		Pseudonyms:    policy.NewPseudonymizer(secret),
		Metrics:       grpcapi.NewMetrics(promReg),
		Logger:        s.log,
		HealthMaxAge:  cfg.HealthRetention,
		Draining:      draining,
		Audit:         auditLog,
		RateLimits:    grpcapi.RateLimits{Signals: cfg.RateSignals, Writes: cfg.RateWrites, Reads: cfg.RateReads},
		Feed:          grpcapi.FeedLimits{Queue: cfg.FeedQueue, Stall: cfg.FeedStall},
	})
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.ChainUnaryInterceptor(api.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(api.StreamInterceptor()),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	api.Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	// Serving only while NATS and JetStream are there.
	ready := newReadiness(nc, b.JetStream(), hs, phxServices(gs.GetServiceInfo()), cfg.ReadinessInterval, s.log, promReg)
	promReg.MustRegister(newStreamCollector(b.JetStream(), 2*time.Second))

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.addr = lis.Addr()
	s.mu.Unlock()

	var wg sync.WaitGroup
	serveErr := make(chan error, 2)
	// Follow token revocations from every replica; take calls only once the
	// revocations stored before start are known.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	wg.Go(func() { _ = ledger.Watch(watchCtx) })
	select {
	case <-ledger.Ready():
	case <-ctx.Done():
		lis.Close()
		stopWatch()
		wg.Wait()
		return ctx.Err()
	}
	wg.Go(func() {
		if err := gs.Serve(lis); err != nil {
			serveErr <- fmt.Errorf("grpc: %w", err)
		}
	})
	var metricsSrv *http.Server
	if cfg.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/readyz", ready.ServeReady)
		mux.HandleFunc("/livez", serveLive)
		mlis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			gs.Stop()
			stopWatch()
			wg.Wait()
			return err
		}
		s.mu.Lock()
		s.metricsAddr = mlis.Addr()
		s.mu.Unlock()
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := metricsSrv.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("metrics: %w", err)
			}
		})
		s.log.Info("metrics", "listen", mlis.Addr().String())
	}
	// The audit log outlives the calls it records: it is closed (flushed)
	// once the gRPC server has stopped.
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAudit()
	wg.Go(func() {
		if err := auditLog.Run(auditCtx); err != nil {
			s.log.Error("audit log", "err", err)
		}
	})
	// The detector follows health cells and rollouts and raises advisories.
	if !cfg.NoDetector {
		lag := prometheus.NewGauge(prometheus.GaugeOpts{Name: "phx_detector_lag_seconds", Help: "How far the detector is behind the stored health cells and rollouts."})
		leader := prometheus.NewGauge(prometheus.GaugeOpts{Name: "phx_detector_leader", Help: "1 while this replica holds the detector's lease and runs it."})
		promReg.MustRegister(lag, leader)
		dcfg := detect.DefaultConfig()
		for _, o := range reg.Get().Orgs() {
			if m, _ := reg.Get().Lookup(o); m.Role == members.RolePlatform {
				dcfg.PlatformOrg = o
				break
			}
		}
		detCtx, stopDetector := context.WithCancel(ctx)
		defer stopDetector()
		wg.Go(func() {
			err := detectrun.Run(detCtx, detectrun.Config{
				Bus: b, NewEngine: func() detectrun.Engine { return detect.New(dcfg) }, Registry: reg, Logger: s.log.With("part", "detector"),
				LeaseTTL: cfg.DetectorLeaseTTL, RenewInterval: cfg.DetectorRenewInterval,
				// Only this process reaches an embedded NATS server.
				Sole: cfg.NATSURL == "",
				Lag:  func(d time.Duration) { lag.Set(d.Seconds()) },
				Leader: func(on bool) {
					if on {
						leader.Set(1)
					} else {
						leader.Set(0)
					}
				},
			})
			if err != nil {
				s.log.Error("detector stopped", "err", err)
			}
		})
	}
	// Reload the member registry, the token keys, the hub certificate and
	// the client CA bundle when their files change.
	reloadCtx, stopReload := context.WithCancel(ctx)
	wg.Go(func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-reloadCtx.Done():
				return
			case <-t.C:
				if err := s.ReloadMembers(); err != nil {
					s.log.Warn("reload", "err", err)
				}
			}
		}
	})
	readyCtx, stopReady := context.WithCancel(ctx)
	defer stopReady()
	ready.check(ctx)
	wg.Go(func() { ready.Run(readyCtx) })
	mode := "embedded"
	if cfg.NATSURL != "" {
		mode = "external " + redactURLs(cfg.NATSURL)
	}
	s.log.Info("phxd ready", "listen", lis.Addr().String(), "nats", mode, "data_dir", cfg.DataDir)
	close(s.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	}

	// Graceful shutdown.
	s.log.Info("shutting down")
	ready.Shutdown()
	stopReady()
	close(draining)
	stopReload()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.ShutdownTimeout):
		s.log.Warn("graceful stop timed out; closing remaining calls")
		gs.Stop()
		<-done
	}
	if metricsSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		_ = metricsSrv.Shutdown(sctx)
		cancel()
	}
	actx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	if err := auditLog.Close(actx); err != nil {
		s.log.Error("audit log not flushed", "err", err)
	}
	cancel()
	stopAudit()
	stopWatch()
	wg.Wait()
	if err := nc.FlushTimeout(5 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		s.log.Warn("nats flush", "err", err)
	}
	nc.Close()
	s.log.Info("stopped")
	return runErr
}

// redactURLs hides passwords in a comma-separated list of NATS URLs.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
