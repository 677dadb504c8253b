package e2e

import (
	"context"
	"encoding/json"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/sdk/guard"
)

// startGuard runs contoso's deployment controller's rollout guard against
// the phxd process.
func startGuard(t *testing.T, dataDir, addr string) *guard.Guard {
	t.Helper()
	pki := filepath.Join(dataDir, "pki")
	c, err := sdk.New(addr, sdk.WithCertFiles(filepath.Join(pki, "ca.crt"), filepath.Join(pki, "contoso.crt"), filepath.Join(pki, "contoso.key")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	g, err := guard.New(context.Background(), c, guard.WithHeartbeat(time.Second), guard.WithMaxSilence(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// wantGuard waits, bounded, until the guard's answer for rollout id has
// the cause want, and returns it.
func wantGuard(t *testing.T, g *guard.Guard, id string, want guard.Cause, step string) guard.Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	d, err := g.Wait(ctx, id, func(d guard.Decision) bool { return d.Cause == want })
	if err != nil {
		t.Fatalf("%s: the guard says %v (%s), want %v: %v", step, d.Allowed, d.Reason, want, err)
	}
	if d.Allowed != (want == guard.CauseActive) {
		t.Fatalf("%s: allowed %v with cause %v", step, d.Allowed, d.Cause)
	}
	return d
}

// scenario reads an incident's responses and receipts through the CLI.
type scenario struct {
	t       *testing.T
	dataDir string
	addr    string
	id      string
}

func (s *scenario) responses() map[string]string {
	s.t.Helper()
	out := mustPhx(s.t, s.dataDir, s.addr, "", "--as", "contoso", "--json", "incident", "show", s.id)
	var inc struct {
		Responses []struct {
			Org  string `json:"org"`
			Kind string `json:"kind"`
		} `json:"responses"`
	}
	if err := json.Unmarshal([]byte(out), &inc); err != nil {
		s.t.Fatalf("incident show: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range inc.Responses {
		k := strings.TrimPrefix(r.Kind, "RESPONSE_KIND_")
		if k == "" {
			k = "PENDING"
		}
		got[r.Org] = k
	}
	return got
}

func (s *scenario) receipts(as string) map[string]string {
	s.t.Helper()
	out := mustPhx(s.t, s.dataDir, s.addr, "", "--as", as, "--json", "incident", "receipts", s.id)
	var res struct {
		Receipts []struct {
			Org            string `json:"org"`
			DeliveredAt    string `json:"deliveredAt"`
			AcknowledgedAt string `json:"acknowledgedAt"`
		} `json:"receipts"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		s.t.Fatalf("incident receipts: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range res.Receipts {
		switch {
		case r.AcknowledgedAt != "" && r.DeliveredAt != "":
			got[r.Org] = "acked"
		case r.AcknowledgedAt != "":
			got[r.Org] = "acked, never delivered"
		case r.DeliveredAt != "":
			got[r.Org] = "delivered"
		default:
			got[r.Org] = "-"
		}
	}
	return got
}

func (s *scenario) want(step string, responses, receipts map[string]string) {
	s.t.Helper()
	if got := s.responses(); !maps.Equal(got, responses) {
		s.t.Fatalf("%s: responses %v, want %v", step, got, responses)
	}
	for _, as := range []string{"contoso", "microsoft"} { // the reporter and the platform
		if got := s.receipts(as); !maps.Equal(got, receipts) {
			s.t.Fatalf("%s: receipts as %s %v, want %v", step, as, got, receipts)
		}
	}
}

// TestCoordinatedIncident is the scenario of a bad content update, with
// phxd and phx as processes: contoso pauses its rollout and reports a
// critical incident asking every vendor to respond within 30 minutes;
// fabrikam answers not_affected, northwind investigating and then
// affected; the platform acknowledges. Responses and receipts are checked
// at each step, and again after phxd restarts.
func TestCoordinatedIncident(t *testing.T) {
	dataDir := t.TempDir()
	addr := freePort(t)
	h := startHub(t, dataDir, addr)
	run := func(as string, args ...string) string {
		t.Helper()
		return mustPhx(t, dataDir, addr, "", append([]string{"--as", as}, args...)...)
	}

	g := startGuard(t, dataDir, addr)
	wantGuard(t, g, "r-291", guard.CauseUnknown, "before the announcement")
	run("contoso", "rollout", "announce", "--id", "r-291", "--product", "contoso-av", "--channel", "channel-291",
		"--version", "291.2", "--previous", "291.1", "--ring", "canary", "--percent", "1", "--tlp", "amber")
	wantGuard(t, g, "r-291", guard.CauseActive, "announced")
	run("contoso", "rollout", "update", "r-291", "--revision", "1", "--state", "paused", "--reason", "boot loops in canary")
	if d := wantGuard(t, g, "r-291", guard.CausePaused, "paused"); !strings.Contains(d.Reason, "boot loops in canary") {
		t.Fatalf("the guard's reason %q does not say why", d.Reason)
	}
	out := run("contoso", "--json", "incident", "report", "--title", "Boot loops after channel 291", "--product", "contoso-av",
		"--content-version", "291.2", "--severity", "critical", "--tlp", "amber", "--pause-rollout", "r-291",
		"--ask-all-vendors", "--respond-by", "30m")
	var rep struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !strings.HasPrefix(rep.ID, "INC-") {
		t.Fatalf("report: %v\n%s", err, out)
	}
	s := &scenario{t: t, dataDir: dataDir, addr: addr, id: rep.ID}
	// Resumed by mistake, the rollout is still held by the incident.
	run("contoso", "rollout", "update", "r-291", "--revision", "2", "--state", "active")
	if d := wantGuard(t, g, "r-291", guard.CauseIncident, "resumed while the incident asks to pause"); !strings.Contains(d.Reason, rep.ID) {
		t.Fatalf("the guard's reason %q does not name the incident", d.Reason)
	}
	none := map[string]string{"fabrikam": "-", "northwind": "-", "microsoft": "-"}
	s.want("reported", map[string]string{"fabrikam": "PENDING", "northwind": "PENDING"}, none)

	// fabrikam reads it and answers.
	run("fabrikam", "incident", "show", rep.ID)
	run("fabrikam", "incident", "respond", rep.ID, "--kind", "not-affected", "--statement", "we load no channel files")
	s.want("fabrikam answered", map[string]string{"fabrikam": "NOT_AFFECTED", "northwind": "PENDING"},
		map[string]string{"fabrikam": "delivered", "northwind": "-", "microsoft": "-"})

	// northwind investigates, then finds it is affected.
	run("northwind", "incident", "respond", rep.ID, "--kind", "investigating")
	s.want("northwind investigating", map[string]string{"fabrikam": "NOT_AFFECTED", "northwind": "INVESTIGATING"},
		map[string]string{"fabrikam": "delivered", "northwind": "delivered", "microsoft": "-"})
	run("northwind", "incident", "respond", rep.ID, "--kind", "affected", "--statement", "our sensor shares the parser")

	// The platform acknowledges.
	run("microsoft", "incident", "ack", rep.ID)
	final := map[string]string{"fabrikam": "NOT_AFFECTED", "northwind": "AFFECTED"}
	finalReceipts := map[string]string{"fabrikam": "delivered", "northwind": "delivered", "microsoft": "acked"}
	s.want("the platform acknowledged", final, finalReceipts)
	wantGuard(t, g, "r-291", guard.CauseIncident, "acknowledged")

	// A CERT is not in an AMBER audience it is not named in: it finds
	// nothing, and the receipts never named it.
	if _, _, err := phx(t, dataDir, addr, "", "--as", "national-cert", "incident", "show", rep.ID); err == nil {
		t.Fatal("the CERT read an AMBER incident it is not named in")
	}

	// Everything is kept across a restart; the guard fails closed while the
	// hub is away and answers as before once it is back.
	h.stop(t)
	wantGuard(t, g, "r-291", guard.CauseSilent, "while phxd is down")
	startHub(t, dataDir, addr)
	s.want("after a restart", final, finalReceipts)
	wantGuard(t, g, "r-291", guard.CauseIncident, "after a restart")
	out = run("contoso", "incident", "show", rep.ID)
	for _, w := range []string{"rollout action:", "pause r-291", "not-affected", "affected", "Revisions:"} {
		if !strings.Contains(out, w) {
			t.Errorf("incident show lacks %q:\n%s", w, out)
		}
	}
	// Resolved, the incident no longer holds the rollout.
	run("contoso", "incident", "post", rep.ID, "--text", "fixed in 291.3", "--status", "resolved")
	wantGuard(t, g, "r-291", guard.CauseActive, "resolved")
}
