package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/phx-exchange/phx/internal/tokenkeys"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/token"
	"github.com/phx-exchange/phx/server/servertest"
)

// bearer sends a raw authorization header value with every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// withToken dials h with server-authenticated TLS only (no client
// certificate) and tok as a bearer token.
func withToken(t *testing.T, h *servertest.Hub, tok string) *clients {
	t.Helper()
	return withTokenTLS(t, h, tok, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: hubRoots(t, h)})
}

// withTokenTLS dials h with a TLS configuration of the caller's (e.g. one
// presenting a client certificate) and tok as a bearer token.
func withTokenTLS(t *testing.T, h *servertest.Hub, tok string, cfg *tls.Config) *clients {
	t.Helper()
	cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithPerRPCCredentials(bearer("Bearer "+tok)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return newClients(cc)
}

// issueToken has the operator issue a token.
func issueToken(t *testing.T, h *servertest.Hub, req *phxv1.IssueTokenRequest) *phxv1.IssueTokenResponse {
	t.Helper()
	resp, err := as(t, h, "operator").token.IssueToken(testCtx(t), req)
	if err != nil {
		t.Fatalf("IssueToken(%v): %v", req, err)
	}
	return resp
}

// hubTokens opens the hub's token keys, to forge tokens with its real key.
func hubTokens(t *testing.T, h *servertest.Hub) *token.Service {
	t.Helper()
	svc, err := token.NewService(filepath.Join(h.DataDir, "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// claims returns valid claims for org and role at the hub of the dev trust
// domain, to be spoiled by each attack.
func claims(org, role string) *token.Claims {
	now := time.Now()
	return &token.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: token.Issuer("phx.dev"), Subject: org, Audience: jwt.ClaimStrings{token.Audience("phx.dev")},
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), NotBefore: jwt.NewNumericDate(now),
			IssuedAt: jwt.NewNumericDate(now), ID: "forged-token-id-0001",
		},
		Role: role, Scope: "read",
	}
}

func certSHA256(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	sum := sha256.Sum256(block.Bytes)
	return sum[:]
}

func TestTokens(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)

	t.Run("a CERT reads with a token and no certificate", func(t *testing.T) {
		ctx := testCtx(t)
		tok := issueToken(t, h, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT, Ttl: durationpb.New(time.Hour)})
		if tok.Jti == "" || tok.Kid == "" || len(tok.Scope) != 1 || tok.Scope[0] != "read" || tok.Bound {
			t.Fatalf("IssueToken answered %v", tok)
		}
		if d := time.Until(tok.ExpiresAt.AsTime()); d < 59*time.Minute || d > time.Hour {
			t.Fatalf("expires in %s, want an hour", d)
		}
		c := withToken(t, h, tok.Token)
		who, err := c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if who.Org != "national-cert" || who.Role != phxv1.Role_ROLE_CERT || who.AuthMethod != phxv1.AuthMethod_AUTH_METHOD_TOKEN ||
			who.TokenId != tok.Jti || who.SpiffeId != "" || !who.CredentialExpiresAt.AsTime().Equal(tok.ExpiresAt.AsTime()) {
			t.Fatalf("WhoAmI = %v", who)
		}
		// open waits for the first heartbeat: the feed starts after the
		// stream's last item, so the rollout must come after it.
		f := open(t, c, &phxv1.SubscribeRequest{})
		r := announce(t, as(t, h, "contoso"), rollout(uniq("r-token"), "contoso-av", green()))
		if env := f.next(); env.GetRollout().GetRolloutId() != r.RolloutId {
			t.Fatalf("the CERT got %v, want rollout %s", env, r.RolloutId)
		}
		_, err = c.health.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{cell("contoso-av")}})
		wantStatus(t, err, codes.PermissionDenied, "")
	})

	t.Run("a responder acts for its org but publishes nothing", func(t *testing.T) {
		ctx := testCtx(t)
		tok := issueToken(t, h, &phxv1.IssueTokenRequest{Org: "contoso", Role: phxv1.Role_ROLE_RESPONDER})
		if len(tok.Scope) != 2 || time.Until(tok.ExpiresAt.AsTime()) > 24*time.Hour {
			t.Fatalf("IssueToken answered %v (want read+respond, 24h by default)", tok)
		}
		c := withToken(t, h, tok.Token)
		who, err := c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
		if err != nil || who.Org != "contoso" || who.Role != phxv1.Role_ROLE_RESPONDER {
			t.Fatalf("WhoAmI = %v, %v", who, err)
		}
		_, err = c.health.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{cell("contoso-av")}})
		wantStatus(t, err, codes.PermissionDenied, "")
		_, err = c.rollouts.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: rollout(uniq("r"), "contoso-av", green())})
		wantStatus(t, err, codes.PermissionDenied, "")
		// It sees what contoso sees: contoso's own RED rollout.
		red := announce(t, as(t, h, "contoso"), rollout(uniq("r-red"), "contoso-av", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"microsoft"}}))
		if _, err := c.rollouts.GetRollout(ctx, &phxv1.GetRolloutRequest{RolloutId: red.RolloutId}); err != nil {
			t.Fatalf("responder for contoso cannot read contoso's rollout: %v", err)
		}
		_, err = withToken(t, h, issueToken(t, h, &phxv1.IssueTokenRequest{Org: "fabrikam", Role: phxv1.Role_ROLE_RESPONDER}).Token).
			rollouts.GetRollout(ctx, &phxv1.GetRolloutRequest{RolloutId: red.RolloutId})
		wantStatus(t, err, codes.NotFound, "")
	})

	t.Run("a read-only token cannot respond", func(t *testing.T) {
		ctx := testCtx(t)
		tok := issueToken(t, h, &phxv1.IssueTokenRequest{Org: "contoso", Role: phxv1.Role_ROLE_RESPONDER, Scope: []string{"read"}})
		_, err := withToken(t, h, tok.Token).incident.Acknowledge(ctx, &phxv1.AcknowledgeRequest{Id: "INC-0000000000"})
		wantStatus(t, err, codes.PermissionDenied, "")
	})

	t.Run("bad issue requests", func(t *testing.T) {
		ctx := testCtx(t)
		op := as(t, h, "operator")
		cases := []struct {
			name  string
			req   *phxv1.IssueTokenRequest
			field string
		}{
			{"no org", &phxv1.IssueTokenRequest{Role: phxv1.Role_ROLE_CERT}, "org"},
			{"unknown org", &phxv1.IssueTokenRequest{Org: "initech", Role: phxv1.Role_ROLE_CERT}, "org"},
			{"vendor role", &phxv1.IssueTokenRequest{Org: "contoso", Role: phxv1.Role_ROLE_VENDOR}, "role"},
			{"operator role", &phxv1.IssueTokenRequest{Org: "operator", Role: phxv1.Role_ROLE_OPERATOR}, "role"},
			{"responder for a CERT", &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_RESPONDER}, "role"},
			{"too long", &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT, Ttl: durationpb.New(365 * 24 * time.Hour)}, "ttl"},
			{"negative", &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT, Ttl: durationpb.New(-time.Hour)}, "ttl"},
			{"scope beyond the role", &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT, Scope: []string{"respond"}}, "scope[0]"},
			{"write scope", &phxv1.IssueTokenRequest{Org: "contoso", Role: phxv1.Role_ROLE_RESPONDER, Scope: []string{"read", "write"}}, "scope[1]"},
			{"bad binding", &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT, BindCertSha256: []byte("short")}, "bind_cert_sha256"},
		}
		for _, tc := range cases {
			_, err := op.token.IssueToken(ctx, tc.req)
			wantStatus(t, err, codes.InvalidArgument, tc.field)
		}
		_, err := op.token.RevokeToken(ctx, &phxv1.RevokeTokenRequest{Jti: "never-issued-token-0001"})
		wantStatus(t, err, codes.NotFound, "jti")
	})
}

// TestTokenAttacks presents every kind of bad token and checks the exact
// status code: none gets in.
func TestTokenAttacks(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)
	svc := hubTokens(t, h)

	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signWith := func(key ed25519.PrivateKey, kid string, c jwt.Claims) string {
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tk.Header["kid"] = kid
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	forge := func(edit func(*token.Claims)) string {
		c := claims("national-cert", "cert")
		edit(c)
		s, err := svc.SignClaims(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	kid := svc.Keys().Kid
	// Algorithm confusion: an HMAC keyed with the hub's public key, which
	// an attacker may know, raw and PEM-encoded.
	hubPub := svc.Keys().PublicKey(kid)
	pubDER, err := x509.MarshalPKIXPublicKey(hubPub)
	if err != nil {
		t.Fatal(err)
	}
	hsWith := func(secret []byte) string {
		tk := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("national-cert", "cert"))
		tk.Header["kid"] = kid
		s, err := tk.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none := func() string {
		tk := jwt.NewWithClaims(jwt.SigningMethodNone, claims("national-cert", "cert"))
		tk.Header["kid"] = kid
		s, err := tk.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()

	// A revoked token, and tokens bound to certificates.
	revoked := issueToken(t, h, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT})
	if _, err := as(t, h, "operator").token.RevokeToken(ctx, &phxv1.RevokeTokenRequest{Jti: revoked.Jti}); err != nil {
		t.Fatal(err)
	}
	boundToContoso := issueToken(t, h, &phxv1.IssueTokenRequest{Org: "contoso", Role: phxv1.Role_ROLE_RESPONDER,
		BindCertSha256: certSHA256(t, h.PKI.OrgCert("contoso"))})
	if !boundToContoso.Bound {
		t.Fatal("token not bound")
	}
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: hubRoots(t, h)}

	cases := []struct {
		name   string
		header string
		tls    *tls.Config
		code   codes.Code
		reason string
	}{
		{"wrong signing key, the hub's kid", "Bearer " + signWith(otherKey, kid, claims("national-cert", "cert")), noCert, codes.Unauthenticated, "signature is invalid"},
		{"wrong signing key, its own kid", "Bearer " + signWith(otherKey, tokenkeys.Thumbprint(otherKey.Public().(ed25519.PublicKey)), claims("national-cert", "cert")), noCert, codes.Unauthenticated, "unknown signing key"},
		{"alg none", "Bearer " + none, noCert, codes.Unauthenticated, "signing method none is invalid"},
		{"HS256 signed with the public key", "Bearer " + hsWith(hubPub), noCert, codes.Unauthenticated, "signing method HS256 is invalid"},
		{"HS256 signed with the public key's PEM", "Bearer " + hsWith(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})), noCert, codes.Unauthenticated, "signing method HS256 is invalid"},
		{"expired", "Bearer " + forge(func(c *token.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }), noCert, codes.Unauthenticated, "expired"},
		{"no expiry", "Bearer " + forge(func(c *token.Claims) { c.ExpiresAt = nil }), noCert, codes.Unauthenticated, "exp claim is required"},
		{"not yet valid", "Bearer " + forge(func(c *token.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(5 * time.Minute)) }), noCert, codes.Unauthenticated, "not valid yet"},
		{"wrong audience", "Bearer " + forge(func(c *token.Claims) { c.Audience = jwt.ClaimStrings{"spiffe://phx.dev/elsewhere"} }), noCert, codes.Unauthenticated, "(aud)"},
		{"wrong issuer", "Bearer " + forge(func(c *token.Claims) { c.Issuer = "spiffe://evil.example/phxd" }), noCert, codes.Unauthenticated, "(iss)"},
		{"a role tokens never grant", "Bearer " + forge(func(c *token.Claims) { c.Role = "operator" }), noCert, codes.Unauthenticated, "role \"operator\""},
		{"a scope beyond the role", "Bearer " + forge(func(c *token.Claims) { c.Scope = "read write" }), noCert, codes.Unauthenticated, "scope \"write\""},
		{"revoked", "Bearer " + revoked.Token, noCert, codes.Unauthenticated, "has been revoked"},
		{"bound, another certificate", "Bearer " + boundToContoso.Token, h.ClientTLS(t, "fabrikam"), codes.Unauthenticated, "bound to another client certificate"},
		{"bound, no certificate", "Bearer " + boundToContoso.Token, noCert, codes.Unauthenticated, "presented none"},
		{"valid, org not in the registry", "Bearer " + forge(func(c *token.Claims) { c.Subject = "initech" }), noCert, codes.PermissionDenied, "not a member"},
		{"not a bearer header", "Basic bmF0aW9uYWwtY2VydDpodW50ZXIy", noCert, codes.Unauthenticated, "not \"Bearer <token>\""},
		{"garbage", "Bearer not.a.token", noCert, codes.Unauthenticated, "malformed"},
		// The controls: the same paths with good tokens get in.
		{"control: forged with nothing spoiled", "Bearer " + forge(func(*token.Claims) {}), noCert, codes.OK, ""},
		{"control: bound, the right certificate", "Bearer " + boundToContoso.Token, h.ClientTLS(t, "contoso"), codes.OK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc.tls)), grpc.WithPerRPCCredentials(bearer(tc.header)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			c := newClients(cc)
			_, err = c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
			wantStatus(t, err, tc.code, "")
			if st := status.Convert(err); !strings.Contains(st.Message(), tc.reason) {
				t.Errorf("refused with %q, want the reason %q", st.Message(), tc.reason)
			}
			// Streams are guarded the same way.
			st, err := c.feed.Subscribe(ctx, &phxv1.SubscribeRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			wantStatus(t, err, tc.code, "")
		})
	}
}

// TestTokenRevocationEndsStreams: revoking a token ends the live streams
// opened with it, and expiry ends them too.
func TestTokenRevocationEndsStreams(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)

	tok := issueToken(t, h, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT})
	c := withToken(t, h, tok.Token)
	f := open(t, c, &phxv1.SubscribeRequest{})
	other := open(t, withToken(t, h, issueToken(t, h, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT}).Token), &phxv1.SubscribeRequest{})
	resp, err := as(t, h, "operator").token.RevokeToken(ctx, &phxv1.RevokeTokenRequest{Jti: tok.Jti})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Org != "national-cert" || resp.RevokedAt == nil || !resp.ExpiresAt.AsTime().Equal(tok.ExpiresAt.AsTime()) {
		t.Fatalf("RevokeToken answered %v", resp)
	}
	err = f.recvErr()
	wantStatus(t, err, codes.Unauthenticated, "")
	if !strings.Contains(status.Convert(err).Message(), "revoked") {
		t.Fatalf("stream ended with %v, want the revocation named", err)
	}
	_, err = c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "")
	// Revoking again is not an error; another token's stream goes on.
	if _, err := as(t, h, "operator").token.RevokeToken(ctx, &phxv1.RevokeTokenRequest{Jti: tok.Jti}); err != nil {
		t.Fatalf("second revocation: %v", err)
	}
	r := announce(t, as(t, h, "contoso"), rollout(uniq("r-after-revoke"), "contoso-av", green()))
	if env := other.next(); env.GetRollout().GetRolloutId() != r.RolloutId {
		t.Fatalf("the other token's stream got %v", env)
	}

	// Revocations survive a restart.
	h.Restart(t)
	_, err = withToken(t, h, tok.Token).identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "")

	// A stream ends when its token expires.
	short, err := hubTokens(t, h).SignClaims(func() *token.Claims {
		c := claims("national-cert", "cert")
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(2 * time.Second))
		return c
	}())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = open(t, withToken(t, h, short), &phxv1.SubscribeRequest{}).recvErr()
	wantStatus(t, err, codes.Unauthenticated, "")
	if !strings.Contains(status.Convert(err).Message(), "expired") {
		t.Fatalf("stream ended with %v, want expiry named", err)
	}
	t.Logf("stream of a token valid for 2s ended after %s", time.Since(start).Round(time.Millisecond))
}

// TestTokenKeyRotation: a new key can be made active while the old one
// still verifies; removing the old key ends its tokens.
func TestTokenKeyRotation(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)
	dir := filepath.Join(h.DataDir, "tokens")
	old := issueToken(t, h, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT})
	kid, err := tokenkeys.GenerateKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	var fresh *phxv1.IssueTokenResponse
	eventually(t, "the hub signs with the new key", func() error {
		fresh = issueToken(t, h, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT})
		if fresh.Kid != kid {
			return errNotYet
		}
		return nil
	})
	for name, tok := range map[string]string{"old": old.Token, "new": fresh.Token} {
		if _, err := withToken(t, h, tok).identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{}); err != nil {
			t.Fatalf("%s key's token after rotation: %v", name, err)
		}
	}
	if err := os.Remove(filepath.Join(dir, old.Kid+".key")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the old key's tokens are refused", func() error {
		_, err := withToken(t, h, old.Token).identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
		if !isCode(err, codes.Unauthenticated) {
			return errNotYet
		}
		return nil
	})
	if _, err := withToken(t, h, fresh.Token).identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("new key's token: %v", err)
	}
}

// TestTokenRevocationAcrossReplicas: two hubs on one NATS JetStream
// cluster; a token revoked through one is refused by the other, and the
// other ends the live stream held with it.
func TestTokenRevocationAcrossReplicas(t *testing.T) {
	url := extStartNATS(t, 3)
	a := servertest.Start(t, servertest.WithNATSURL(url, 3))
	b := servertest.Start(t, servertest.WithNATSURL(url, 3), servertest.WithDataDir(a.DataDir))
	ctx := testCtx(t)

	tok := issueToken(t, a, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT})
	onB := withToken(t, b, tok.Token)
	if _, err := onB.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("a token issued by one replica is refused by the other: %v", err)
	}
	f := open(t, onB, &phxv1.SubscribeRequest{})
	ended := make(chan error, 1)
	go func() {
		_, err := f.stream.Recv()
		for err == nil {
			_, err = f.stream.Recv()
		}
		ended <- err
	}()
	start := time.Now()
	if _, err := as(t, a, "operator").token.RevokeToken(ctx, &phxv1.RevokeTokenRequest{Jti: tok.Jti}); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-ended:
	case <-time.After(waitFor):
		t.Fatal("the other replica did not end the stream of a revoked token")
	}
	took := time.Since(start)
	wantStatus(t, err, codes.Unauthenticated, "")
	_, err = onB.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "")
	t.Logf("revoked through one replica: the other ended the token's stream %s after the call began", took.Round(time.Millisecond))
}
