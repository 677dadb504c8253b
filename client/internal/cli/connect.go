package cli

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"

	"github.com/phx-exchange/phx/internal/pki"
	"github.com/phx-exchange/phx/sdk"
)

// connect returns a client of the hub with the credentials of the global
// flags: --as ORG (the dev data dir's certificates), --cert/--key, or
// --token; --ca verifies the hub.
func (e *env) connect(opts ...sdk.Option) (*sdk.Client, error) {
	g := e.g
	ca, cert, key := g.ca, g.cert, g.key
	if g.as != "" {
		if g.cert != "" || g.key != "" {
			return nil, usagef("", "--as cannot be combined with --cert or --key")
		}
		l := pki.Layout{DataDir: g.dataDir}
		cert, key = l.OrgCert(g.as), l.OrgKey(g.as)
		if ca == "" {
			ca = l.CACert()
		}
		for _, f := range []string{cert, key, ca} {
			if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
				return nil, usagef("", "--as %s: %s does not exist (is --data-dir %s the hub's data dir? 'phx pki init' or 'phx pki issue --org %s' creates certificates)", g.as, f, g.dataDir, g.as)
			}
		}
	}
	switch {
	case cert != "" || key != "":
		if cert == "" || key == "" {
			return nil, usagef("", "--cert and --key (PHX_CERT and PHX_KEY) go together")
		}
		opts = append(opts, sdk.WithCertFiles(ca, cert, key), sdk.WithToken(g.token))
	case g.token != "":
		if ca == "" {
			// A token with no --ca: the dev hub's CA, when there is one.
			if dev := (pki.Layout{DataDir: g.dataDir}).CACert(); exists(dev) {
				ca = dev
			}
		}
		opts = append(opts, sdk.WithCAFile(ca), sdk.WithToken(g.token))
	default:
		return nil, usagef("", "no credentials: use --as ORG, --cert and --key, or --token (or PHX_CERT and PHX_KEY, or PHX_TOKEN)")
	}
	return sdk.New(g.hub, opts...)
}

// callCtx bounds one call to the hub by --timeout.
func (e *env) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if e.g.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, e.g.timeout)
}

// logger writes the SDK's notices (resumed feeds) to stderr, without times.
func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}
