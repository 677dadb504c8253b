package server_test

import (
	"slices"
	"strings"
	"testing"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestFreeTextScrubbed: identifiers in an incident's and a rollout's free
// text are replaced before anything is stored, and the reply says what was
// redacted where (never the text itself).
func TestFreeTextScrubbed(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)
	contoso, fabrikam := as(t, h, "contoso"), as(t, h, "fabrikam")
	secrets := []string{"jane.doe@contoso-customer.example", "203.0.113.77", "DESKTOP-7K3J9QF", "C:\\Users\\jdoe", "S-1-5-21-3623811015-3361044348-30300820-1013", "ops:hunter2@"}

	in := incident("Crash on DESKTOP-7K3J9QF after channel 291", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green())
	in.Impact = "Reported by jane.doe@contoso-customer.example from 203.0.113.77; dump in C:\\Users\\jdoe\\AppData\\Local\\CrashDumps on 10.0.22631.3880, bugcheck 0x50"
	in.Remediations = []*phxv1.Remediation{{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_WORKAROUND,
		Details: "Delete C-00000291*.sys; the account S-1-5-21-3623811015-3361044348-30300820-1013 needs admin rights",
		Url:     "https://ops:hunter2@kb.contoso.example/291"}}
	res, err := contoso.incident.ReportIncident(ctx, &phxv1.ReportIncidentRequest{Incident: in})
	if err != nil {
		t.Fatal(err)
	}
	type red struct{ field, kind string }
	var got []red
	for _, r := range res.Redactions {
		got = append(got, red{r.Field, r.Kind})
		if r.End <= r.Start {
			t.Errorf("redaction %v has no extent", r)
		}
	}
	want := []red{
		{"incident.impact", "email"}, {"incident.impact", "ipv4"}, {"incident.impact", "user_path"},
		{"incident.remediations[0].details", "sid"}, {"incident.remediations[0].url", "url_credentials"},
		{"incident.title", "hostname"},
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("no redaction %v in %v", w, got)
		}
	}
	// What a peer reads holds none of it, and keeps what is not personal.
	stored, err := fabrikam.incident.GetIncident(ctx, &phxv1.GetIncidentRequest{Id: res.Incident.Id})
	if err != nil {
		t.Fatal(err)
	}
	text := stored.String()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("stored incident still holds %q:\n%s", s, text)
		}
	}
	for _, keep := range []string{"10.0.22631.3880", "0x50", "C-00000291*.sys", "[redacted:email]", "kb.contoso.example/291"} {
		if !strings.Contains(text, keep) {
			t.Errorf("stored incident lost %q:\n%s", keep, text)
		}
	}

	// An update is scrubbed too; what was scrubbed before is not reported again.
	up, err := contoso.incident.UpdateIncident(ctx, &phxv1.UpdateIncidentRequest{Id: res.Incident.Id, ExpectedRevision: 1,
		Incident: &phxv1.Incident{Impact: "Also seen on FINANCE-PC07.corp.contoso.local (MAC 00:1A:2B:3C:4D:5E)"}, UpdateMask: mask("impact")})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range up.Redactions {
		kinds = append(kinds, r.Field+":"+r.Kind)
	}
	if !slices.Contains(kinds, "incident.impact:hostname") || !slices.Contains(kinds, "incident.impact:mac") || slices.Contains(kinds, "incident.title:hostname") {
		t.Errorf("update redactions %v", kinds)
	}

	// A rollout's reason.
	ro := announce(t, contoso, rollout(uniq("r-scrub"), "contoso-av", green()))
	ur, err := contoso.rollouts.UpdateRollout(ctx, &phxv1.UpdateRolloutRequest{RolloutId: ro.RolloutId, ExpectedRevision: 1,
		Rollout:    &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED, Reason: "paused after a call from jane.doe@contoso-customer.example"},
		UpdateMask: mask("state", "reason")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ur.Redactions) != 1 || ur.Redactions[0].Field != "rollout.reason" || ur.Rollout.Reason != "paused after a call from [redacted:email]" {
		t.Fatalf("rollout reason: %q, redactions %v", ur.Rollout.Reason, ur.Redactions)
	}
}
