// Package natsembed runs a NATS server with JetStream inside the hub's
// process: no network listener, an in-process client connection, and a file
// store under the data dir (DESIGN.md section 2).
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config configures the embedded server.
type Config struct {
	// StoreDir is where JetStream keeps its files.
	StoreDir string
	// SyncAlways fsyncs every write before acknowledging it.
	SyncAlways bool
	// Logger receives the server's warnings and errors.
	Logger *slog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// Start starts the server and waits until it takes connections.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	opts := &server.Options{
		ServerName: "phxd-embedded",
		DontListen: true,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		// Every live Subscribe holds an ephemeral consumer on each stream it
		// reads: no cap on consumers per stream (the server's default is
		// 1,000, which would refuse the 1,001st subscriber).
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(&slogAdapter{l: cfg.Logger.With("component", "nats")}, false, false, false)
	}
	go ns.Start()
	deadline := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !ns.ReadyForConnections(deadline) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready in time")
	}
	return &Server{ns: ns}, nil
}

// Connect opens an in-process client connection.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(s.ns), nats.Name("phxd")}, opts...)
	return nats.Connect("", opts...)
}

// Shutdown stops the server and waits for it to finish writing.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

type slogAdapter struct{ l *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  {}
