package authn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/tlsutil"
)

func TestParseSPIFFEID(t *testing.T) {
	cases := []struct {
		id            string
		org, workload string
		ok            bool
	}{
		{"spiffe://phx.dev/org/contoso/dev", "contoso", "dev", true},
		{"spiffe://phx.dev/org/national-cert/feed-reader-2", "national-cert", "feed-reader-2", true},
		{"spiffe://other.dev/org/contoso/dev", "", "", false},
		{"spiffe://phx.dev.evil/org/contoso/dev", "", "", false},
		{"spiffe://phx.dev/org/contoso", "", "", false},
		{"spiffe://phx.dev/org/contoso/dev/extra", "", "", false},
		{"spiffe://phx.dev/orgs/contoso/dev", "", "", false},
		{"spiffe://phx.dev/org/Contoso/dev", "", "", false},
		{"spiffe://phx.dev/org/contoso/", "", "", false},
		{"spiffe://phx.dev/org//dev", "", "", false},
		{"spiffe://phx.dev/org/-contoso/dev", "", "", false},
		{"spiffe://phx.dev", "", "", false},
		{"https://phx.dev/org/contoso/dev", "", "", false},
		{"SPIFFE://phx.dev/org/contoso/dev", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range cases {
		org, wl, err := ParseSPIFFEID(tc.id, "phx.dev")
		if (err == nil) != tc.ok || org != tc.org || wl != tc.workload {
			t.Errorf("ParseSPIFFEID(%q) = %q, %q, %v", tc.id, org, wl, err)
		}
	}
}

type fixture struct {
	ca   *tlsutil.CA
	auth *Authenticator
	now  time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := tlsutil.NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := members.New(members.File{TrustDomain: "phx.dev", Members: []members.Member{
		{Org: "contoso", Role: members.RoleVendor, Products: []string{"contoso-av"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	f := &fixture{ca: ca, auth: New(roots, members.StaticStore(reg)), now: time.Now()}
	f.auth.now = func() time.Time { return f.now }
	return f
}

func (f *fixture) leaf(t *testing.T, l tlsutil.Leaf) *x509.Certificate {
	t.Helper()
	certPEM, _, err := f.ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func peerCtx(certs ...*x509.Certificate) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: certs}}})
}

func uri(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	good := f.leaf(t, tlsutil.Leaf{URIs: []*url.URL{uri(t, "spiffe://phx.dev/org/contoso/edge")}, Client: true, NotAfter: f.now.Add(time.Hour)})
	id, err := f.auth.Authenticate(peerCtx(good))
	if err != nil {
		t.Fatal(err)
	}
	if id.Org != "contoso" || id.Workload != "edge" || id.Role != members.RoleVendor || id.Method != MethodMTLS ||
		id.SPIFFEID != "spiffe://phx.dev/org/contoso/edge" || !id.Expires.Equal(good.NotAfter) {
		t.Fatalf("identity %+v", id)
	}
	ctx := NewContext(context.Background(), id)
	if got, ok := FromContext(ctx); !ok || got != id {
		t.Fatal("identity not carried by the context")
	}
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("an identity out of nowhere")
	}

	cases := []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"no peer", context.Background(), ErrUnauthenticated},
		{"not TLS", peer.NewContext(context.Background(), &peer.Peer{}), ErrUnauthenticated},
		{"no certificate", peerCtx(), ErrUnauthenticated},
		{"two URI SANs", peerCtx(f.leaf(t, tlsutil.Leaf{URIs: []*url.URL{uri(t, "spiffe://phx.dev/org/contoso/a"), uri(t, "spiffe://phx.dev/org/contoso/b")}, Client: true})), ErrUnauthenticated},
		{"no URI SAN", peerCtx(f.leaf(t, tlsutil.Leaf{DNSNames: []string{"contoso.example"}, Client: true})), ErrUnauthenticated},
		{"server auth only", peerCtx(f.leaf(t, tlsutil.Leaf{URIs: []*url.URL{uri(t, "spiffe://phx.dev/org/contoso/a")}, Server: true})), ErrUnauthenticated},
		{"not a member", peerCtx(f.leaf(t, tlsutil.Leaf{URIs: []*url.URL{uri(t, "spiffe://phx.dev/org/acme/a")}, Client: true})), ErrNotMember},
	}
	for _, tc := range cases {
		if _, err := f.auth.Authenticate(tc.ctx); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestCacheDoesNotOutliveTheCertificate: verified certificates are cached,
// but never past their expiry.
func TestCacheDoesNotOutliveTheCertificate(t *testing.T) {
	f := newFixture(t)
	c := f.leaf(t, tlsutil.Leaf{URIs: []*url.URL{uri(t, "spiffe://phx.dev/org/contoso/dev")}, Client: true, NotAfter: f.now.Add(time.Minute)})
	if _, err := f.auth.Authenticate(peerCtx(c)); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(30 * time.Second)
	if _, err := f.auth.Authenticate(peerCtx(c)); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(time.Minute)
	if _, err := f.auth.Authenticate(peerCtx(c)); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("after expiry: %v", err)
	}
}
