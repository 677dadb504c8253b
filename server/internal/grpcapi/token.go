package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/token"
)

// Token lifetimes.
const (
	// DefaultTokenTTL is the lifetime of a token issued without one.
	DefaultTokenTTL = 24 * time.Hour
	// DefaultTokenMaxTTL caps token lifetimes unless the hub sets another.
	DefaultTokenMaxTTL = 30 * 24 * time.Hour
)

type tokenSvc struct {
	phxv1.UnimplementedTokenServiceServer
	a *API
}

// tokenRoles maps the roles a token may grant to their registry names.
var tokenRoles = map[phxv1.Role]string{
	phxv1.Role_ROLE_CERT:      token.RoleCERT,
	phxv1.Role_ROLE_RESPONDER: token.RoleResponder,
}

// validateIssue checks an IssueToken request against the registry and the
// hub's limits and returns the token to sign.
func (a *API) validateIssue(req *phxv1.IssueTokenRequest, reg *members.Registry) (token.Spec, error) {
	spec := token.Spec{Org: req.GetOrg(), TrustDomain: reg.TrustDomain, TTL: DefaultTokenTTL, Scopes: req.GetScope()}
	if err := match("org", reID, spec.Org); err != nil {
		return spec, err
	}
	m, ok := reg.Lookup(spec.Org)
	if !ok {
		return spec, invalid("org", "%q is not a member of this hub", spec.Org)
	}
	role, ok := tokenRoles[req.GetRole()]
	if !ok {
		return spec, invalid("role", "tokens grant ROLE_CERT (read only) or ROLE_RESPONDER, not %s", req.GetRole())
	}
	if role == token.RoleResponder && m.Role == members.RoleCERT {
		return spec, invalid("role", "%q is a CERT: its tokens are read only (ROLE_CERT)", spec.Org)
	}
	if role == token.RoleResponder && m.Role == members.RoleOperator {
		return spec, invalid("role", "%q is the hub operator, not an org responders act for", spec.Org)
	}
	spec.Role = role
	if req.Ttl != nil {
		if err := req.Ttl.CheckValid(); err != nil {
			return spec, invalid("ttl", "%v", err)
		}
		spec.TTL = req.Ttl.AsDuration()
		if spec.TTL < time.Minute {
			return spec, invalid("ttl", "%s is shorter than a minute", spec.TTL)
		}
		if spec.TTL > a.cfg.TokenMaxTTL {
			return spec, invalid("ttl", "%s is longer than this hub allows (%s)", spec.TTL, a.cfg.TokenMaxTTL)
		}
	}
	for i, sc := range spec.Scopes {
		if !slices.Contains(token.RoleScopes[role], sc) {
			return spec, invalid(fmt.Sprintf("scope[%d]", i), "%q is not a scope of role %s (allowed: %v)", sc, role, token.RoleScopes[role])
		}
		if slices.Contains(spec.Scopes[:i], sc) {
			return spec, invalid(fmt.Sprintf("scope[%d]", i), "%q is given twice", sc)
		}
	}
	if b := req.GetBindCertSha256(); len(b) > 0 {
		if len(b) != 32 {
			return spec, invalid("bind_cert_sha256", "is %d bytes; a SHA-256 is 32", len(b))
		}
		spec.BindCertSHA256 = b
	}
	return spec, nil
}

func (s *tokenSvc) IssueToken(ctx context.Context, req *phxv1.IssueTokenRequest) (*phxv1.IssueTokenResponse, error) {
	a := s.a
	if a.cfg.Tokens == nil || a.cfg.Ledger == nil {
		return nil, precondition("", "this hub does not issue tokens")
	}
	id := caller(ctx)
	spec, err := a.validateIssue(req, a.cfg.Registry.Get())
	if err != nil {
		return nil, err
	}
	signed, c, err := a.cfg.Tokens.Issue(spec)
	if err != nil {
		return nil, err
	}
	kid := a.cfg.Tokens.Keys().Kid
	rec := token.Record{
		JTI: c.ID, Org: spec.Org, Role: spec.Role, Scope: c.Scope, Kid: kid,
		IssuedAt: c.IssuedAt.Time, ExpiresAt: c.ExpiresAt.Time, IssuedBy: id.Org + "/" + id.Workload, Bound: c.Cnf != nil,
	}
	// Recorded before it is handed out: a token the ledger does not know
	// could not be revoked.
	if err := a.cfg.Ledger.Record(ctx, rec); err != nil {
		return nil, err
	}
	a.record(ctx, audit.Event{Kind: audit.KindTokenIssue, TokenID: c.ID, Recipient: spec.Org,
		Detail: fmt.Sprintf("role %s, scope %q, expires %s, key %s, bound %t", spec.Role, c.Scope, c.ExpiresAt.Time.UTC().Format(time.RFC3339), kid, c.Cnf != nil)})
	a.log.Info("token issued", "jti", c.ID, "org", spec.Org, "role", spec.Role, "scope", c.Scope,
		"expires", c.ExpiresAt.Time, "bound", c.Cnf != nil, "by", rec.IssuedBy)
	return &phxv1.IssueTokenResponse{
		Token: signed, Jti: c.ID, ExpiresAt: timestamppb.New(c.ExpiresAt.Time),
		Kid: kid, Scope: c.Scopes(), Bound: c.Cnf != nil,
	}, nil
}

func (s *tokenSvc) RevokeToken(ctx context.Context, req *phxv1.RevokeTokenRequest) (*phxv1.RevokeTokenResponse, error) {
	a := s.a
	if a.cfg.Ledger == nil {
		return nil, precondition("", "this hub does not issue tokens")
	}
	id := caller(ctx)
	if err := match("jti", token.JTIPattern, req.GetJti()); err != nil {
		return nil, err
	}
	rec, rev, err := a.cfg.Ledger.Revoke(ctx, req.GetJti(), id.Org+"/"+id.Workload, a.cfg.Now())
	if errors.Is(err, token.ErrUnknown) {
		return nil, &fieldError{code: codes.NotFound, field: "jti", msg: "no token " + req.GetJti() + " was issued by this hub (or it has expired)"}
	}
	if err != nil {
		return nil, err
	}
	a.record(ctx, audit.Event{Kind: audit.KindTokenRevoke, TokenID: rec.JTI, Recipient: rec.Org,
		Detail: "revoked at " + rev.RevokedAt.UTC().Format(time.RFC3339)})
	a.log.Info("token revoked", "jti", rec.JTI, "org", rec.Org, "by", rev.RevokedBy)
	return &phxv1.RevokeTokenResponse{
		Org: rec.Org, RevokedAt: timestamppb.New(rev.RevokedAt), ExpiresAt: timestamppb.New(rec.ExpiresAt),
	}, nil
}
