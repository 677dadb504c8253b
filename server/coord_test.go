package server_test

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// responses maps org → answer of an incident as a reader sees it.
func responses(in *phxv1.Incident) map[string]phxv1.ResponseKind {
	out := map[string]phxv1.ResponseKind{}
	for _, r := range in.Responses {
		out[r.Org] = r.Kind
	}
	return out
}

// receipts maps org → "delivered"/"acked"/"" of ListReceipts.
func receipts(t *testing.T, c *clients, id string) map[string]string {
	t.Helper()
	res, err := c.incident.ListReceipts(testCtx(t), &phxv1.ListReceiptsRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range res.Receipts {
		switch {
		case r.AcknowledgedAt != nil:
			out[r.Org] = "acked"
		case r.DeliveredAt != nil:
			out[r.Org] = "delivered"
		default:
			out[r.Org] = ""
		}
	}
	return out
}

func wantMap[K comparable, V comparable](t *testing.T, what string, got, want map[K]V) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
}

// TestCoordinatedResponse: an incident asks every vendor to respond by a
// deadline; answers, posts, revisions and receipts are kept, shown to the
// right orgs only, and survive a restart.
func TestCoordinatedResponse(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)
	contoso, fabrikam, northwind, platform, cert := as(t, h, "contoso"), as(t, h, "fabrikam"), as(t, h, "northwind"), as(t, h, "microsoft"), as(t, h, "national-cert")

	in := incident("Boot loops after channel 291", "contoso-av", phxv1.Severity_SEVERITY_CRITICAL, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER})
	in.AskAllVendors, in.RespondBy = true, ts(time.Now().Add(30*time.Minute))
	inc := report(t, contoso, in)
	id := inc.Id
	wantMap(t, "responses at first", responses(inc), map[string]phxv1.ResponseKind{
		"fabrikam": phxv1.ResponseKind_RESPONSE_KIND_UNSPECIFIED, "northwind": phxv1.ResponseKind_RESPONSE_KIND_UNSPECIFIED})
	// The audience is vendors and the platform: the CERT is not listed.
	wantMap(t, "receipts at first", receipts(t, contoso, id), map[string]string{"fabrikam": "", "northwind": "", "microsoft": ""})

	// fabrikam reads it on its live stream, and answers.
	f := open(t, fabrikam, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_INCIDENT}, Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
	if env := f.next(); env.GetIncident().GetId() != id {
		t.Fatalf("fabrikam got %v", env)
	}
	eventually(t, "fabrikam's delivery receipt", func() error {
		if receipts(t, contoso, id)["fabrikam"] != "delivered" {
			return errNotYet
		}
		return nil
	})
	if _, err := fabrikam.incident.Respond(ctx, &phxv1.RespondRequest{Id: id, Kind: phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED, Statement: "Our driver does not load channel files."}); err != nil {
		t.Fatal(err)
	}
	// The answer reaches subscribers as a new revision.
	if env := f.next(); env.GetIncident().GetRevision() != 2 || responses(env.GetIncident())["fabrikam"] != phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED {
		t.Fatalf("fabrikam's stream got %v", env.GetIncident())
	}
	// northwind answers without having read it, then changes its answer.
	for _, k := range []phxv1.ResponseKind{phxv1.ResponseKind_RESPONSE_KIND_INVESTIGATING, phxv1.ResponseKind_RESPONSE_KIND_AFFECTED} {
		if _, err := northwind.incident.Respond(ctx, &phxv1.RespondRequest{Id: id, Kind: k}); err != nil {
			t.Fatal(err)
		}
	}
	// The platform acknowledges.
	ack, err := platform.incident.Acknowledge(ctx, &phxv1.AcknowledgeRequest{Id: id})
	if err != nil || ack.AcknowledgedAt == nil {
		t.Fatalf("Acknowledge: %v %v", ack, err)
	}
	again, err := platform.incident.Acknowledge(ctx, &phxv1.AcknowledgeRequest{Id: id})
	if err != nil || !again.AcknowledgedAt.AsTime().Equal(ack.AcknowledgedAt.AsTime()) {
		t.Fatalf("a second acknowledgement changed the first: %v %v", again, err)
	}

	// Refusals.
	_, err = contoso.incident.Respond(ctx, &phxv1.RespondRequest{Id: id, Kind: phxv1.ResponseKind_RESPONSE_KIND_AFFECTED})
	wantStatus(t, err, codes.FailedPrecondition, "id") // the reporter was not asked
	_, err = fabrikam.incident.Respond(ctx, &phxv1.RespondRequest{Id: id, Kind: phxv1.ResponseKind_RESPONSE_KIND_NO_RESPONSE})
	wantStatus(t, err, codes.InvalidArgument, "kind")
	_, err = cert.incident.Respond(ctx, &phxv1.RespondRequest{Id: id, Kind: phxv1.ResponseKind_RESPONSE_KIND_AFFECTED})
	wantStatus(t, err, codes.PermissionDenied, "")
	_, err = fabrikam.incident.ListReceipts(ctx, &phxv1.ListReceiptsRequest{Id: id})
	wantStatus(t, err, codes.PermissionDenied, "id")
	_, err = cert.incident.Acknowledge(ctx, &phxv1.AcknowledgeRequest{Id: id})
	wantStatus(t, err, codes.PermissionDenied, "")

	// Posts: anyone in the audience posts; only the reporter or the
	// platform changes the status with a post.
	if _, err := fabrikam.incident.AddPost(ctx, &phxv1.AddPostRequest{Id: id, Text: "We see no crashes in our fleet."}); err != nil {
		t.Fatal(err)
	}
	_, err = fabrikam.incident.AddPost(ctx, &phxv1.AddPostRequest{Id: id, Text: "resolved?", Status: phxv1.Status_STATUS_RESOLVED})
	wantStatus(t, err, codes.PermissionDenied, "status")
	post, err := contoso.incident.AddPost(ctx, &phxv1.AddPostRequest{Id: id, Text: "Channel 291 reverted; reboot twice. Contact ops@contoso-customer.example", Status: phxv1.Status_STATUS_MITIGATING})
	if err != nil {
		t.Fatal(err)
	}
	cur := post.Incident
	if cur.Status != phxv1.Status_STATUS_MITIGATING || len(cur.Posts) != 2 || cur.Posts[1].Seq != 2 || cur.Posts[1].Author != "contoso" ||
		cur.Posts[1].Text != "Channel 291 reverted; reboot twice. Contact [redacted:email]" || len(post.Redactions) != 1 {
		t.Fatalf("after the posts: status %s, posts %v, redactions %v", cur.Status, cur.Posts, post.Redactions)
	}
	wantMap(t, "responses", responses(cur), map[string]phxv1.ResponseKind{
		"fabrikam": phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED, "northwind": phxv1.ResponseKind_RESPONSE_KIND_AFFECTED})
	// Every change is a numbered revision with who and what.
	var hist []string
	for _, hi := range cur.History {
		hist = append(hist, hi.Author+":"+slices.Concat(hi.Changed)[0])
	}
	wantHist := []string{"contoso:reported", "fabrikam:response", "northwind:response", "northwind:response", "fabrikam:post", "contoso:post"}
	if !slices.Equal(hist, wantHist) || cur.Revision != 6 {
		t.Fatalf("history %v at revision %d, want %v", hist, cur.Revision, wantHist)
	}
	// An old revision, as it was.
	old, err := fabrikam.incident.GetIncident(ctx, &phxv1.GetIncidentRequest{Id: id, Revision: 3})
	if err != nil {
		t.Fatal(err)
	}
	if o := old.Incident; o.Revision != 3 || responses(o)["northwind"] != phxv1.ResponseKind_RESPONSE_KIND_INVESTIGATING || len(o.Posts) != 0 {
		t.Fatalf("revision 3: %v", o)
	}
	_, err = fabrikam.incident.GetIncident(ctx, &phxv1.GetIncidentRequest{Id: id, Revision: 7})
	wantStatus(t, err, codes.NotFound, "")

	want := map[string]string{"fabrikam": "delivered", "northwind": "delivered", "microsoft": "acked"}
	wantMap(t, "receipts", receipts(t, contoso, id), want)
	wantMap(t, "receipts as the platform sees them", receipts(t, platform, id), want)

	// After the deadline, an asked org that never answered shows as
	// no_response.
	late := incident("Hangs after channel 292", "contoso-av", phxv1.Severity_SEVERITY_HIGH, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER})
	late.AskedOrgs, late.RespondBy = []string{"northwind", "microsoft"}, ts(time.Now().Add(-time.Minute))
	lateInc := report(t, contoso, late)
	wantMap(t, "responses after the deadline", responses(lateInc), map[string]phxv1.ResponseKind{
		"northwind": phxv1.ResponseKind_RESPONSE_KIND_NO_RESPONSE, "microsoft": phxv1.ResponseKind_RESPONSE_KIND_NO_RESPONSE})
	// Asking needs a deadline, and only orgs that can see the incident.
	bad := incident("x", "contoso-av", phxv1.Severity_SEVERITY_LOW, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"microsoft"}})
	bad.AskedOrgs = []string{"fabrikam"}
	bad.RespondBy = ts(time.Now().Add(time.Hour))
	_, err = contoso.incident.ReportIncident(ctx, &phxv1.ReportIncidentRequest{Incident: bad})
	wantStatus(t, err, codes.InvalidArgument, "incident.asked_orgs[0]")
	bad.AskedOrgs, bad.RespondBy = []string{"microsoft"}, nil
	_, err = contoso.incident.ReportIncident(ctx, &phxv1.ReportIncidentRequest{Incident: bad})
	wantStatus(t, err, codes.InvalidArgument, "incident.respond_by")

	// A receipt never names an org outside the audience.
	red := report(t, contoso, incident("red", "contoso-av", phxv1.Severity_SEVERITY_LOW, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"microsoft"}}))
	wantMap(t, "receipts of a RED incident", receipts(t, contoso, red.Id), map[string]string{"microsoft": ""})

	// Everything survives a restart.
	h.Restart(t)
	contoso, fabrikam = as(t, h, "contoso"), as(t, h, "fabrikam")
	wantMap(t, "receipts after a restart", receipts(t, contoso, id), want)
	got, err := fabrikam.incident.GetIncident(ctx, &phxv1.GetIncidentRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	wantMap(t, "responses after a restart", responses(got.Incident), map[string]phxv1.ResponseKind{
		"fabrikam": phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED, "northwind": phxv1.ResponseKind_RESPONSE_KIND_AFFECTED})
}
