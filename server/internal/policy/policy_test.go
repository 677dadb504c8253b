package policy

import (
	"errors"
	"fmt"
	"regexp"
	"testing"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

const (
	vendor    = members.RoleVendor
	platform  = members.RolePlatform
	cert      = members.RoleCERT
	responder = members.RoleResponder
	operator  = members.RoleOperator
)

// TestVisibleTLPTable is DESIGN.md section 5, recipient role by recipient
// role, for an item published by another org without named orgs, and with
// the recipient named or not.
func TestVisibleTLPTable(t *testing.T) {
	type row map[string]bool // role → delivered
	table := map[phxv1.Tlp]struct{ unnamed, named row }{
		// Every member, and public feeds.
		phxv1.Tlp_TLP_CLEAR: {
			unnamed: row{vendor: true, platform: true, cert: true, responder: true, operator: true},
			named:   row{vendor: true, platform: true, cert: true, responder: true, operator: true},
		},
		// Every member, CERTs included.
		phxv1.Tlp_TLP_GREEN: {
			unnamed: row{vendor: true, platform: true, cert: true, responder: true, operator: true},
			named:   row{vendor: true, platform: true, cert: true, responder: true, operator: true},
		},
		// Vendors and the platform; CERTs only when named.
		phxv1.Tlp_TLP_AMBER: {
			unnamed: row{vendor: true, platform: true},
			named:   row{vendor: true, platform: true, cert: true},
		},
		phxv1.Tlp_TLP_AMBER_STRICT: {
			unnamed: row{vendor: true, platform: true},
			named:   row{vendor: true, platform: true, cert: true},
		},
		// Only the orgs named.
		phxv1.Tlp_TLP_RED: {
			unnamed: row{},
			named:   row{vendor: true, platform: true, cert: true, responder: true, operator: true},
		},
	}
	for tlp, want := range table {
		for _, role := range members.Roles {
			r := Recipient{Org: "recipient", OrgRole: role}
			// Without orgs (TLP_RED needs orgs: name somebody else).
			aud := &phxv1.Audience{Tlp: tlp}
			if tlp == phxv1.Tlp_TLP_RED {
				aud.Orgs = []string{"someone-else"}
			}
			if got := Visible(r, "publisher", aud); got != want.unnamed[role] {
				t.Errorf("%s, %s not named: Visible = %v, want %v", tlp, role, got, want.unnamed[role])
			}
			// Named among others.
			aud = &phxv1.Audience{Tlp: tlp, Orgs: []string{"someone-else", "recipient"}}
			if got := Visible(r, "publisher", aud); got != want.named[role] {
				t.Errorf("%s, %s named: Visible = %v, want %v", tlp, role, got, want.named[role])
			}
			// A non-empty orgs list that leaves the recipient out narrows
			// every label to nothing.
			aud = &phxv1.Audience{Tlp: tlp, Orgs: []string{"someone-else"}}
			if Visible(r, "publisher", aud) {
				t.Errorf("%s, %s left out of the orgs: visible", tlp, role)
			}
			// The publisher always sees its own items, whatever the audience.
			for _, a := range []*phxv1.Audience{{Tlp: tlp}, {Tlp: tlp, Orgs: []string{"someone-else"}}, nil} {
				if !Visible(r, "recipient", a) {
					t.Errorf("%s, %s: the publisher does not see its own item (%v)", tlp, role, a)
				}
			}
		}
	}
}

func TestVisibleRefusesUnknownLabels(t *testing.T) {
	r := Recipient{Org: "fabrikam", OrgRole: vendor}
	for _, aud := range []*phxv1.Audience{nil, {}, {Tlp: 99}, {Tlp: 99, Orgs: []string{"fabrikam"}}} {
		if Visible(r, "contoso", aud) {
			t.Errorf("%v is visible to a peer", aud)
		}
	}
}

func TestSeesRealPublisher(t *testing.T) {
	for _, tc := range []struct {
		r    Recipient
		want bool
	}{
		{Recipient{Org: "contoso", OrgRole: vendor}, true}, // itself
		{Recipient{Org: "fabrikam", OrgRole: vendor}, false},
		{Recipient{Org: "microsoft", OrgRole: platform}, true},
		{Recipient{Org: "operator", OrgRole: operator}, true},
		{Recipient{Org: "national-cert", OrgRole: cert}, false},
		{Recipient{Org: "responders", OrgRole: responder}, false},
	} {
		if got := SeesRealPublisher(tc.r, "contoso"); got != tc.want {
			t.Errorf("SeesRealPublisher(%v) = %v, want %v", tc.r, got, tc.want)
		}
	}
}

// devRoles is the dev member registry's roles.
func devRoles(org string) string {
	return map[string]string{
		"contoso": vendor, "fabrikam": vendor, "northwind": vendor, "microsoft": platform,
		"national-cert": cert, "operator": operator, "responders": responder,
	}[org]
}

func TestCheckNarrowing(t *testing.T) {
	aud := func(tlp phxv1.Tlp, orgs ...string) *phxv1.Audience { return &phxv1.Audience{Tlp: tlp, Orgs: orgs} }
	anon := func(a *phxv1.Audience) *phxv1.Audience { a.Pseudonymous = true; return a }
	const (
		clear  = phxv1.Tlp_TLP_CLEAR
		green  = phxv1.Tlp_TLP_GREEN
		amber  = phxv1.Tlp_TLP_AMBER
		strict = phxv1.Tlp_TLP_AMBER_STRICT
		red    = phxv1.Tlp_TLP_RED
	)
	cases := []struct {
		prev, next *phxv1.Audience
		ok         bool
	}{
		{aud(clear), aud(clear), true},
		{aud(clear), aud(green), true},
		{aud(green), aud(amber), true},
		{aud(amber), aud(strict), true},
		{aud(strict), aud(red, "fabrikam"), true},
		{aud(clear), aud(red, "fabrikam"), true},
		{aud(green), aud(clear), false},
		{aud(amber), aud(green), false},
		{aud(strict), aud(amber), false},
		{aud(red, "fabrikam"), aud(strict, "fabrikam"), false},
		{aud(red, "fabrikam"), aud(clear, "fabrikam"), false},
		// Named orgs: a subset narrows; dropping them all or adding one widens.
		{aud(amber, "fabrikam", "northwind"), aud(amber, "northwind"), true},
		{aud(amber, "fabrikam", "northwind"), aud(amber, "northwind", "fabrikam"), true},
		{aud(amber), aud(amber, "fabrikam"), true},
		{aud(amber, "fabrikam"), aud(amber), false},
		{aud(amber, "fabrikam"), aud(amber, "fabrikam", "northwind"), false},
		{aud(red, "fabrikam"), aud(red, "northwind"), false},
		// Under AMBER a CERT sees only what names it; under RED anyone
		// named sees it: naming them is not narrowing.
		{aud(amber), aud(amber, "national-cert"), false},
		{aud(strict), aud(strict, "fabrikam", "national-cert"), false},
		{aud(amber), aud(red, "national-cert"), false},
		{aud(amber), aud(red, "operator"), false},
		{aud(amber), aud(red, "responders"), false},
		{aud(amber, "fabrikam", "operator"), aud(red, "operator"), false},
		{aud(amber), aud(red, "fabrikam", "microsoft"), true},
		{aud(green), aud(amber, "national-cert"), true},
		{aud(green), aud(red, "operator"), true},
		{aud(amber, "national-cert"), aud(red, "national-cert"), true},
		// Pseudonymity may be asked for, never dropped.
		{aud(amber), anon(aud(amber)), true},
		{anon(aud(amber)), anon(aud(red, "fabrikam")), true},
		{anon(aud(amber)), aud(amber), false},
		{anon(aud(amber)), aud(red, "fabrikam"), false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v→%v", tc.prev, tc.next), func(t *testing.T) {
			err := CheckNarrowing(tc.prev, tc.next, devRoles)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrWidened) {
				t.Fatalf("CheckNarrowing = %v, want ErrWidened", err)
			}
		})
	}
}

// TestCheckNarrowingNeverWidens checks the rule against Visible itself: for
// every pair CheckNarrowing accepts, nobody who could not see the item before
// can see it after.
func TestCheckNarrowingNeverWidens(t *testing.T) {
	orgSets := [][]string{nil, {"fabrikam"}, {"northwind"}, {"fabrikam", "national-cert"}, {"national-cert"}, {"operator"},
		{"microsoft", "responders"}, {"contoso"}}
	var auds []*phxv1.Audience
	for _, tlp := range []phxv1.Tlp{phxv1.Tlp_TLP_CLEAR, phxv1.Tlp_TLP_GREEN, phxv1.Tlp_TLP_AMBER, phxv1.Tlp_TLP_AMBER_STRICT, phxv1.Tlp_TLP_RED} {
		for _, orgs := range orgSets {
			if tlp == phxv1.Tlp_TLP_RED && len(orgs) == 0 {
				continue
			}
			auds = append(auds, &phxv1.Audience{Tlp: tlp, Orgs: orgs})
		}
	}
	recipients := []Recipient{
		{Org: "fabrikam", OrgRole: vendor}, {Org: "northwind", OrgRole: vendor}, {Org: "microsoft", OrgRole: platform},
		{Org: "national-cert", OrgRole: cert}, {Org: "operator", OrgRole: operator}, {Org: "responders", OrgRole: responder},
	}
	for _, prev := range auds {
		for _, next := range auds {
			if CheckNarrowing(prev, next, devRoles) != nil {
				continue
			}
			for _, r := range recipients {
				if !Visible(r, "contoso", prev) && Visible(r, "contoso", next) {
					t.Errorf("%v → %v is accepted but shows the item to %s", prev, next, r.Org)
				}
			}
		}
	}
}

func TestPseudonym(t *testing.T) {
	p := NewPseudonymizer([]byte("0123456789abcdef0123456789abcdef"))
	format := regexp.MustCompile(`^anon-[a-z2-7]{12}$`)
	seen := map[string]string{}
	for _, org := range []string{"contoso", "fabrikam", "northwind", "microsoft", "a", "contoso-2"} {
		got := p.Pseudonym(org)
		if !format.MatchString(got) {
			t.Fatalf("Pseudonym(%q) = %q", org, got)
		}
		if got != p.Pseudonym(org) {
			t.Fatalf("Pseudonym(%q) is not stable", org)
		}
		if other, dup := seen[got]; dup {
			t.Fatalf("%q and %q share pseudonym %q", org, other, got)
		}
		seen[got] = org
	}
	// Same key, same pseudonyms (every hub replica agrees); another key,
	// other pseudonyms.
	if NewPseudonymizer([]byte("0123456789abcdef0123456789abcdef")).Pseudonym("contoso") != p.Pseudonym("contoso") {
		t.Fatal("the same key gives another pseudonym")
	}
	if NewPseudonymizer([]byte("another key")).Pseudonym("contoso") == p.Pseudonym("contoso") {
		t.Fatal("another key gives the same pseudonym")
	}
}
