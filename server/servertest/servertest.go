// Package servertest starts a whole hub on loopback for tests: a dev PKI in a
// temporary directory, embedded NATS JetStream, and real gRPC over mTLS.
package servertest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/phx-exchange/phx/internal/pki"
	"github.com/phx-exchange/phx/internal/tlsutil"
	"github.com/phx-exchange/phx/server"
)

// Hub is a running test hub.
type Hub struct {
	// Addr is the hub's gRPC address (127.0.0.1:port).
	Addr string
	// MetricsAddr is the Prometheus metrics address (host:port of
	// /metrics), when started WithMetrics.
	MetricsAddr string
	// DataDir is the hub's data directory.
	DataDir string
	// PKI names the dev certificate files.
	PKI pki.Layout

	cfg    server.Config
	cancel context.CancelFunc
	done   chan error
}

// Option changes the hub's configuration before it starts.
type Option func(*server.Config)

// WithNATSURL uses an external NATS server with the given stream replicas.
func WithNATSURL(url string, replicas int) Option {
	return func(c *server.Config) { c.NATSURL, c.NATSReplicas = url, replicas }
}

// WithDataDir uses dir instead of a new temporary directory.
func WithDataDir(dir string) Option { return func(c *server.Config) { c.DataDir = dir } }

// WithLogger sets the hub's logger (default: discard, or stderr with PHX_TEST_LOG=1).
func WithLogger(l *slog.Logger) Option { return func(c *server.Config) { c.Logger = l } }

// WithMetrics serves the hub's Prometheus metrics on a free loopback port
// (Hub.MetricsAddr).
func WithMetrics() Option { return func(c *server.Config) { c.MetricsListen = "127.0.0.1:0" } }

// WithConfig edits the configuration directly.
func WithConfig(f func(*server.Config)) Option { return Option(f) }

// Start starts a hub and stops it when tb's test ends.
func Start(tb testing.TB, opts ...Option) *Hub {
	tb.Helper()
	h, err := start(tb.TempDir(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Stop)
	return h
}

// StartMain starts a hub for a TestMain (no testing.TB): it returns the hub
// and a function that stops it and removes its directory.
func StartMain(opts ...Option) (*Hub, func(), error) {
	dir, err := os.MkdirTemp("", "phx-servertest-")
	if err != nil {
		return nil, nil, err
	}
	h, err := start(dir, opts...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return h, func() { h.Stop(); os.RemoveAll(dir) }, nil
}

func start(dir string, opts ...Option) (*Hub, error) {
	cfg := server.Config{Dev: true, DataDir: dir, Listen: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second}
	if os.Getenv("PHX_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, o := range opts {
		o(&cfg)
	}
	h := &Hub{DataDir: cfg.DataDir, PKI: pki.Layout{DataDir: cfg.DataDir}, cfg: cfg}
	if err := h.run(); err != nil {
		return nil, err
	}
	// Later restarts keep the same addresses.
	h.cfg.Listen = h.Addr
	if h.MetricsAddr != "" {
		h.cfg.MetricsListen = h.MetricsAddr
	}
	return h, nil
}

func (h *Hub) run() error {
	srv, err := server.New(h.cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		return fmt.Errorf("hub did not start: %w", err)
	case <-time.After(30 * time.Second):
		cancel()
		return fmt.Errorf("hub did not start in 30s")
	}
	h.Addr, h.cancel, h.done = srv.Addr().String(), cancel, done
	if a := srv.MetricsAddr(); a != nil {
		h.MetricsAddr = a.String()
	}
	return nil
}

// Stop stops the hub gracefully and waits for it. It is safe to call twice.
func (h *Hub) Stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

// Restart stops the hub and starts it again on the same address and data dir.
func (h *Hub) Restart(tb testing.TB) {
	tb.Helper()
	h.Stop()
	var err error
	for range 50 { // the port may take a moment to be free again
		if err = h.run(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatal(err)
}

// ClientTLS returns a TLS configuration presenting org's dev certificate.
func (h *Hub) ClientTLS(tb testing.TB, org string) *tls.Config {
	tb.Helper()
	cfg, err := tlsutil.ClientConfig(h.PKI.CACert(), h.PKI.OrgCert(org), h.PKI.OrgKey(org))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// Dial opens a raw TCP connection to the hub (for transport-level tests).
func (h *Hub) Dial() (net.Conn, error) { return net.Dial("tcp", h.Addr) }
