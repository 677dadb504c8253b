// Package policy decides who receives an item: the TLP 2.0 + audience table
// of DESIGN.md section 5, applied at every delivery path.
package policy

import (
	"errors"
	"fmt"
	"slices"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Recipient is an org that may receive items.
type Recipient struct {
	Org string
	// OrgRole is the org's role in the member registry (a responder acts
	// for its org and sees what its org sees).
	OrgRole string
}

// Visible reports whether an item published by publisher with audience aud
// may be delivered to r.
func Visible(r Recipient, publisher string, aud *phxv1.Audience) bool {
	if r.Org == publisher {
		return true
	}
	named := slices.Contains(aud.GetOrgs(), r.Org)
	if len(aud.GetOrgs()) > 0 && !named {
		return false
	}
	switch aud.GetTlp() {
	case phxv1.Tlp_TLP_CLEAR, phxv1.Tlp_TLP_GREEN:
		return true
	case phxv1.Tlp_TLP_AMBER, phxv1.Tlp_TLP_AMBER_STRICT:
		switch r.OrgRole {
		case members.RoleVendor, members.RolePlatform:
			return true
		case members.RoleCERT:
			return named
		}
		return false
	case phxv1.Tlp_TLP_RED:
		return named
	}
	return false
}

// SeesRealPublisher reports whether r sees the real org of a pseudonymous
// publisher: the platform, the hub operator and the publisher itself do.
func SeesRealPublisher(r Recipient, publisher string) bool {
	return r.Org == publisher || r.OrgRole == members.RolePlatform || r.OrgRole == members.RoleOperator
}

// GetsNoisedCounts reports whether r receives the counts of a health cell
// with noise: vendors and the platform (and the publisher) get exact counts;
// CERTs, the operator and any other wide reader get noise.
func GetsNoisedCounts(r Recipient, publisher string) bool {
	if r.Org == publisher {
		return false
	}
	switch r.OrgRole {
	case members.RoleVendor, members.RolePlatform:
		return false
	}
	return true
}

var strictness = map[phxv1.Tlp]int{
	phxv1.Tlp_TLP_CLEAR: 0, phxv1.Tlp_TLP_GREEN: 1, phxv1.Tlp_TLP_AMBER: 2, phxv1.Tlp_TLP_AMBER_STRICT: 3, phxv1.Tlp_TLP_RED: 4,
}

// ErrWidened: an update would widen an item's audience.
var ErrWidened = errors.New("audience may only be narrowed")

// CheckNarrowing returns ErrWidened unless next is at least as strict as prev:
// a label no less strict, named orgs a subset of the previous ones (when
// there were any), no org named in next that could not see the item under
// prev (under AMBER, naming a CERT lets it in; under RED, naming anyone
// does), and no un-pseudonymizing. roleOf gives a named org's role in the
// member registry ("" if it has none).
func CheckNarrowing(prev, next *phxv1.Audience, roleOf func(org string) string) error {
	if strictness[next.GetTlp()] < strictness[prev.GetTlp()] {
		return fmt.Errorf("%w: %s is wider than %s", ErrWidened, next.GetTlp(), prev.GetTlp())
	}
	if len(prev.GetOrgs()) > 0 {
		if len(next.GetOrgs()) == 0 {
			return fmt.Errorf("%w: dropping the named orgs %v would widen it", ErrWidened, prev.GetOrgs())
		}
		for _, o := range next.GetOrgs() {
			if !slices.Contains(prev.GetOrgs(), o) {
				return fmt.Errorf("%w: %q was not in the audience", ErrWidened, o)
			}
		}
	}
	// With orgs named, only they may see the item: each must have seen it
	// before. (Without, a stricter label shows it to fewer roles.)
	for _, o := range next.GetOrgs() {
		r := Recipient{Org: o, OrgRole: roleOf(o)}
		if Visible(r, "", next) && !Visible(r, "", prev) {
			return fmt.Errorf("%w: %q could not see it under %s", ErrWidened, o, prev.GetTlp())
		}
	}
	if prev.GetPseudonymous() && !next.GetPseudonymous() {
		return fmt.Errorf("%w: a pseudonymous item cannot reveal its publisher", ErrWidened)
	}
	return nil
}
