// Package pki lays out the development PKI and member registry that
// `phxd --dev` and `phx pki init|issue` write (DESIGN.md section 9):
//
//	<data-dir>/pki/ca.crt, ca.key        the dev CA
//	<data-dir>/pki/hub.crt, hub.key      the hub's certificate (localhost, 127.0.0.1, ::1)
//	<data-dir>/pki/<org>.crt, <org>.key  one client certificate per dev org
//	<data-dir>/members.json              the dev member registry
//
// Existing files are kept, so a restart keeps the same certificates.
package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/tlsutil"
)

// DevTrustDomain is the SPIFFE trust domain of the dev PKI.
const DevTrustDomain = "phx.dev"

// DevWorkload is the workload part of dev client certificates.
const DevWorkload = "dev"

// Validity of dev certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	LeafValidity = 2 * 365 * 24 * time.Hour
)

// DevMembers is the dev member registry of DESIGN.md section 9.
var DevMembers = []members.Member{
	{Org: "contoso", Role: members.RoleVendor, DisplayName: "Contoso", Products: []string{"contoso-av"}},
	{Org: "fabrikam", Role: members.RoleVendor, DisplayName: "Fabrikam", Products: []string{"fabrikam-edr"}},
	{Org: "northwind", Role: members.RoleVendor, DisplayName: "Northwind", Products: []string{"northwind-sensor"}},
	{Org: "microsoft", Role: members.RolePlatform, DisplayName: "Microsoft", Products: []string{"defender", "windows"}},
	{Org: "national-cert", Role: members.RoleCERT, DisplayName: "National CERT"},
	{Org: "operator", Role: members.RoleOperator, DisplayName: "Hub operator"},
}

// Layout names the files of a data dir's PKI.
type Layout struct {
	DataDir string
}

// Dir is <data-dir>/pki.
func (l Layout) Dir() string { return filepath.Join(l.DataDir, "pki") }

// CACert is the CA certificate file.
func (l Layout) CACert() string { return filepath.Join(l.Dir(), "ca.crt") }

// CAKey is the CA key file.
func (l Layout) CAKey() string { return filepath.Join(l.Dir(), "ca.key") }

// HubCert is the hub's certificate file.
func (l Layout) HubCert() string { return filepath.Join(l.Dir(), "hub.crt") }

// HubKey is the hub's key file.
func (l Layout) HubKey() string { return filepath.Join(l.Dir(), "hub.key") }

// OrgCert is an org's client certificate file.
func (l Layout) OrgCert(org string) string { return filepath.Join(l.Dir(), org+".crt") }

// OrgKey is an org's client key file.
func (l Layout) OrgKey(org string) string { return filepath.Join(l.Dir(), org+".key") }

// Members is the member registry file.
func (l Layout) Members() string { return filepath.Join(l.DataDir, "members.json") }

// SPIFFEID returns the SPIFFE id of an org's workload in a trust domain.
func SPIFFEID(trustDomain, org, workload string) string {
	return fmt.Sprintf("spiffe://%s/org/%s/%s", trustDomain, org, workload)
}

// InitCA creates the CA under the data dir unless it exists, and returns it.
func InitCA(l Layout) (*tlsutil.CA, error) {
	if exists(l.CACert()) && exists(l.CAKey()) {
		return tlsutil.LoadCA(l.CACert(), l.CAKey())
	}
	ca, err := tlsutil.NewCA("phx dev CA", CAValidity)
	if err != nil {
		return nil, err
	}
	keyPEM, err := marshalKey(ca)
	if err != nil {
		return nil, err
	}
	if err := tlsutil.WritePair(l.CACert(), l.CAKey(), ca.CertPEM, keyPEM); err != nil {
		return nil, err
	}
	return ca, nil
}

// InitDev writes whatever is missing of the dev PKI and member registry.
// It returns the names of the files it created.
func InitDev(dataDir string) (created []string, err error) {
	l := Layout{DataDir: dataDir}
	if err := os.MkdirAll(l.Dir(), 0o755); err != nil {
		return nil, err
	}
	hadCA := exists(l.CACert())
	ca, err := InitCA(l)
	if err != nil {
		return nil, err
	}
	if !hadCA {
		created = append(created, l.CACert(), l.CAKey())
	}
	if !exists(l.HubCert()) || !exists(l.HubKey()) {
		c, k, err := ca.IssueServer([]string{"localhost", "127.0.0.1", "::1"}, LeafValidity)
		if err != nil {
			return nil, err
		}
		if err := tlsutil.WritePair(l.HubCert(), l.HubKey(), c, k); err != nil {
			return nil, err
		}
		created = append(created, l.HubCert())
	}
	for _, m := range DevMembers {
		if exists(l.OrgCert(m.Org)) && exists(l.OrgKey(m.Org)) {
			continue
		}
		if err := IssueOrg(ca, DevTrustDomain, m.Org, DevWorkload, l.OrgCert(m.Org), l.OrgKey(m.Org)); err != nil {
			return nil, err
		}
		created = append(created, l.OrgCert(m.Org))
	}
	if !exists(l.Members()) {
		if err := members.Write(l.Members(), members.File{TrustDomain: DevTrustDomain, Members: DevMembers}); err != nil {
			return nil, err
		}
		created = append(created, l.Members())
	}
	return created, nil
}

// IssueOrg signs a client certificate for org/workload and writes it.
func IssueOrg(ca *tlsutil.CA, trustDomain, org, workload, certFile, keyFile string) error {
	if !members.IDPattern.MatchString(org) {
		return fmt.Errorf("org %q does not match %s", org, members.IDPattern)
	}
	if !members.IDPattern.MatchString(workload) {
		return fmt.Errorf("workload %q does not match %s", workload, members.IDPattern)
	}
	c, k, err := ca.IssueClient(SPIFFEID(trustDomain, org, workload), LeafValidity)
	if err != nil {
		return err
	}
	return tlsutil.WritePair(certFile, keyFile, c, k)
}

func exists(name string) bool {
	_, err := os.Stat(name)
	return !errors.Is(err, fs.ErrNotExist)
}
