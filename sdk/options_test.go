package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phx-exchange/phx/internal/pki"
)

// devPKI writes a dev PKI (CA, hub and org certificates) to a temp dir.
func devPKI(t *testing.T) pki.Layout {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.InitDev(dir); err != nil {
		t.Fatal(err)
	}
	return pki.Layout{DataDir: dir}
}

func clearEnv(t *testing.T) {
	for _, k := range []string{EnvHub, EnvCA, EnvCert, EnvKey, EnvToken} {
		t.Setenv(k, "")
	}
}

func TestOptions(t *testing.T) {
	clearEnv(t)
	tests := []struct {
		name    string
		env     map[string]string
		opts    []Option
		wantErr string
		check   func(t *testing.T, o *options)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, o *options) {
				if o.retry != (retryPolicy{5, 100 * time.Millisecond, 5 * time.Second}) {
					t.Errorf("retry = %+v", o.retry)
				}
				if o.caFile != "" || o.certFile != "" || o.token != "" || o.tlsConfig != nil {
					t.Errorf("credentials set: %+v", o)
				}
			},
		},
		{
			name: "cert files",
			opts: []Option{WithCertFiles("ca", "c", "k")},
			check: func(t *testing.T, o *options) {
				if o.caFile != "ca" || o.certFile != "c" || o.keyFile != "k" {
					t.Errorf("got %q %q %q", o.caFile, o.certFile, o.keyFile)
				}
			},
		},
		{name: "cert files need cert and key", opts: []Option{WithCertFiles("ca", "", "k")}, wantErr: "certFile and keyFile are required"},
		{
			name: "CA file replaces cert files",
			opts: []Option{WithCertFiles("ca", "c", "k"), WithCAFile("ca2"), WithToken("t")},
			check: func(t *testing.T, o *options) {
				if o.caFile != "ca2" || o.certFile != "" || o.keyFile != "" || o.token != "t" {
					t.Errorf("got %+v", o)
				}
			},
		},
		{name: "nil TLS config", opts: []Option{WithTLSConfig(nil)}, wantErr: "nil config"},
		{
			name: "TLS config is cloned",
			opts: []Option{WithCertFiles("ca", "c", "k"), WithTLSConfig(&tls.Config{ServerName: "hub"})},
			check: func(t *testing.T, o *options) {
				if o.tlsConfig == nil || o.tlsConfig.ServerName != "hub" || o.certFile != "" {
					t.Errorf("got %+v", o)
				}
			},
		},
		{name: "retry attempts", opts: []Option{WithRetry(0, time.Second, time.Second)}, wantErr: "maxAttempts must be ≥ 1"},
		{name: "retry backoff order", opts: []Option{WithRetry(3, time.Second, time.Millisecond)}, wantErr: "initialBackoff ≤ maxBackoff"},
		{name: "retry backoff positive", opts: []Option{WithRetry(3, 0, time.Millisecond)}, wantErr: "0 < initialBackoff"},
		{
			name: "retry set",
			opts: []Option{WithRetry(1, time.Millisecond, 2*time.Millisecond)},
			check: func(t *testing.T, o *options) {
				if o.retry != (retryPolicy{1, time.Millisecond, 2 * time.Millisecond}) {
					t.Errorf("retry = %+v", o.retry)
				}
			},
		},
		{name: "nil logger", opts: []Option{WithLogger(nil)}, wantErr: "nil logger"},
		{
			name: "env",
			env:  map[string]string{EnvHub: "hub:1", EnvCA: "ca", EnvCert: "c", EnvKey: "k", EnvToken: "tok"},
			opts: []Option{FromEnv()},
			check: func(t *testing.T, o *options) {
				if o.hubFromEnv != "hub:1" || o.caFile != "ca" || o.certFile != "c" || o.keyFile != "k" || o.token != "tok" {
					t.Errorf("got %+v", o)
				}
			},
		},
		{
			name: "env CA and token only",
			env:  map[string]string{EnvCA: "ca", EnvToken: "tok"},
			opts: []Option{FromEnv()},
			check: func(t *testing.T, o *options) {
				if o.caFile != "ca" || o.certFile != "" || o.token != "tok" {
					t.Errorf("got %+v", o)
				}
			},
		},
		{
			name: "later options beat env",
			env:  map[string]string{EnvCA: "ca", EnvCert: "c", EnvKey: "k", EnvToken: "tok"},
			opts: []Option{FromEnv(), WithCertFiles("ca2", "c2", "k2"), WithToken("")},
			check: func(t *testing.T, o *options) {
				if o.caFile != "ca2" || o.certFile != "c2" || o.keyFile != "k2" || o.token != "" {
					t.Errorf("got %+v", o)
				}
			},
		},
		{
			name: "unset env keeps earlier options",
			opts: []Option{WithCertFiles("ca", "c", "k"), WithToken("t"), FromEnv()},
			check: func(t *testing.T, o *options) {
				if o.caFile != "ca" || o.certFile != "c" || o.token != "t" {
					t.Errorf("got %+v", o)
				}
			},
		},
		{name: "env cert without key", env: map[string]string{EnvCert: "c"}, opts: []Option{FromEnv()}, wantErr: "must be set together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			o := defaultOptions()
			var err error
			for _, opt := range tt.opts {
				if err = opt(o); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func TestNew(t *testing.T) {
	l := devPKI(t)
	clearEnv(t)
	tests := []struct {
		name       string
		target     string
		env        map[string]string
		opts       []Option
		wantTarget string
		wantErr    string
	}{
		{name: "default target", opts: []Option{WithCertFiles(l.CACert(), l.OrgCert("contoso"), l.OrgKey("contoso"))}, wantTarget: DefaultHub},
		{name: "explicit target", target: "localhost:9", opts: []Option{WithCAFile(l.CACert()), WithToken("x")}, wantTarget: "localhost:9"},
		{
			name:       "target from env",
			env:        map[string]string{EnvHub: "127.0.0.1:9", EnvCA: l.CACert(), EnvCert: l.OrgCert("contoso"), EnvKey: l.OrgKey("contoso")},
			opts:       []Option{FromEnv()},
			wantTarget: "127.0.0.1:9",
		},
		{
			name:       "explicit target beats env",
			target:     "localhost:1",
			env:        map[string]string{EnvHub: "127.0.0.1:9"},
			opts:       []Option{FromEnv()},
			wantTarget: "localhost:1",
		},
		{name: "system roots", wantTarget: DefaultHub},
		{name: "missing CA file", opts: []Option{WithCAFile(filepath.Join(l.DataDir, "nope.crt"))}, wantErr: "nope.crt"},
		{name: "missing cert", opts: []Option{WithCertFiles(l.CACert(), "nope.crt", "nope.key")}, wantErr: "client certificate"},
		{name: "option error", opts: []Option{WithRetry(0, 1, 1)}, wantErr: "maxAttempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := New(tt.target, tt.opts...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Target() != tt.wantTarget {
				t.Errorf("target = %q, want %q", c.Target(), tt.wantTarget)
			}
		})
	}
}

func TestTokenCreds(t *testing.T) {
	md, err := tokenCreds("abc").GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer abc" {
		t.Errorf("metadata = %v, %v", md, err)
	}
	if !tokenCreds("abc").RequireTransportSecurity() {
		t.Error("token sent without TLS")
	}
}

func TestBackoff(t *testing.T) {
	p := retryPolicy{maxAttempts: 5, initial: 100 * time.Millisecond, max: 5 * time.Second}
	for n := 1; n <= 12; n++ {
		ceil := min(p.initial<<(n-1), p.max)
		for range 50 {
			d := p.backoff(n)
			if d < ceil/2 || d > ceil {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, ceil/2, ceil)
			}
		}
	}
}

func TestInvokeRetriesOnlyUnavailable(t *testing.T) {
	c := &Client{retry: retryPolicy{maxAttempts: 4, initial: time.Millisecond, max: 2 * time.Millisecond}, log: defaultOptions().logger}
	tests := []struct {
		name     string
		errs     []error // returned by successive attempts; nil = success
		attempts int
		is       error
	}{
		{name: "success", errs: []error{nil}, attempts: 1},
		{name: "unavailable then success", errs: []error{unavailable(), unavailable(), nil}, attempts: 3},
		{name: "gives up", errs: []error{unavailable(), unavailable(), unavailable(), unavailable(), nil}, attempts: 4, is: ErrUnavailable},
		{name: "invalid argument not retried", errs: []error{&Error{Code: CodeInvalidArgument}, nil}, attempts: 1, is: ErrInvalidArgument},
		{name: "internal not retried", errs: []error{&Error{Code: CodeInternal}, nil}, attempts: 1, is: ErrInternal},
		{name: "deadline not retried", errs: []error{context.DeadlineExceeded, nil}, attempts: 1, is: ErrDeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			_, err := invoke(context.Background(), c, "Test", func(context.Context) (int, error) {
				err := tt.errs[n]
				n++
				return n, err
			})
			if n != tt.attempts {
				t.Errorf("attempts = %d, want %d", n, tt.attempts)
			}
			if tt.is == nil && err != nil || tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
		})
	}
}

func TestInvokeHonoursContext(t *testing.T) {
	c := &Client{retry: retryPolicy{maxAttempts: 100, initial: time.Hour, max: time.Hour}, log: defaultOptions().logger}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := invoke(ctx, c, "Test", func(context.Context) (int, error) { return 0, unavailable() })
	if !errors.Is(err, ErrDeadlineExceeded) || !strings.Contains(err.Error(), "last error: unavailable") {
		t.Errorf("err = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("waited %v", time.Since(start))
	}
}

func unavailable() error { return &Error{Code: CodeUnavailable, Message: "down"} }
