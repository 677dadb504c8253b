// Package authn establishes who is calling: the org, role and workload of a
// caller, from its verified client certificate's single SPIFFE URI SAN and the
// member registry (model: SPIRE's caller middleware).
package authn

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/server/internal/token"
)

// Method is how a caller authenticated.
type Method string

// Methods.
const (
	MethodMTLS  Method = "mtls"
	MethodToken Method = "token"
)

// Identity is an authenticated caller.
type Identity struct {
	Org      string
	Role     string // the caller's role: the org's, or a token's
	Workload string
	SPIFFEID string
	Method   Method
	Expires  time.Time
	Member   members.Member
	// TokenID is the jti of the bearer token the caller used, if any.
	TokenID string
	// Scopes of the bearer token (nil for certificates: the role decides).
	Scopes []string
}

// ErrUnauthenticated: no or bad credentials.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrNotMember: valid credentials of an org the registry does not list.
var ErrNotMember = errors.New("not a member")

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the caller of ctx.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok
}

// Authenticator verifies callers' certificates against the client CA, or
// their bearer tokens against the hub's keys and revocations, and maps them
// to members.
type Authenticator struct {
	roots    func() *x509.CertPool
	registry *members.Store
	now      func() time.Time
	tokens   *token.Service
	ledger   *token.Ledger

	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	spiffe string
	until  time.Time
	roots  *x509.CertPool // the bundle it was verified against
}

// New returns an Authenticator trusting roots for client certificates.
func New(roots *x509.CertPool, registry *members.Store) *Authenticator {
	return NewReloading(func() *x509.CertPool { return roots }, registry)
}

// NewReloading returns an Authenticator trusting, for each call, the CA
// bundle roots returns then (say tlsutil.CAPool.Pool, which follows its
// file). A certificate verified against an earlier bundle is verified again.
func NewReloading(roots func() *x509.CertPool, registry *members.Store) *Authenticator {
	return &Authenticator{roots: roots, registry: registry, now: time.Now, cache: map[[32]byte]cached{}}
}

// WithTokens lets callers authenticate with bearer tokens signed by svc and
// not revoked in ledger.
func (a *Authenticator) WithTokens(svc *token.Service, ledger *token.Ledger) *Authenticator {
	a.tokens, a.ledger = svc, ledger
	return a
}

// Authenticate returns the caller of ctx: from its bearer token when the
// call carries "authorization: Bearer ...", else from its TLS client
// certificate.
func (a *Authenticator) Authenticate(ctx context.Context) (*Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("%w: no peer", ErrUnauthenticated)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, fmt.Errorf("%w: not a TLS connection", ErrUnauthenticated)
	}
	certs := ti.State.PeerCertificates
	if auth := metadata.ValueFromIncomingContext(ctx, "authorization"); len(auth) > 0 {
		return a.fromToken(auth, certs)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no client certificate and no bearer token", ErrUnauthenticated)
	}
	leaf := certs[0]
	spiffeID, err := a.verify(leaf, certs[1:])
	if err != nil {
		return nil, err
	}
	reg := a.registry.Get()
	org, workload, err := ParseSPIFFEID(spiffeID, reg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	m, ok := reg.Lookup(org)
	if !ok {
		return nil, fmt.Errorf("%w: org %q is not a member of this hub", ErrNotMember, org)
	}
	return &Identity{Org: org, Role: m.Role, Workload: workload, SPIFFEID: spiffeID, Method: MethodMTLS, Expires: leaf.NotAfter, Member: m}, nil
}

// fromToken authenticates a bearer token. A token bound to a certificate
// (cnf.x5t#S256) is accepted only on a connection that presented that
// certificate (the TLS handshake proved possession of its key).
func (a *Authenticator) fromToken(auth []string, certs []*x509.Certificate) (*Identity, error) {
	if a.tokens == nil {
		return nil, fmt.Errorf("%w: this hub does not accept bearer tokens", ErrUnauthenticated)
	}
	if len(auth) != 1 {
		return nil, fmt.Errorf("%w: more than one authorization header", ErrUnauthenticated)
	}
	raw, ok := strings.CutPrefix(auth[0], "Bearer ")
	if !ok {
		return nil, fmt.Errorf("%w: authorization header is not \"Bearer <token>\"", ErrUnauthenticated)
	}
	reg := a.registry.Get()
	c, err := a.tokens.Verify(strings.TrimSpace(raw), reg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if a.ledger != nil && a.ledger.Revoked(c.ID) {
		return nil, fmt.Errorf("%w: token %s has been revoked", ErrUnauthenticated, c.ID)
	}
	if c.Cnf != nil {
		if len(certs) == 0 {
			return nil, fmt.Errorf("%w: token is bound to a client certificate and this connection presented none", ErrUnauthenticated)
		}
		if token.CertThumbprint(certs[0].Raw) != c.Cnf.X5tS256 {
			return nil, fmt.Errorf("%w: token is bound to another client certificate", ErrUnauthenticated)
		}
	}
	m, ok := reg.Lookup(c.Subject)
	if !ok {
		return nil, fmt.Errorf("%w: token subject %q is not a member of this hub", ErrNotMember, c.Subject)
	}
	role := c.Role
	if m.Role == members.RoleCERT {
		// A token never gives a CERT more than read access.
		role = members.RoleCERT
	}
	return &Identity{
		Org: c.Subject, Role: role, Workload: "token", Method: MethodToken,
		Expires: c.ExpiresAt.Time, Member: m, TokenID: c.ID, Scopes: c.Scopes(),
	}, nil
}

// verify checks the chain against the client CA (with a small cache keyed by
// the certificate's hash) and returns the certificate's single URI SAN.
func (a *Authenticator) verify(leaf *x509.Certificate, intermediates []*x509.Certificate) (string, error) {
	now := a.now()
	roots := a.roots()
	key := sha256.Sum256(leaf.Raw)
	a.mu.Lock()
	c, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(c.until) && c.roots == roots {
		return c.spiffe, nil
	}
	inter := x509.NewCertPool()
	for _, ic := range intermediates {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return "", fmt.Errorf("%w: client certificate expired or not yet valid (valid %s to %s)", ErrUnauthenticated,
				leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return "", fmt.Errorf("%w: client certificate is not signed by a CA this hub trusts", ErrUnauthenticated)
		}
		return "", fmt.Errorf("%w: client certificate: %v", ErrUnauthenticated, err)
	}
	if len(leaf.URIs) != 1 {
		return "", fmt.Errorf("%w: client certificate must have exactly one URI SAN (spiffe://<trust-domain>/org/<org>/<workload>), it has %d", ErrUnauthenticated, len(leaf.URIs))
	}
	id := leaf.URIs[0].String()
	until := leaf.NotAfter
	if limit := now.Add(5 * time.Minute); limit.Before(until) {
		until = limit
	}
	a.mu.Lock()
	if len(a.cache) > 10000 {
		clear(a.cache)
	}
	a.cache[key] = cached{spiffe: id, until: until, roots: roots}
	a.mu.Unlock()
	return id, nil
}

// ParseSPIFFEID splits spiffe://<trustDomain>/org/<org>/<workload>.
func ParseSPIFFEID(id, trustDomain string) (org, workload string, err error) {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", "", fmt.Errorf("URI SAN %q is not a SPIFFE id", id)
	}
	td, path, _ := strings.Cut(rest, "/")
	if td != trustDomain {
		return "", "", fmt.Errorf("SPIFFE id %q is not in trust domain %q", id, trustDomain)
	}
	parts := strings.Split(path, "/")
	if len(parts) != 3 || parts[0] != "org" || !members.IDPattern.MatchString(parts[1]) || !members.IDPattern.MatchString(parts[2]) {
		return "", "", fmt.Errorf("SPIFFE id %q is not of the form spiffe://%s/org/<org>/<workload>", id, trustDomain)
	}
	return parts[1], parts[2], nil
}
