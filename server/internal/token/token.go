// Package token issues and verifies the hub's bearer tokens (DESIGN.md
// section 4): short-lived EdDSA JWTs for read-only (cert) and responder
// access over server-authenticated TLS, optionally bound to a client
// certificate, revocable by jti.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/phx-exchange/phx/internal/tokenkeys"
)

// Roles a token may grant.
const (
	RoleCERT      = "cert"
	RoleResponder = "responder"
)

// Scopes a token may carry: read (WhoAmI, Get*, List*, Subscribe) and
// respond (AddPost, Respond, Acknowledge for the token's org).
const (
	ScopeRead    = "read"
	ScopeRespond = "respond"
)

// RoleScopes lists, per role a token may grant, the scopes it may carry
// (all of them by default).
var RoleScopes = map[string][]string{
	RoleCERT:      {ScopeRead},
	RoleResponder: {ScopeRead, ScopeRespond},
}

// Leeway is the clock skew allowed on exp, nbf and iat.
const Leeway = 30 * time.Second

// JTIPattern is the shape of the token ids the hub issues (never starting
// with "-", so a command line cannot take one for a flag).
var JTIPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{15,63}$`)

// ErrInvalid: the token is malformed, badly signed, expired, not yet valid,
// for another issuer or audience, or of a kind the hub does not issue.
var ErrInvalid = errors.New("invalid token")

// Claims are a phx token's claims.
type Claims struct {
	jwt.RegisteredClaims
	// Role granted: cert or responder.
	Role string `json:"role"`
	// Scope is a space-separated list of scopes.
	Scope string `json:"scope"`
	// Cnf binds the token to a client certificate (RFC 8705).
	Cnf *Confirmation `json:"cnf,omitempty"`
}

// Scopes returns the token's scopes.
func (c *Claims) Scopes() []string { return strings.Fields(c.Scope) }

// Confirmation is the cnf claim.
type Confirmation struct {
	// X5tS256 is the base64url SHA-256 of the bound certificate's DER.
	X5tS256 string `json:"x5t#S256"`
}

// CertThumbprint is the x5t#S256 of a certificate's DER bytes.
func CertThumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Issuer is the iss of the tokens of a hub in trust domain td.
func Issuer(td string) string { return "spiffe://" + td + "/phxd" }

// Audience is the aud of the tokens of a hub in trust domain td.
func Audience(td string) string { return "spiffe://" + td + "/phx.v1" }

// Spec describes a token to issue.
type Spec struct {
	Org  string
	Role string
	// Scopes (default: all the role allows).
	Scopes []string
	TTL    time.Duration
	// BindCertSHA256 is the SHA-256 of a certificate's DER to bind to.
	BindCertSHA256 []byte
	// TrustDomain sets iss and aud.
	TrustDomain string
}

// Service signs and verifies tokens with the keys of a directory.
type Service struct {
	dir string
	now func() time.Time

	mu   sync.RWMutex
	keys *tokenkeys.KeySet
}

// NewService loads the keys of dir, creating a first key if it has none.
func NewService(dir string) (*Service, error) {
	ks, err := tokenkeys.Load(dir, true)
	if err != nil {
		return nil, err
	}
	return &Service{dir: dir, keys: ks, now: time.Now}, nil
}

// Reload rereads the key directory (after a rotation). On error the keys
// in use are kept.
func (s *Service) Reload() (*tokenkeys.KeySet, error) {
	ks, err := tokenkeys.Load(s.dir, false)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.keys = ks
	s.mu.Unlock()
	return ks, nil
}

// Keys returns the keys in use.
func (s *Service) Keys() *tokenkeys.KeySet {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys
}

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Issue signs a token for spec. The caller validates spec's org and role.
func (s *Service) Issue(spec Spec) (string, *Claims, error) {
	scopes := spec.Scopes
	if len(scopes) == 0 {
		scopes = RoleScopes[spec.Role]
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", nil, err
	}
	now := s.now().Truncate(time.Second)
	c := &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer(spec.TrustDomain),
			Subject:   spec.Org,
			Audience:  jwt.ClaimStrings{Audience(spec.TrustDomain)},
			ExpiresAt: jwt.NewNumericDate(now.Add(spec.TTL)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        hex.EncodeToString(jti),
		},
		Role:  spec.Role,
		Scope: strings.Join(scopes, " "),
	}
	if len(spec.BindCertSHA256) > 0 {
		c.Cnf = &Confirmation{X5tS256: base64.RawURLEncoding.EncodeToString(spec.BindCertSHA256)}
	}
	signed, err := s.SignClaims(c)
	if err != nil {
		return "", nil, err
	}
	return signed, c, nil
}

// SignClaims signs arbitrary claims with the active key, unchecked: Issue
// is the way to make tokens; this exists for tools and tests.
func (s *Service) SignClaims(c jwt.Claims) (string, error) {
	ks := s.Keys()
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = ks.Kid
	return t.SignedString(ks.Signer())
}

// Verify parses and checks a token for a hub in trust domain td: the
// algorithm is pinned to EdDSA, the kid must name a key of the set, exp is
// required, iss and aud must be the hub's, and the role and scopes must be
// ones the hub issues. It does not check revocation, membership or
// certificate binding.
func (s *Service) Verify(raw, td string) (*Claims, error) {
	ks := s.Keys()
	c := &Claims{}
	_, err := jwt.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		pub := ks.PublicKey(kid)
		if pub == nil {
			return nil, fmt.Errorf("unknown signing key %q", kid)
		}
		return pub, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(Issuer(td)),
		jwt.WithAudience(Audience(td)),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, describe(err))
	}
	allowed, ok := RoleScopes[c.Role]
	if !ok {
		return nil, fmt.Errorf("%w: role %q is not one tokens grant", ErrInvalid, c.Role)
	}
	for _, sc := range c.Scopes() {
		if !slices.Contains(allowed, sc) {
			return nil, fmt.Errorf("%w: scope %q is not allowed for role %s", ErrInvalid, sc, c.Role)
		}
	}
	if c.Subject == "" || !JTIPattern.MatchString(c.ID) {
		return nil, fmt.Errorf("%w: sub and jti are required", ErrInvalid)
	}
	return c, nil
}

// describe words a jwt error for the caller without echoing the token.
func describe(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if m := err.Error(); strings.Contains(m, "signing method") {
			return m[strings.Index(m, "signing method"):] + " (only EdDSA is accepted)"
		}
		return "signature is invalid"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "cannot be verified: " + innermost(err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "a required claim is missing: " + innermost(err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "issued by someone else (iss)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "meant for someone else (aud)"
	}
	return innermost(err)
}

func innermost(err error) string {
	for {
		u, ok := err.(interface{ Unwrap() []error })
		if !ok {
			break
		}
		errs := u.Unwrap()
		if len(errs) == 0 {
			break
		}
		err = errs[len(errs)-1]
	}
	return err.Error()
}
