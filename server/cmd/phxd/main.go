// Command phxd runs the phx hub.
//
//	go run ./server/cmd/phxd --dev
//
// Every flag has a PHXD_* environment equivalent (e.g. --nats-url and
// PHXD_NATS_URL); a flag given on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/pki"
	"github.com/phx-exchange/phx/internal/version"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/internal/grpcapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "phxd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("phxd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       server.Config
		logLevel  string
		logFormat string
		showVer   bool
		natsCreds string
		natsCA    string
	)
	fs.BoolVar(&cfg.Dev, "dev", false, "development mode: write a dev CA, hub and org certificates and a member registry under the data dir, and use them")
	fs.StringVar(&cfg.DataDir, "data-dir", "phx-data", "data directory (embedded JetStream store, dev PKI)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7443", "gRPC listen address")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS cluster URL(s), comma-separated; empty runs an embedded NATS server")
	fs.StringVar(&natsCreds, "nats-creds", "", "NATS credentials file (JWT + NKey) for the external cluster")
	fs.StringVar(&natsCA, "nats-ca", "", "CA bundle (PEM) that signs the external NATS servers' certificates")
	fs.IntVar(&cfg.NATSReplicas, "nats-replicas", 3, "stream replicas on an external NATS cluster")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "hub certificate (PEM)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "hub private key (PEM)")
	fs.StringVar(&cfg.ClientCA, "client-ca", "", "CA bundle that signs member client certificates (PEM)")
	fs.StringVar(&cfg.Members, "members", "", "member registry file (JSON; reloaded on change)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9464)")
	fs.Func("k-devices", "minimum cohort: fewest exposed devices in a health cell or failure bucket (default 50)", uintFlag(&cfg.KDevices))
	fs.Func("k-tenants", "minimum cohort: fewest distinct tenants in a health cell (default 5)", uintFlag(&cfg.KTenants))
	fs.Float64Var(&cfg.NoiseEpsilon, "noise-epsilon", 1, "epsilon of each health count delivered to CERTs and other wide readers (discrete Laplace noise, scale 1/epsilon)")
	fs.Float64Var(&cfg.NoiseCellBudget, "noise-cell-budget", 8, "the most epsilon the counts of one health cell spend together")
	fs.BoolVar(&cfg.NoDetector, "no-detector", false, "do not run the detector (another replica runs it)")
	fs.DurationVar(&cfg.DetectorLeaseTTL, "detector-lease", 15*time.Second, "how long the detector's lease holds without renewal: the longest a dead replica's detector stays unreplaced (renewed every third of it)")
	fs.StringVar(&cfg.TokenKeys, "token-keys", "", "directory of the Ed25519 keys that sign bearer tokens (default <data-dir>/tokens; replicas share one)")
	fs.DurationVar(&cfg.TokenMaxTTL, "token-max-ttl", 30*24*time.Hour, "longest lifetime of an issued bearer token")
	fs.DurationVar(&cfg.HealthRetention, "health-retention", 7*24*time.Hour, "how long health cells are kept")
	cfg.RateSignals, cfg.RateWrites, cfg.RateReads = grpcapi.DefaultRateSignals, grpcapi.DefaultRateWrites, grpcapi.DefaultRateReads
	fs.Var((*rateFlag)(&cfg.RateSignals), "rate-signals", "health signals each org may publish per second, as `RATE[:BURST]` (burst default: 2 s worth; 0: no limit)")
	fs.Var((*rateFlag)(&cfg.RateWrites), "rate-writes", "other writes (rollouts, incidents, answers, admin) each org may make per second, as `RATE[:BURST]` (0: no limit)")
	fs.Var((*rateFlag)(&cfg.RateReads), "rate-reads", "reads and Subscribe calls each org may make per second, as `RATE[:BURST]` (0: no limit)")
	fs.IntVar(&cfg.FeedQueue, "feed-queue", 256, "envelopes that may wait for one subscriber that reads slowly")
	fs.DurationVar(&cfg.FeedStall, "feed-stall", 30*time.Second, "how long a subscriber's queue may stay full and unread before its stream ends with Aborted (it resumes from its cursor)")
	fs.BoolVar(&cfg.SyncAlways, "sync-always", false, "fsync every write before acknowledging it (embedded NATS)")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&showVer, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: phxd [flags]\n\nRuns the phx hub. Every flag can also be set as PHXD_<NAME> (e.g. PHXD_NATS_URL).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if showVer {
		fmt.Fprintln(stderr, "phxd", version.String())
		return nil
	}
	if natsCreds != "" {
		cfg.NATSOptions = append(cfg.NATSOptions, nats.UserCredentials(natsCreds))
	}
	if natsCA != "" {
		cfg.NATSOptions = append(cfg.NATSOptions, nats.RootCAs(natsCA))
	}
	if cfg.DetectorLeaseTTL < 3*time.Second {
		return fmt.Errorf("--detector-lease %v: must be at least 3s (it is renewed every third of it)", cfg.DetectorLeaseTTL)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if logFormat == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	cfg.Logger = slog.New(h)

	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	if cfg.Dev {
		go func() {
			select {
			case <-srv.Ready():
				printDevHelp(stderr, cfg.DataDir, srv.Addr().String())
			case <-ctx.Done():
			}
		}()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := srv.ReloadMembers(); err != nil {
				cfg.Logger.Warn("reload members, token keys and certificates", "err", err)
			}
		}
	}()
	return srv.Run(ctx)
}

// applyEnv sets each flag from PHXD_<FLAG_NAME> if that variable is set;
// command-line flags parsed afterwards override it.
func applyEnv(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "PHXD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

func printDevHelp(w io.Writer, dataDir, addr string) {
	l := pki.Layout{DataDir: dataDir}
	fmt.Fprintf(w, `
phx hub (dev mode) listening on %s
  CA:       %s
  members:  %s
  orgs:     contoso, fabrikam, northwind (vendors), microsoft (platform), national-cert (cert), operator

Point the CLI at it, as any dev org:
  go run ./client/cmd/phx --as contoso whoami
  go run ./client/cmd/phx --as fabrikam watch

or with the environment:
  export PHX_HUB=%s PHX_CA=%s PHX_CERT=%s PHX_KEY=%s

`, addr, l.CACert(), l.Members(), addr, l.CACert(), l.OrgCert("contoso"), l.OrgKey("contoso"))
}

// rateFlag is a rate limit given as RATE[:BURST]; 0 turns it off.
type rateFlag members.Rate

func (r *rateFlag) String() string {
	if r == nil {
		return ""
	}
	if r.PerSecond < 0 {
		return "0"
	}
	s := strconv.FormatFloat(r.PerSecond, 'f', -1, 64)
	if r.Burst > 0 {
		s += ":" + strconv.Itoa(r.Burst)
	}
	return s
}

func (r *rateFlag) Set(s string) error {
	rs, bs, hasBurst := strings.Cut(s, ":")
	v, err := strconv.ParseFloat(rs, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return fmt.Errorf("%q is not a rate (per second, 0 for no limit)", s)
	}
	b := 0
	if hasBurst {
		if b, err = strconv.Atoi(bs); err != nil || b < 1 {
			return fmt.Errorf("%q: the burst is not a positive count", s)
		}
	}
	if v == 0 {
		*r = rateFlag{PerSecond: -1}
		return nil
	}
	*r = rateFlag{PerSecond: v, Burst: b}
	return nil
}

// uintFlag parses a positive count into *v.
func uintFlag(v *uint32) func(string) error {
	return func(s string) error {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a positive count", s)
		}
		*v = uint32(n)
		return nil
	}
}
