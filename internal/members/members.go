// Package members reads and writes the hub's member registry: org id → role,
// display name and the products a vendor owns (DESIGN.md section 4).
package members

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"sync/atomic"
)

// Role names as written in the registry file.
const (
	RoleVendor    = "vendor"
	RolePlatform  = "platform"
	RoleCERT      = "cert"
	RoleResponder = "responder"
	RoleOperator  = "operator"
)

// Roles lists every valid role.
var Roles = []string{RoleVendor, RolePlatform, RoleCERT, RoleResponder, RoleOperator}

// IDPattern is the pattern of org ids and product names.
var IDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Member is one org of the registry.
type Member struct {
	Org         string   `json:"org"`
	Role        string   `json:"role"`
	DisplayName string   `json:"display_name"`
	Products    []string `json:"products,omitempty"`
	// Limits, if set, overrides the hub's rate limits for this org.
	Limits *Limits `json:"limits,omitempty"`
}

// Rate is a token bucket: PerSecond tokens a second, at most Burst at once
// (0: the hub's choice, two seconds' worth). A negative PerSecond means no
// limit.
type Rate struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst,omitempty"`
}

// Limits are one org's rate limits; a nil Rate keeps the hub's setting.
type Limits struct {
	// Signals counts health signals published (one token per signal).
	Signals *Rate `json:"signals,omitempty"`
	// Writes counts every other call that changes something or administers
	// the hub.
	Writes *Rate `json:"writes,omitempty"`
	// Reads counts reads and Subscribe calls.
	Reads *Rate `json:"reads,omitempty"`
}

// File is the registry file's content.
type File struct {
	// TrustDomain is the SPIFFE trust domain of member certificates.
	TrustDomain string   `json:"trust_domain"`
	Members     []Member `json:"members"`
}

// Registry is a validated, read-only view of a registry file.
type Registry struct {
	TrustDomain string
	byOrg       map[string]Member
	owner       map[string]string // product → org
}

// Parse validates a registry file's content.
func Parse(data []byte) (*Registry, error) {
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	return New(f)
}

// New validates f and builds a Registry.
func New(f File) (*Registry, error) {
	if f.TrustDomain == "" {
		return nil, fmt.Errorf("members: trust_domain is required")
	}
	r := &Registry{TrustDomain: f.TrustDomain, byOrg: map[string]Member{}, owner: map[string]string{}}
	for i, m := range f.Members {
		if !IDPattern.MatchString(m.Org) {
			return nil, fmt.Errorf("members[%d].org: %q does not match %s", i, m.Org, IDPattern)
		}
		if !slices.Contains(Roles, m.Role) {
			return nil, fmt.Errorf("members[%d].role: %q is not one of %v", i, m.Role, Roles)
		}
		if _, dup := r.byOrg[m.Org]; dup {
			return nil, fmt.Errorf("members[%d].org: %q listed twice", i, m.Org)
		}
		for j, p := range m.Products {
			if !IDPattern.MatchString(p) {
				return nil, fmt.Errorf("members[%d].products[%d]: %q does not match %s", i, j, p, IDPattern)
			}
			if o, dup := r.owner[p]; dup {
				return nil, fmt.Errorf("members[%d].products[%d]: %q is already owned by %q", i, j, p, o)
			}
			r.owner[p] = m.Org
		}
		if l := m.Limits; l != nil {
			for name, r := range map[string]*Rate{"signals": l.Signals, "writes": l.Writes, "reads": l.Reads} {
				if r != nil && (r.PerSecond == 0 || r.Burst < 0) {
					return nil, fmt.Errorf("members[%d].limits.%s: per_second must be positive (negative: no limit) and burst not negative", i, name)
				}
			}
		}
		if m.DisplayName == "" {
			m.DisplayName = m.Org
		}
		r.byOrg[m.Org] = m
	}
	return r, nil
}

// Load reads and validates a registry file.
func Load(path string) (*Registry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Lookup returns the member with the given org id.
func (r *Registry) Lookup(org string) (Member, bool) {
	m, ok := r.byOrg[org]
	return m, ok
}

// Owner returns the org that owns product.
func (r *Registry) Owner(product string) (string, bool) {
	o, ok := r.owner[product]
	return o, ok
}

// Owns reports whether org owns product.
func (r *Registry) Owns(org, product string) bool {
	o, ok := r.owner[product]
	return ok && o == org
}

// Orgs returns every org id, sorted.
func (r *Registry) Orgs() []string {
	out := make([]string, 0, len(r.byOrg))
	for o := range r.byOrg {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// Write writes f as indented JSON.
func Write(path string, f File) error {
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Store holds the current registry and swaps it atomically on reload.
type Store struct {
	path string
	cur  atomic.Pointer[Registry]
	mod  atomic.Int64
}

// NewStore loads the registry file at path.
func NewStore(path string) (*Store, error) {
	s := &Store{path: path}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// StaticStore returns a Store that always holds r.
func StaticStore(r *Registry) *Store {
	s := &Store{}
	s.cur.Store(r)
	return s
}

// Get returns the current registry.
func (s *Store) Get() *Registry { return s.cur.Load() }

// Reload re-reads the file if it changed since the last load. A file that
// fails to parse leaves the current registry in place and returns the error.
func (s *Store) Reload() (changed bool, err error) {
	if s.path == "" {
		return false, nil
	}
	st, err := os.Stat(s.path)
	if err != nil {
		return false, err
	}
	if s.cur.Load() != nil && st.ModTime().UnixNano() == s.mod.Load() {
		return false, nil
	}
	r, err := Load(s.path)
	if err != nil {
		return false, err
	}
	s.cur.Store(r)
	s.mod.Store(st.ModTime().UnixNano())
	return true, nil
}
