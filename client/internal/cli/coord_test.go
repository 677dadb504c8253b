package cli

import (
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/phx-exchange/phx/client/internal/csaf/csaftest"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// TestCoordinationCommands: report asking all vendors, answer, post, ack,
// receipts and an old revision, through the CLI against a real hub.
func TestCoordinationCommands(t *testing.T) {
	run := func(org string, a ...string) (string, string) {
		t.Helper()
		out, errOut, err := phx(t, args(as(hub, org), a...)...)
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", org, a, err, errOut)
		}
		return out, errOut
	}
	out, _ := run("contoso", "--json", "incident", "report", "--title", "Boot loops after channel 291 ("+unique()+")",
		"--product", "contoso-av", "--severity", "critical", "--tlp", "amber", "--ask-all-vendors", "--respond-by", "30m",
		"--pause-rollout", "r-291")
	var inc phxv1.Incident
	if err := protojson.Unmarshal([]byte(out), &inc); err != nil {
		t.Fatal(err)
	}
	id := inc.Id
	if inc.GetRolloutAction().GetAction() != phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_PAUSE || !inc.AskAllVendors || inc.RespondBy == nil {
		t.Fatalf("reported %v", &inc)
	}
	run("fabrikam", "incident", "respond", id, "--kind", "not-affected", "--statement", "no channel files here")
	run("northwind", "incident", "respond", id, "--kind", "investigating")
	run("northwind", "incident", "respond", id, "--kind", "affected")
	run("contoso", "incident", "post", id, "--text", "reverted; reboot twice", "--status", "mitigating")
	out, _ = run("microsoft", "incident", "ack", id)
	if !strings.Contains(out, id+" acknowledged at ") {
		t.Fatalf("ack: %s", out)
	}
	out, _ = run("contoso", "incident", "receipts", id)
	for _, w := range []string{"ORG", "DELIVERED", "ACKNOWLEDGED", "fabrikam", "northwind", "microsoft"} {
		if !strings.Contains(out, w) {
			t.Errorf("receipts lack %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "national-cert") {
		t.Errorf("receipts name an org outside the audience:\n%s", out)
	}
	out, _ = run("contoso", "incident", "show", id)
	for _, w := range []string{"Timeline:", "reverted; reboot twice", "→ mitigating", "Responses:", "fabrikam", "not-affected", "affected",
		"Revisions:", "reported", "response", "post, status"} {
		if !strings.Contains(out, w) {
			t.Errorf("show lacks %q:\n%s", w, out)
		}
	}
	out, _ = run("contoso", "incident", "show", id, "--revision", "3")
	if !regexp.MustCompile(`revision:\s+3\n`).MatchString(out) {
		t.Errorf("revision 3:\n%s", out)
	}
	if strings.Contains(out, "reverted; reboot twice") {
		t.Errorf("revision 3 shows a later post:\n%s", out)
	}
	// The whole story exports as a valid CSAF 2.1 document, with every
	// revision in its history and the answers as product status.
	out, _ = run("contoso", "incident", "export", id, "--format", "csaf")
	if err := csaftest.Validate([]byte(out)); err != nil {
		t.Fatalf("export is not valid CSAF 2.1: %v\n%s", err, out)
	}
	for _, w := range []string{`"version": "5"`, `"known_not_affected"`, `"known_affected"`, "Response recorded by northwind", "Post added; status changed by contoso"} {
		if !strings.Contains(out, w) {
			t.Errorf("export lacks %s:\n%s", w, out)
		}
	}

	// Refusals name what is wrong.
	for _, bad := range [][]string{
		{"incident", "respond", id, "--kind", "no-response"},
		{"incident", "post", id},
		{"incident", "report", "--title", "t", "--product", "contoso-av", "--severity", "low", "--tlp", "amber", "--ask", "fabrikam"},
	} {
		_, _, err := phx(t, args(as(hub, "contoso"), bad...)...)
		if _, ok := err.(*UsageError); !ok {
			t.Errorf("%v: err = %v, want a usage error", bad, err)
		}
	}
}

func TestIncidentChange(t *testing.T) {
	inc := &phxv1.Incident{Id: "INC-1", Status: phxv1.Status_STATUS_MITIGATING,
		Posts:     []*phxv1.Post{{Seq: 1, Author: "contoso", Text: "reverted"}},
		Responses: []*phxv1.Response{{Org: "northwind", Kind: phxv1.ResponseKind_RESPONSE_KIND_AFFECTED}},
	}
	for _, tc := range []struct {
		changed []string
		author  string
		want    string
	}{
		{[]string{"post", "status"}, "contoso", `post #1 by contoso: "reverted"; status → mitigating by contoso`},
		{[]string{"response"}, "northwind", "response by northwind: affected"},
		{[]string{"severity"}, "microsoft", "severity changed by microsoft"},
	} {
		inc.History = []*phxv1.RevisionInfo{{Revision: 2, Author: tc.author, Changed: tc.changed}}
		if got := incidentChange(inc); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.changed, got, tc.want)
		}
	}
}
