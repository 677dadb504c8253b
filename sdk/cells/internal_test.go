package cells

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestPseudonym checks that a tenant's pseudonym is the truncated
// HMAC-SHA256 of its id under the tenant key, and that it is cached.
func TestPseudonym(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	b, err := New(WithTenantKey(key))
	if err != nil {
		t.Fatal(err)
	}
	sh := &b.shards[0]
	for _, tenant := range []string{"acme", "Acme", "tenant-with-a-longer-id-0001"} {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(tenant))
		want := binary.BigEndian.Uint64(m.Sum(nil))
		th := maphash.String(b.seed, tenant)
		if got := sh.pseudonym(th, tenant, 1); got != want {
			t.Errorf("pseudonym(%s) = %x, want %x", tenant, got, want)
		}
		if e, ok := sh.tenants[th]; !ok || e.mac != want {
			t.Errorf("pseudonym(%s) not cached", tenant)
		}
	}
	if n := testing.AllocsPerRun(100, func() { sh.pseudonym(maphash.String(b.seed, "acme"), "acme", 1) }); n != 0 {
		t.Errorf("a cached pseudonym allocates %v times", n)
	}
}

// TestCountryTable checks that every ISO 3166-1 alpha-2 code (and XK) is
// in the table once, under a continent the hub accepts.
func TestCountryTable(t *testing.T) {
	re := regexp.MustCompile(`^[A-Z]{2}$`)
	seen := map[string]string{}
	for cont, list := range countriesByContinent {
		if !slices.Contains(Continents, cont) {
			t.Errorf("%s is not a continent", cont)
		}
		for _, cc := range strings.Fields(list) {
			if !re.MatchString(cc) {
				t.Errorf("%q is not a country code", cc)
			}
			if other, ok := seen[cc]; ok {
				t.Errorf("%s is under %s and %s", cc, other, cont)
			}
			seen[cc] = cont
		}
	}
	if len(seen) != 250 {
		t.Errorf("%d codes, want the 249 of ISO 3166-1 and XK", len(seen))
	}
}

// TestObserveAllocs checks that Observe does not allocate once the
// device, its tenant and its cell are known, check-ins and failures alike.
func TestObserveAllocs(t *testing.T) {
	b, err := New()
	if err != nil {
		t.Fatal(err)
	}
	o := Observation{
		Device: "dev-1", Tenant: "t-1", Product: "contoso-av", ProductVersion: "7.16.18",
		Ring: 2, OSFamily: "windows", OSBuild: "10.0.22631.3880", Arch: "x64", Region: "DE",
	}
	f := o
	f.Event, f.BugcheckCode, f.Module = KernelCrash, "0x50", "csagent.sys"
	for _, x := range []Observation{o, f} {
		if err := b.Observe(x); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(1000, func() { _ = b.Observe(x) }); n != 0 {
			t.Errorf("Observe(%s) allocates %v times", x.Event, n)
		}
	}
}
