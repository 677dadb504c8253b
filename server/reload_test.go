package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/phx-exchange/phx/internal/pki"
	"github.com/phx-exchange/phx/internal/tlsutil"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// servedCert opens a new TLS connection to the hub and returns the
// certificate it presents.
func servedCert(t *testing.T, h *servertest.Hub) *x509.Certificate {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: hubRoots(t, h), ServerName: "localhost", NextProtos: []string{"h2"}}}
	conn, err := d.DialContext(testCtx(t), "tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
}

// TestHubCertificateReload replaces the hub's certificate and key on disk
// under a running hub: new connections get the new certificate, with no
// restart, and connections made before keep working.
func TestHubCertificateReload(t *testing.T) {
	h := servertest.Start(t)
	before := servedCert(t, h)
	contoso := as(t, h, "contoso")
	if _, err := contoso.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{}); err != nil {
		t.Fatal(err)
	}

	ca, err := tlsutil.LoadCA(h.PKI.CACert(), h.PKI.CAKey())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueServer([]string{"localhost", "127.0.0.1", "hub.example"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.WritePair(h.PKI.HubCert(), h.PKI.HubKey(), certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, "new connections get the new certificate", func() error {
		if c := servedCert(t, h); c.SerialNumber.Cmp(before.SerialNumber) == 0 {
			return fmt.Errorf("still serial %x", c.SerialNumber)
		}
		return nil
	})
	t.Logf("new certificate served %s after the files were replaced", time.Since(start).Round(time.Millisecond))
	after := servedCert(t, h)
	if len(after.DNSNames) == 0 || after.DNSNames[len(after.DNSNames)-1] != "hub.example" {
		t.Fatalf("served certificate names %v, want the new one's", after.DNSNames)
	}
	// The connection made before still works; so does a new one.
	if _, err := contoso.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("old connection: %v", err)
	}
	if _, err := as(t, h, "fabrikam").identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("new connection: %v", err)
	}
}

// TestClientCAReload adds a second CA to the hub's client CA bundle under a
// running hub, checks that members with certificates from it are let in
// (also a client that picks its certificate by the CAs the hub names), and
// removes it again: they are refused again, without a restart.
func TestClientCAReload(t *testing.T) {
	h := servertest.Start(t)
	bundle, err := os.ReadFile(h.PKI.CACert())
	if err != nil {
		t.Fatal(err)
	}
	partner, err := tlsutil.NewCA("partner CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "northwind.crt"), filepath.Join(dir, "northwind.key")
	if err := pki.IssueOrg(partner, pki.DevTrustDomain, "northwind", "partner", certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// Certificates, not GetClientCertificate: crypto/tls then sends the
	// certificate only if its issuer is among the CAs the hub names.
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: hubRoots(t, h), Certificates: []tls.Certificate{pair}}
	whoami := func() (*phxv1.WhoAmIResponse, error) {
		c := newClients(dialTLS(t, h.Addr, clientTLS.Clone())) // a new connection each time
		return c.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
	}
	if _, err := whoami(); !isCode(err, codes.Unauthenticated) {
		t.Fatalf("before the CA is trusted: %v", err)
	}

	if err := os.WriteFile(h.PKI.CACert(), append(append([]byte{}, bundle...), partner.CertPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, "the partner CA is trusted", func() error {
		_, err := whoami()
		return err
	})
	t.Logf("trusted %s after the bundle was rewritten", time.Since(start).Round(time.Millisecond))
	who, err := whoami()
	if err != nil || who.Org != "northwind" || who.Workload != "partner" {
		t.Fatalf("whoami: %v %v", who, err)
	}

	// Removed again: refused on a new connection, although the hub has
	// verified this certificate before.
	if err := os.WriteFile(h.PKI.CACert(), bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	// A different size from the bundle with the partner CA, so a change
	// within the file system's time resolution is seen too.
	eventually(t, "the partner CA is no longer trusted", func() error {
		if _, err := whoami(); !isCode(err, codes.Unauthenticated) {
			return fmt.Errorf("whoami: %v", err)
		}
		return nil
	})
	// The dev orgs are unaffected.
	if _, err := as(t, h, "contoso").identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{}); err != nil {
		t.Fatal(err)
	}
}
