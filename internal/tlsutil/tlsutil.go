// Package tlsutil creates certificate authorities and certificates for phx,
// and builds TLS configurations (TLS 1.3 only) for the hub and its clients.
package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CA is a certificate authority that can sign certificates.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// NewCA creates a self-signed ECDSA P-256 CA valid for the given duration.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"phx"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), Key: key}, nil
}

// LoadCA reads a CA certificate and its private key from PEM files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("load CA: key cannot sign")
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA: %s is not a CA certificate", certFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: certPEM, Key: signer}, nil
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []*url.URL
	Server     bool // server auth usage
	Client     bool // client auth usage
	NotBefore  time.Time
	NotAfter   time.Time
}

// Issue signs a new ECDSA P-256 certificate and returns certificate and key as PEM.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	var eku []x509.ExtKeyUsage
	if l.Server {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.CommonName},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
		URIs:         l.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
}

// IssueClient signs a client certificate whose single URI SAN is spiffeID.
func (ca *CA) IssueClient(spiffeID string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	u, err := url.Parse(spiffeID)
	if err != nil {
		return nil, nil, fmt.Errorf("spiffe id: %w", err)
	}
	return ca.Issue(Leaf{CommonName: u.Path, URIs: []*url.URL{u}, Client: true, NotAfter: time.Now().Add(validity)})
}

// IssueServer signs a server certificate for the given host names and IPs.
func (ca *CA) IssueServer(hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	l := Leaf{Server: true, Client: true, NotAfter: time.Now().Add(validity)}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			l.IPs = append(l.IPs, ip)
		} else {
			l.DNSNames = append(l.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		l.CommonName = hosts[0]
	}
	return ca.Issue(l)
}

// WritePair writes a certificate (0644) and key (0600) to files, creating directories.
func WritePair(certFile, keyFile string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(filepath.Dir(certFile), 0o755); err != nil {
		return err
	}
	if err := writeAtomic(certFile, certPEM, 0o644); err != nil {
		return err
	}
	return writeAtomic(keyFile, keyPEM, 0o600)
}

func writeAtomic(name string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// CertPool reads a PEM bundle of CA certificates.
func CertPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificates", file)
	}
	return pool, nil
}

// Reloader serves a certificate and key from files and reloads them when the
// files change, so certificates can be rotated without a restart.
type Reloader struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	modCert, modKey   time.Time
	checked           time.Time
}

// NewReloader loads the pair once and returns a Reloader.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	if _, err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload re-reads the pair now if either file changed. A pair that does not
// load (missing, unparsable, or a key that does not match: say, halfway
// through replacing both files) leaves the last good pair in place and
// returns the error.
func (r *Reloader) Reload() (changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked()
}

func (r *Reloader) reloadLocked() (bool, error) {
	r.checked = time.Now()
	sc, err1 := os.Stat(r.certFile)
	sk, err2 := os.Stat(r.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		return false, err
	}
	if r.cert != nil && sc.ModTime().Equal(r.modCert) && sk.ModTime().Equal(r.modKey) {
		return false, nil
	}
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return false, err
	}
	r.cert, r.modCert, r.modKey = &pair, sc.ModTime(), sk.ModTime()
	return true, nil
}

// get returns the current pair, checking the files at most once a second.
func (r *Reloader) get() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= time.Second {
		_, _ = r.reloadLocked() // on error, keep serving the last good pair
	}
	return r.cert, nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.get()
}

// GetClientCertificate implements tls.Config.GetClientCertificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.get()
}

// CAPool serves a bundle of CA certificates from a file and re-reads it
// when the file changes, so a CA can be added to or removed from the bundle
// without a restart.
type CAPool struct {
	file    string
	mu      sync.Mutex
	pool    *x509.CertPool
	mod     time.Time
	size    int64
	checked time.Time
}

// NewCAPool loads the bundle once and returns a CAPool.
func NewCAPool(file string) (*CAPool, error) {
	c := &CAPool{file: file}
	if _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the bundle now if the file changed. A bundle that does not
// load leaves the last good one in place and returns the error.
func (c *CAPool) Reload() (changed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reloadLocked()
}

func (c *CAPool) reloadLocked() (bool, error) {
	c.checked = time.Now()
	st, err := os.Stat(c.file)
	if err != nil {
		return false, err
	}
	if c.pool != nil && st.ModTime().Equal(c.mod) && st.Size() == c.size {
		return false, nil
	}
	pool, err := CertPool(c.file)
	if err != nil {
		return false, err
	}
	c.pool, c.mod, c.size = pool, st.ModTime(), st.Size()
	return true, nil
}

// Pool returns the current bundle, checking the file at most once a second.
// A new bundle is a new *x509.CertPool, so callers can tell by pointer.
func (c *CAPool) Pool() *x509.CertPool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) >= time.Second {
		_, _ = c.reloadLocked() // on error, keep the last good bundle
	}
	return c.pool
}

// ServerConfig returns a TLS 1.3 server configuration serving certFile/keyFile
// (reloaded on change). Client certificates are requested but verified
// against clientCAFile by the hub per call (see ClientCAs), so a missing,
// foreign or expired certificate gets a clear Unauthenticated status instead
// of a failed handshake, and bearer-token callers can connect without one.
func ServerConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	r, err := NewReloader(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cas, err := NewCAPool(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	return ServerConfigFrom(r, cas), nil
}

// ServerConfigFrom is ServerConfig with the certificate and the client CA
// bundle given as reloading sources. Each handshake presents the current
// certificate and names the current CAs in its certificate request (clients
// that hold several certificates pick by them).
func ServerConfigFrom(cert *Reloader, clientCAs *CAPool) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: cert.GetCertificate,
		ClientCAs:      clientCAs.Pool(),
		ClientAuth:     tls.RequestClientCert,
		NextProtos:     []string{"h2"},
	}
	var (
		mu      sync.Mutex
		current = base
	)
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := clientCAs.Pool()
		mu.Lock()
		defer mu.Unlock()
		if current.ClientCAs != pool {
			current = base.Clone()
			current.ClientCAs = pool
		}
		return current, nil
	}
	return cfg
}

// ClientConfig returns a TLS 1.3 client configuration trusting caFile and,
// when certFile is set, presenting that client certificate (reloaded on change).
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if caFile != "" {
		pool, err := CertPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		r, err := NewReloader(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.GetClientCertificate = r.GetClientCertificate
	}
	return cfg, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
