package token

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIssuedIDs: token ids match the pattern revocation checks, and never
// start with a character a command line would take for a flag.
func TestIssuedIDs(t *testing.T) {
	svc, err := NewService(filepath.Join(t.TempDir(), "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2000 {
		_, c, err := svc.Issue(Spec{Org: "national-cert", Role: RoleCERT, TTL: time.Hour, TrustDomain: "phx.dev"})
		if err != nil {
			t.Fatal(err)
		}
		if !JTIPattern.MatchString(c.ID) || strings.HasPrefix(c.ID, "-") || strings.HasPrefix(c.ID, "_") {
			t.Fatalf("jti %q", c.ID)
		}
	}
	for _, bad := range []string{"-abcdefghijklmnop", "short", "has space in it 0123", strings.Repeat("a", 65)} {
		if JTIPattern.MatchString(bad) {
			t.Errorf("JTIPattern accepts %q", bad)
		}
	}
}
