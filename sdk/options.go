package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// DefaultHub is the hub address used when neither the target passed to New
// nor PHX_HUB names one.
const DefaultHub = "127.0.0.1:7443"

// Environment variables read by FromEnv.
const (
	EnvHub   = "PHX_HUB"   // hub address, host:port, or several separated by commas
	EnvCA    = "PHX_CA"    // PEM file of the CA that signed the hub's certificate
	EnvCert  = "PHX_CERT"  // PEM file of the client certificate (mTLS)
	EnvKey   = "PHX_KEY"   // PEM file of the client certificate's key
	EnvToken = "PHX_TOKEN" // bearer token
)

// Default retry policy (see WithRetry).
const (
	DefaultMaxAttempts    = 5
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
)

// An Option configures a Client. Options are applied in order, so a later
// option overrides what an earlier one set.
type Option func(*options) error

type options struct {
	hubFromEnv string

	caFile, certFile, keyFile string
	tlsConfig                 *tls.Config
	token                     string

	retry       retryPolicy
	dialOptions []grpc.DialOption
	logger      *slog.Logger
	onRedact    func(method string, redactions []*phxv1.Redaction)
	outbox      *outboxOptions
}

func defaultOptions() *options {
	return &options{
		retry: retryPolicy{
			maxAttempts: DefaultMaxAttempts,
			initial:     DefaultInitialBackoff,
			max:         DefaultMaxBackoff,
		},
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// WithCertFiles authenticates with a client certificate (mTLS): caFile is
// the PEM bundle that verifies the hub's certificate, certFile and keyFile
// the member's certificate and key. The files are re-read when they change,
// so certificates can be rotated without restarting the process.
func WithCertFiles(caFile, certFile, keyFile string) Option {
	return func(o *options) error {
		if certFile == "" || keyFile == "" {
			return errors.New("WithCertFiles: certFile and keyFile are required")
		}
		o.caFile, o.certFile, o.keyFile, o.tlsConfig = caFile, certFile, keyFile, nil
		return nil
	}
}

// WithCAFile verifies the hub with the CA certificates of caFile and presents
// no client certificate (server-authenticated TLS). Use it with WithToken.
func WithCAFile(caFile string) Option {
	return func(o *options) error {
		o.caFile, o.certFile, o.keyFile, o.tlsConfig = caFile, "", "", nil
		return nil
	}
}

// WithTLSConfig uses cfg (cloned) for the connection instead of files. The
// SDK raises its minimum version to TLS 1.3.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) error {
		if cfg == nil {
			return errors.New("WithTLSConfig: nil config")
		}
		o.tlsConfig = cfg.Clone()
		o.caFile, o.certFile, o.keyFile = "", "", ""
		return nil
	}
}

// WithToken sends token as "authorization: Bearer <token>" with every call.
// The token is only ever sent over TLS. An empty token sends none.
func WithToken(token string) Option {
	return func(o *options) error {
		o.token = token
		return nil
	}
}

// WithRetry sets how calls are retried when the hub is unavailable: at most
// maxAttempts attempts in all (1 disables retries), waiting a jittered,
// exponentially growing backoff from initialBackoff up to maxBackoff between
// them. The defaults are 5 attempts, 100ms and 5s. Subscriptions resume
// without an attempt limit, with the same backoff.
func WithRetry(maxAttempts int, initialBackoff, maxBackoff time.Duration) Option {
	return func(o *options) error {
		if maxAttempts < 1 {
			return fmt.Errorf("WithRetry: maxAttempts must be ≥ 1, got %d", maxAttempts)
		}
		if initialBackoff <= 0 || maxBackoff < initialBackoff {
			return fmt.Errorf("WithRetry: need 0 < initialBackoff ≤ maxBackoff, got %v and %v", initialBackoff, maxBackoff)
		}
		o.retry = retryPolicy{maxAttempts: maxAttempts, initial: initialBackoff, max: maxBackoff}
		return nil
	}
}

// WithDialOptions adds gRPC dial options, applied after the SDK's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) error {
		o.dialOptions = append(o.dialOptions, opts...)
		return nil
	}
}

// WithRedactionHandler calls fn whenever the hub removed identifiers from
// the free text of an incident or rollout the client sent (e-mail and IP
// addresses, host names, user paths, ...; DESIGN.md section 8). method is
// the SDK method ("ReportIncident", "UpdateRollout", ...). The stored item
// carries "[redacted:<kind>]" in their place.
func WithRedactionHandler(fn func(method string, redactions []*phxv1.Redaction)) Option {
	return func(o *options) error {
		o.onRedact = fn
		return nil
	}
}

// WithLogger makes the SDK log retries and subscription resumes to l. By
// default it logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		o.logger = l
		return nil
	}
}

// FromEnv configures the client from the environment: PHX_CA, PHX_CERT and
// PHX_KEY (a client certificate, or just a CA with a token), PHX_TOKEN, and
// PHX_HUB when New is given an empty target. Unset variables change nothing,
// so options after FromEnv override it and options before it stay unless the
// environment sets them.
func FromEnv() Option {
	return func(o *options) error {
		o.hubFromEnv = os.Getenv(EnvHub)
		ca, cert, key := os.Getenv(EnvCA), os.Getenv(EnvCert), os.Getenv(EnvKey)
		switch {
		case cert != "" || key != "":
			if cert == "" || key == "" {
				return fmt.Errorf("FromEnv: %s and %s must be set together", EnvCert, EnvKey)
			}
			o.caFile, o.certFile, o.keyFile, o.tlsConfig = ca, cert, key, nil
		case ca != "":
			o.caFile, o.tlsConfig = ca, nil
		}
		if t := os.Getenv(EnvToken); t != "" {
			o.token = t
		}
		return nil
	}
}

// tokenCreds are per-RPC bearer credentials.
type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return true }
