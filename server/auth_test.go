package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/pki"
	"github.com/phx-exchange/phx/internal/tlsutil"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// clientTLSWith presents the given certificate unconditionally (a
// GetClientCertificate callback, so the Go client does not drop a
// certificate whose issuer the hub did not list).
func clientTLSWith(t *testing.T, h *servertest.Hub, certPEM, keyPEM []byte) *tls.Config {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    hubRoots(t, h),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &pair, nil
		},
	}
}

// TestTransportIdentity covers who may connect: every credential the hub
// must refuse, with the exact status code, over real mTLS.
func TestTransportIdentity(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	hubCA, err := tlsutil.LoadCA(h.PKI.CACert(), h.PKI.CAKey())
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := tlsutil.NewCA("some other CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	issue := func(ca *tlsutil.CA, l tlsutil.Leaf) *tls.Config {
		t.Helper()
		c, k, err := ca.Issue(l)
		if err != nil {
			t.Fatal(err)
		}
		return clientTLSWith(t, h, c, k)
	}
	contosoID := "spiffe://phx.dev/org/contoso/dev"

	cases := []struct {
		name string
		tls  *tls.Config
		code codes.Code
		msg  string // a part of the status message naming the reason
	}{
		{"no client certificate", &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: hubRoots(t, h)},
			codes.Unauthenticated, "no client certificate"},
		{"certificate from another CA", issue(otherCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, contosoID)}, Client: true}),
			codes.Unauthenticated, "not signed by a CA this hub trusts"},
		{"expired certificate", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, contosoID)}, Client: true,
			NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}),
			codes.Unauthenticated, "expired"},
		{"certificate not valid yet", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, contosoID)}, Client: true,
			NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)}),
			codes.Unauthenticated, "not yet valid"},
		{"server-only certificate", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, contosoID)}, Server: true}),
			codes.Unauthenticated, "client certificate"},
		{"no URI SAN", issue(hubCA, tlsutil.Leaf{CommonName: "contoso", DNSNames: []string{"contoso.example"}, Client: true}),
			codes.Unauthenticated, "exactly one URI SAN"},
		{"two URI SANs", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, contosoID), mustURL(t, "spiffe://phx.dev/org/fabrikam/dev")}, Client: true}),
			codes.Unauthenticated, "exactly one URI SAN"},
		{"other trust domain", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, "spiffe://evil.example/org/contoso/dev")}, Client: true}),
			codes.Unauthenticated, "trust domain"},
		{"not a SPIFFE id", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, "https://phx.dev/org/contoso/dev")}, Client: true}),
			codes.Unauthenticated, "not a SPIFFE id"},
		{"SPIFFE path without org", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, "spiffe://phx.dev/contoso/dev")}, Client: true}),
			codes.Unauthenticated, "not of the form"},
		{"SPIFFE path with extra segment", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, "spiffe://phx.dev/org/contoso/dev/x")}, Client: true}),
			codes.Unauthenticated, "not of the form"},
		{"org id not in the id pattern", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, "spiffe://phx.dev/org/Contoso/dev")}, Client: true}),
			codes.Unauthenticated, "not of the form"},
		// Authentic, but the registry does not list the org: the hub's
		// documented choice is PermissionDenied.
		{"org not in the registry", issue(hubCA, tlsutil.Leaf{URIs: []*url.URL{mustURL(t, "spiffe://phx.dev/org/acme/dev")}, Client: true}),
			codes.PermissionDenied, "not a member"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClients(dialTLS(t, h.Addr, tc.tls))
			ctx := testCtx(t)
			// Unary path.
			_, err := c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
			wantStatus(t, err, tc.code, "")
			if msg := status.Convert(err).Message(); !contains(msg, tc.msg) {
				t.Fatalf("message %q does not say %q", msg, tc.msg)
			}
			// A write is refused the same way.
			_, err = c.health.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{signal(uniq("x"))}})
			wantStatus(t, err, tc.code, "")
			// Stream path.
			st, err := c.feed.Subscribe(ctx, &phxv1.SubscribeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = st.Recv()
			wantStatus(t, err, tc.code, "")
		})
	}

	t.Run("TLS 1.2 only client is not served", func(t *testing.T) {
		pair, err := tls.LoadX509KeyPair(h.PKI.OrgCert("contoso"), h.PKI.OrgKey("contoso"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS12, RootCAs: hubRoots(t, h),
			Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}}
		d := &tls.Dialer{Config: cfg}
		conn, err := d.DialContext(testCtx(t), "tcp", h.Addr)
		if err == nil {
			v := conn.(*tls.Conn).ConnectionState().Version
			conn.Close()
			t.Fatalf("TLS 1.2 handshake succeeded (version %x)", v)
		}
		// Through gRPC the call never reaches the hub.
		c := newClients(dialTLS(t, h.Addr, cfg))
		_, err = c.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
		wantStatus(t, err, codes.Unavailable, "")
	})

	t.Run("TLS 1.3 with h2", func(t *testing.T) {
		cfg := h.ClientTLS(t, "contoso")
		cfg.NextProtos = []string{"h2"}
		d := &tls.Dialer{Config: cfg}
		conn, err := d.DialContext(testCtx(t), "tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cs := conn.(*tls.Conn).ConnectionState()
		if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "h2" {
			t.Fatalf("version %x, ALPN %q", cs.Version, cs.NegotiatedProtocol)
		}
	})

	t.Run("plaintext is not served", func(t *testing.T) {
		cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = phxv1.NewIdentityServiceClient(cc).WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
		wantStatus(t, err, codes.Unavailable, "")
	})

	t.Run("health and reflection without a client certificate", func(t *testing.T) {
		cc := dialTLS(t, h.Addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: hubRoots(t, h)})
		ctx := testCtx(t)
		res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health: %s", res.Status)
		}
		rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := rs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.Name)
		}
		for _, want := range []string{"phx.v1.IdentityService", "phx.v1.HealthService", "phx.v1.RolloutService",
			"phx.v1.IncidentService", "phx.v1.FeedService", "phx.v1.TokenService", "grpc.health.v1.Health"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection does not list %s (%v)", want, names)
			}
		}
		// The same connection is still refused everything else.
		_, err = phxv1.NewRolloutServiceClient(cc).ListRollouts(ctx, &phxv1.ListRolloutsRequest{})
		wantStatus(t, err, codes.Unauthenticated, "")
	})
}

func certFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWhoAmI(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	cases := []struct {
		org      string
		role     phxv1.Role
		display  string
		products []string
	}{
		{"contoso", phxv1.Role_ROLE_VENDOR, "Contoso", []string{"contoso-av"}},
		{"fabrikam", phxv1.Role_ROLE_VENDOR, "Fabrikam", []string{"fabrikam-edr"}},
		{"northwind", phxv1.Role_ROLE_VENDOR, "Northwind", []string{"northwind-sensor"}},
		{"microsoft", phxv1.Role_ROLE_PLATFORM, "Microsoft", []string{"defender", "windows"}},
		{"national-cert", phxv1.Role_ROLE_CERT, "National CERT", nil},
		{"operator", phxv1.Role_ROLE_OPERATOR, "Hub operator", nil},
	}
	for _, tc := range cases {
		t.Run(tc.org, func(t *testing.T) {
			who, err := as(t, h, tc.org).identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
			if err != nil {
				t.Fatal(err)
			}
			cert := certFile(t, h.PKI.OrgCert(tc.org))
			if who.Org != tc.org || who.Role != tc.role || who.Workload != "dev" || who.DisplayName != tc.display ||
				!slices.Equal(who.Products, tc.products) || who.AuthMethod != phxv1.AuthMethod_AUTH_METHOD_MTLS ||
				who.SpiffeId != "spiffe://phx.dev/org/"+tc.org+"/dev" {
				t.Fatalf("whoami: %v", who)
			}
			if !who.CredentialExpiresAt.AsTime().Equal(cert.NotAfter) {
				t.Fatalf("credential_expires_at %s, certificate expires %s", who.CredentialExpiresAt.AsTime(), cert.NotAfter)
			}
			if who.HubVersion == "" {
				t.Fatal("no hub version")
			}
		})
	}
	t.Run("another workload of a member org", func(t *testing.T) {
		ca, err := tlsutil.LoadCA(h.PKI.CACert(), h.PKI.CAKey())
		if err != nil {
			t.Fatal(err)
		}
		notAfter := time.Now().Add(2 * time.Hour).Truncate(time.Second)
		c, k, err := ca.Issue(tlsutil.Leaf{URIs: []*url.URL{mustURL(t, "spiffe://phx.dev/org/fabrikam/edge-collector-2")}, Client: true, NotAfter: notAfter})
		if err != nil {
			t.Fatal(err)
		}
		who, err := newClients(dialTLS(t, h.Addr, clientTLSWith(t, h, c, k))).identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if who.Org != "fabrikam" || who.Workload != "edge-collector-2" || who.SpiffeId != "spiffe://phx.dev/org/fabrikam/edge-collector-2" ||
			!who.CredentialExpiresAt.AsTime().Equal(notAfter) {
			t.Fatalf("whoami: %v", who)
		}
	})
}

// TestAuthorization walks the role × method table through the real
// interceptors: a denied call fails with PermissionDenied before any
// validation; an allowed one gets past authorization (and then fails or
// succeeds on its own merits).
func TestAuthorization(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	orgs := map[string]*clients{}
	for _, o := range []string{"contoso", "microsoft", "national-cert", "operator"} {
		orgs[o] = as(t, h, o)
	}
	type call func(context.Context, *clients) error
	var (
		publish = func(ctx context.Context, c *clients) error {
			_, err := c.health.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{signal(uniq("authz"))}})
			return err
		}
		announce = func(ctx context.Context, c *clients) error {
			_, err := c.rollouts.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: rollout(uniq("authz"), "contoso-av", green())})
			return err
		}
		updateRollout = func(ctx context.Context, c *clients) error {
			_, err := c.rollouts.UpdateRollout(ctx, &phxv1.UpdateRolloutRequest{RolloutId: "nope"})
			return err
		}
		getRollout = func(ctx context.Context, c *clients) error {
			_, err := c.rollouts.GetRollout(ctx, &phxv1.GetRolloutRequest{RolloutId: "no-such-rollout"})
			return err
		}
		listRollouts = func(ctx context.Context, c *clients) error {
			_, err := c.rollouts.ListRollouts(ctx, &phxv1.ListRolloutsRequest{})
			return err
		}
		report = func(ctx context.Context, c *clients) error {
			_, err := c.incident.ReportIncident(ctx, &phxv1.ReportIncidentRequest{Incident: incident("authz", "contoso-av", phxv1.Severity_SEVERITY_LOW, green())})
			return err
		}
		updateIncident = func(ctx context.Context, c *clients) error {
			_, err := c.incident.UpdateIncident(ctx, &phxv1.UpdateIncidentRequest{Id: "nope"})
			return err
		}
		addPost = func(ctx context.Context, c *clients) error {
			_, err := c.incident.AddPost(ctx, &phxv1.AddPostRequest{Id: "INC-0000000000", Text: "hi"})
			return err
		}
		respond = func(ctx context.Context, c *clients) error {
			_, err := c.incident.Respond(ctx, &phxv1.RespondRequest{Id: "INC-0000000000", Kind: phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED})
			return err
		}
		ack = func(ctx context.Context, c *clients) error {
			_, err := c.incident.Acknowledge(ctx, &phxv1.AcknowledgeRequest{Id: "INC-0000000000"})
			return err
		}
		getIncident = func(ctx context.Context, c *clients) error {
			_, err := c.incident.GetIncident(ctx, &phxv1.GetIncidentRequest{Id: "INC-0000000000"})
			return err
		}
		listIncidents = func(ctx context.Context, c *clients) error {
			_, err := c.incident.ListIncidents(ctx, &phxv1.ListIncidentsRequest{})
			return err
		}
		receipts = func(ctx context.Context, c *clients) error {
			_, err := c.incident.ListReceipts(ctx, &phxv1.ListReceiptsRequest{Id: "INC-0000000000"})
			return err
		}
		subscribe = func(ctx context.Context, c *clients) error {
			st, err := c.feed.Subscribe(ctx, &phxv1.SubscribeRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv() // the first heartbeat, or the refusal
			return err
		}
		whoami = func(ctx context.Context, c *clients) error {
			_, err := c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
			return err
		}
		issue = func(ctx context.Context, c *clients) error {
			_, err := c.token.IssueToken(ctx, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT})
			return err
		}
		revoke = func(ctx context.Context, c *clients) error {
			_, err := c.token.RevokeToken(ctx, &phxv1.RevokeTokenRequest{Jti: "x"})
			return err
		}
	)
	const (
		denied = codes.PermissionDenied
		ok     = codes.OK
	)
	cases := []struct {
		org  string
		name string
		call call
		code codes.Code
	}{
		// The CERT reads, never writes.
		{"national-cert", "PublishSignals", publish, denied},
		{"national-cert", "AnnounceRollout", announce, denied},
		{"national-cert", "UpdateRollout", updateRollout, denied},
		{"national-cert", "ReportIncident", report, denied},
		{"national-cert", "UpdateIncident", updateIncident, denied},
		{"national-cert", "AddPost", addPost, denied},
		{"national-cert", "Respond", respond, denied},
		{"national-cert", "Acknowledge", ack, denied},
		{"national-cert", "ListReceipts", receipts, denied},
		{"national-cert", "IssueToken", issue, denied},
		{"national-cert", "WhoAmI", whoami, ok},
		{"national-cert", "Subscribe", subscribe, ok},
		{"national-cert", "ListRollouts", listRollouts, ok},
		{"national-cert", "ListIncidents", listIncidents, ok},
		{"national-cert", "GetRollout", getRollout, codes.NotFound},
		{"national-cert", "GetIncident", getIncident, codes.NotFound},
		// The operator administers the hub; it publishes nothing.
		{"operator", "PublishSignals", publish, denied},
		{"operator", "AnnounceRollout", announce, denied},
		{"operator", "ReportIncident", report, denied},
		{"operator", "UpdateIncident", updateIncident, denied},
		{"operator", "AddPost", addPost, denied},
		{"operator", "IssueToken", issue, ok},
		{"operator", "RevokeToken", revoke, codes.InvalidArgument},
		{"operator", "WhoAmI", whoami, ok},
		{"operator", "Subscribe", subscribe, ok},
		// Only the operator handles tokens.
		{"contoso", "IssueToken", issue, denied},
		{"contoso", "RevokeToken", revoke, denied},
		{"microsoft", "IssueToken", issue, denied},
		{"microsoft", "RevokeToken", revoke, denied},
		// Writers get past authorization.
		{"contoso", "PublishSignals", publish, ok},
		{"contoso", "AnnounceRollout", announce, ok},
		{"contoso", "ReportIncident", report, ok},
		{"contoso", "UpdateRollout", updateRollout, codes.InvalidArgument},
		{"contoso", "UpdateIncident", updateIncident, codes.InvalidArgument},
		{"microsoft", "UpdateIncident", updateIncident, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.org+"/"+tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(testCtx(t), orgs[tc.org]), tc.code, "")
		})
	}
}

// TestRegistryReload: the member registry file is reloaded while the hub
// runs; membership decides between PermissionDenied and access.
func TestRegistryReload(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ca, err := tlsutil.LoadCA(h.PKI.CACert(), h.PKI.CAKey())
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.IssueClient("spiffe://phx.dev/org/acme/collector", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	acme := newClients(dialTLS(t, h.Addr, clientTLSWith(t, h, c, k)))
	whoami := func() (*phxv1.WhoAmIResponse, error) {
		return acme.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
	}
	_, err = whoami()
	wantStatus(t, err, codes.PermissionDenied, "")

	reg := members.File{TrustDomain: pki.DevTrustDomain, Members: append(slices.Clone(pki.DevMembers),
		members.Member{Org: "acme", Role: members.RoleVendor, DisplayName: "Acme", Products: []string{"acme-av"}})}
	if err := members.Write(h.PKI.Members(), reg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "acme becomes a member", func() error {
		_, err := whoami()
		return err
	})
	who, err := whoami()
	if err != nil || who.Org != "acme" || who.Workload != "collector" || who.Role != phxv1.Role_ROLE_VENDOR || !slices.Equal(who.Products, []string{"acme-av"}) {
		t.Fatalf("whoami: %v %v", who, err)
	}
	publish(t, acme, cell("acme-av"))
	// Peers can now name it in audiences.
	s := cell("contoso-av")
	s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"acme"}}
	publish(t, as(t, h, "contoso"), s)

	// Live subscriptions of the member, and of a vendor about to become a
	// CERT.
	live := open(t, acme, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}})
	demoted := open(t, as(t, h, "fabrikam"), &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}})

	// Removed again: refused again.
	reg.Members = reg.Members[:len(reg.Members)-1]
	for i, m := range reg.Members {
		if m.Org == "fabrikam" {
			reg.Members[i].Role, reg.Members[i].Products = members.RoleCERT, nil
		}
	}
	if err := members.Write(h.PKI.Members(), reg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "acme is no longer a member", func() error {
		if _, err := whoami(); !isCode(err, codes.PermissionDenied) {
			return fmt.Errorf("whoami: %v", err)
		}
		return nil
	})
	res, err := acme.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{cell("acme-av")}})
	wantStatus(t, err, codes.PermissionDenied, "")
	if res != nil {
		t.Fatalf("answered %v", res)
	}
	// The subscription opened while it was a member ends at the next item
	// instead of delivering it; the one of the org that became a CERT no
	// longer gets AMBER items.
	amber := cell("contoso-av")
	amber.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}
	marker := cell("contoso-av")
	publish(t, as(t, h, "contoso"), amber, marker)
	wantIDs(t, "after the role change", signalIDs(demoted.until(signalID, marker.SignalId)), []string{marker.SignalId})
	for {
		env, err := live.stream.Recv()
		if err != nil {
			wantStatus(t, err, codes.PermissionDenied, "")
			break
		}
		if env.Kind != phxv1.Kind_KIND_HEARTBEAT {
			t.Fatalf("a removed member received %s %s", env.Kind, env.MessageId)
		}
	}
}
