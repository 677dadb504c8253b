package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// TestTokenCommands: the operator issues a CERT token, the CERT reads with
// PHX_TOKEN and no certificate, the operator revokes it.
func TestTokenCommands(t *testing.T) {
	out, errOut, err := phx(t, args(as(hub, "operator"), "token", "issue", "--org", "national-cert", "--role", "cert", "--ttl", "2h")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	tok := strings.TrimSpace(out)
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("stdout is not just the token: %q", out)
	}
	for _, w := range []string{"token:", "national-cert as cert (read)", "expires:", "bound:", "no"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}

	// A CERT with only the token: the dev CA comes from the data dir.
	t.Setenv("PHX_TOKEN", tok)
	out, _, err = phx(t, "--hub", hub.Addr, "--data-dir", hub.DataDir, "--json", "whoami")
	if err != nil {
		t.Fatal(err)
	}
	var who phxv1.WhoAmIResponse
	if err := protojson.Unmarshal([]byte(out), &who); err != nil {
		t.Fatal(err)
	}
	if who.Org != "national-cert" || who.AuthMethod != phxv1.AuthMethod_AUTH_METHOD_TOKEN {
		t.Fatalf("whoami with the token: %v", &who)
	}
	// Read only.
	_, _, err = phx(t, "--hub", hub.Addr, "--data-dir", hub.DataDir, "rollout", "announce", "--id", "x-"+unique(), "--product", "contoso-av",
		"--channel", "channel-291", "--version", "291.1", "--ring", "canary", "--tlp", "green")
	if err == nil || ExitCode(err) == 0 || !strings.Contains(err.Error(), "PermissionDenied") && !strings.Contains(err.Error(), "permission") {
		t.Fatalf("a CERT token announced a rollout: %v", err)
	}
	t.Setenv("PHX_TOKEN", "")

	// Revoke, as JSON.
	out, _, err = phx(t, args(as(hub, "operator"), "--json", "token", "issue", "--org", "contoso", "--role", "responder")...)
	if err != nil {
		t.Fatal(err)
	}
	var issued phxv1.IssueTokenResponse
	if err := protojson.Unmarshal([]byte(out), &issued); err != nil || len(issued.Scope) != 2 {
		t.Fatalf("%v: %s", err, out)
	}
	out, _, err = phx(t, args(as(hub, "operator"), "token", "revoke", issued.Jti)...)
	if err != nil || !strings.Contains(out, "revoked token "+issued.Jti+" of contoso") {
		t.Fatalf("%v\n%s", err, out)
	}
	_, _, err = phx(t, "--hub", hub.Addr, "--data-dir", hub.DataDir, "--token", issued.Token, "whoami")
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("whoami with a revoked token: %v", err)
	}

	// Refusals: a vendor cannot issue; bad flags are usage errors.
	if _, _, err := phx(t, args(as(hub, "contoso"), "token", "issue", "--org", "contoso", "--role", "cert")...); err == nil {
		t.Fatal("a vendor issued a token")
	}
	for _, bad := range [][]string{
		{"token", "issue", "--role", "cert"},
		{"token", "issue", "--org", "national-cert", "--role", "superuser"},
		{"token", "issue", "--org", "national-cert", "--role", "cert", "--bind-cert", filepath.Join(t.TempDir(), "none.crt")},
		{"token", "revoke"},
	} {
		_, _, err := phx(t, args(as(hub, "operator"), bad...)...)
		if _, ok := err.(*UsageError); !ok {
			t.Errorf("%v: err = %v, want a usage error", bad, err)
		}
	}
}

func TestPKITokenKey(t *testing.T) {
	dir := t.TempDir()
	out, _, err := phx(t, "--json", "pki", "token-key", "--dir", dir, "--activate")
	if err != nil || !strings.Contains(out, `"active": true`) {
		t.Fatalf("%v\n%s", err, out)
	}
	out, _, err = phx(t, "pki", "token-key", "--dir", dir)
	if err != nil || !strings.Contains(out, "verifies only") {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestRedactionsShown: the CLI tells which identifiers the hub removed.
func TestRedactionsShown(t *testing.T) {
	out, errOut, err := phx(t, args(as(hub, "contoso"), "incident", "report", "--title", "Boot loop on DESKTOP-7K3J9QF",
		"--product", "contoso-av", "--severity", "high", "--impact", "reported by jane.doe@customer.example",
		"--tlp", "amber")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, w := range []string{"removed 2 identifier(s)", "incident.impact", "email", "incident.title", "hostname"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	if strings.Contains(out, "jane.doe") || !strings.Contains(out, "[redacted:hostname]") {
		t.Errorf("stdout:\n%s", out)
	}
}
