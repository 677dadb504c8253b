package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/phx-exchange/phx/internal/tlsutil"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// auditTail reads the whole audit log as the operator.
func auditTail(ctx context.Context, t *testing.T, h *servertest.Hub) []*phxv1.AuditRecord {
	t.Helper()
	st, err := phxv1.NewAuditServiceClient(dial(t, h, "operator")).TailAudit(ctx, &phxv1.TailAuditRequest{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var out []*phxv1.AuditRecord
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("TailAudit: %v", err)
		}
		out = append(out, r)
	}
}

// auditVerify runs VerifyAudit as the operator and returns its result.
func auditVerify(ctx context.Context, t *testing.T, h *servertest.Hub) *phxv1.AuditVerification {
	t.Helper()
	st, err := phxv1.NewAuditServiceClient(dial(t, h, "operator")).VerifyAudit(ctx, &phxv1.VerifyAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	progress := 0
	for {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("VerifyAudit: %v", err)
		}
		if p := resp.GetProgress(); p != nil {
			progress++
			continue
		}
		res := resp.GetResult()
		if res == nil {
			t.Fatalf("VerifyAudit sent %v", resp)
		}
		if progress == 0 {
			t.Error("VerifyAudit sent no progress")
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("VerifyAudit went on after its result: %v", err)
		}
		return res
	}
}

// auditWait reads the audit log until find reports every record it wants
// has been stored (records are stored shortly after the calls).
func auditWait(ctx context.Context, t *testing.T, h *servertest.Hub, find func([]*phxv1.AuditRecord) error) []*phxv1.AuditRecord {
	t.Helper()
	var recs []*phxv1.AuditRecord
	eventually(t, "audit records", func() error {
		recs = auditTail(ctx, t, h)
		return find(recs)
	})
	return recs
}

// first returns the first record that match accepts, or nil.
func first(recs []*phxv1.AuditRecord, match func(*phxv1.AuditRecord) bool) *phxv1.AuditRecord {
	if i := slices.IndexFunc(recs, match); i >= 0 {
		return recs[i]
	}
	return nil
}

// TestAuditTrail makes allowed and denied calls, a call with a certificate
// from another CA, publishes, updates, reads and a subscription, and finds
// each of them in the audit log, which verifies clean.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)
	contoso, fab, north := as(t, h, "contoso"), as(t, h, "fabrikam"), as(t, h, "northwind")

	if _, err := contoso.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{}); err != nil {
		t.Fatal(err)
	}
	// Denied by the authorization table.
	vst, err := phxv1.NewAuditServiceClient(north.cc).VerifyAudit(ctx, &phxv1.VerifyAuditRequest{})
	if err == nil {
		_, err = vst.Recv()
	}
	wantStatus(t, err, codes.PermissionDenied, "")
	// A certificate from another CA.
	otherCA, err := tlsutil.NewCA("some other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := otherCA.Issue(tlsutil.Leaf{URIs: []*url.URL{mustURL(t, "spiffe://phx.dev/org/contoso/dev")}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = newClients(dialTLS(t, h.Addr, clientTLSWith(t, h, c, k))).identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "")

	// A subscriber that stays for the publishes below.
	feed := open(t, fab, &phxv1.SubscribeRequest{Products: []string{"contoso-av"}, Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL, phxv1.Kind_KIND_ROLLOUT}})

	// Publishes: three cells in one call, a rollout and its update, an
	// incident; one refused publish.
	cellsIn := cells("contoso-av", 3)
	res := publish(t, contoso, cellsIn...)
	ro, err := contoso.rollouts.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: rollout(uniq("aud"), "contoso-av", green())})
	if err != nil {
		t.Fatal(err)
	}
	rid := ro.GetRollout().GetRolloutId()
	if _, err := contoso.rollouts.UpdateRollout(ctx, &phxv1.UpdateRolloutRequest{
		RolloutId: rid, ExpectedRevision: 1, Rollout: &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}},
	}); err != nil {
		t.Fatal(err)
	}
	inc, err := contoso.incident.ReportIncident(ctx, &phxv1.ReportIncidentRequest{Incident: incident("Boot loop", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green())})
	if err != nil {
		t.Fatal(err)
	}
	_, err = contoso.rollouts.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: rollout(uniq("aud"), "fabrikam-edr", green())})
	wantStatus(t, err, codes.PermissionDenied, "rollout.product")

	// fabrikam receives the cells and both rollout revisions, then leaves.
	got := feed.items(5)
	feed.close()
	if _, err := fab.rollouts.GetRollout(ctx, &phxv1.GetRolloutRequest{RolloutId: rid}); err != nil {
		t.Fatal(err)
	}

	rolloutMsg := func(rev string) string { return "rollout/" + rid + "@" + rev }
	// What the feed delivered is recorded a second at a time, and at the
	// end of the stream: all of it, once.
	var feedRecs []*phxv1.AuditRecord
	recs := auditWait(ctx, t, h, func(recs []*phxv1.AuditRecord) error {
		feedRecs = feedRecs[:0]
		n := 0
		for _, r := range recs {
			if r.GetKind() == phxv1.AuditKind_AUDIT_KIND_DELIVERY && r.GetMethod() == phxv1.FeedService_Subscribe_FullMethodName {
				feedRecs = append(feedRecs, r)
				n += int(r.GetCount())
			}
		}
		if n < len(got) {
			return errNotYet
		}
		return nil
	})
	var feedCount uint64
	var feedIDs []string
	for _, r := range feedRecs {
		if r.GetOrg() != "fabrikam" || r.GetRecipient() != "fabrikam" {
			t.Errorf("feed delivery record: %v", r)
		}
		feedCount += r.GetCount()
		feedIDs = append(feedIDs, r.GetIds()...)
	}
	if feedCount != uint64(len(got)) || !slices.Equal(feedIDs, []string{rolloutMsg("1"), rolloutMsg("2")}) ||
		feedRecs[0].GetFirstCursor() != got[0].GetCursor() || feedRecs[len(feedRecs)-1].GetLastCursor() != got[len(got)-1].GetCursor() {
		t.Errorf("feed delivery records: %v", feedRecs)
	}

	type want struct {
		what  string
		match func(*phxv1.AuditRecord) bool
		check func(*phxv1.AuditRecord) bool
	}
	kind := func(k phxv1.AuditKind, org, method string) func(*phxv1.AuditRecord) bool {
		return func(r *phxv1.AuditRecord) bool {
			return r.GetKind() == k && r.GetOrg() == org && r.GetMethod() == method
		}
	}
	for _, w := range []want{
		{"WhoAmI allowed", kind(phxv1.AuditKind_AUDIT_KIND_AUTHZ, "contoso", phxv1.IdentityService_WhoAmI_FullMethodName),
			func(r *phxv1.AuditRecord) bool {
				return r.Allowed != nil && r.GetAllowed() && r.GetRule() == phxv1.IdentityService_WhoAmI_FullMethodName+":vendor" &&
					r.GetRole() == "vendor" && r.GetWorkload() == "dev" && r.GetAuthMethod() == "mtls" && strings.HasPrefix(r.GetPeer(), "127.0.0.1:")
			}},
		{"VerifyAudit denied", kind(phxv1.AuditKind_AUDIT_KIND_AUTHZ, "northwind", phxv1.AuditService_VerifyAudit_FullMethodName),
			func(r *phxv1.AuditRecord) bool {
				return r.Allowed != nil && !r.GetAllowed() && r.GetRule() == phxv1.AuditService_VerifyAudit_FullMethodName+":[operator]" &&
					r.GetCode() == "PermissionDenied" && strings.Contains(r.GetError(), `role "vendor" may not call`)
			}},
		{"another CA", kind(phxv1.AuditKind_AUDIT_KIND_AUTHN_FAILURE, "", phxv1.IdentityService_WhoAmI_FullMethodName),
			func(r *phxv1.AuditRecord) bool {
				return r.GetCode() == "Unauthenticated" && strings.Contains(r.GetError(), "not signed by a CA this hub trusts") && r.GetPeer() != ""
			}},
		{"PublishSignals", kind(phxv1.AuditKind_AUDIT_KIND_PUBLISH, "contoso", phxv1.HealthService_PublishSignals_FullMethodName),
			func(r *phxv1.AuditRecord) bool {
				return r.GetCount() == 3 && r.GetAccepted() == 3 && r.GetRefused() == 0 &&
					r.GetFirstCursor() == res[0].GetCursor() && r.GetLastCursor() == res[2].GetCursor() && len(r.GetIds()) == 0
			}},
		{"AnnounceRollout", func(r *phxv1.AuditRecord) bool {
			return kind(phxv1.AuditKind_AUDIT_KIND_PUBLISH, "contoso", phxv1.RolloutService_AnnounceRollout_FullMethodName)(r) && r.GetCode() == ""
		}, func(r *phxv1.AuditRecord) bool {
			return slices.Equal(r.GetIds(), []string{rid}) && r.GetRevision() == 1
		}},
		{"refused AnnounceRollout", func(r *phxv1.AuditRecord) bool {
			return kind(phxv1.AuditKind_AUDIT_KIND_PUBLISH, "contoso", phxv1.RolloutService_AnnounceRollout_FullMethodName)(r) && r.GetCode() != ""
		}, func(r *phxv1.AuditRecord) bool {
			return r.GetCode() == "PermissionDenied" && strings.Contains(r.GetError(), "does not own product") && r.GetRevision() == 0
		}},
		{"UpdateRollout", kind(phxv1.AuditKind_AUDIT_KIND_UPDATE, "contoso", phxv1.RolloutService_UpdateRollout_FullMethodName),
			func(r *phxv1.AuditRecord) bool {
				return slices.Equal(r.GetIds(), []string{rid}) && r.GetRevision() == 2
			}},
		{"ReportIncident", kind(phxv1.AuditKind_AUDIT_KIND_PUBLISH, "contoso", phxv1.IncidentService_ReportIncident_FullMethodName),
			func(r *phxv1.AuditRecord) bool {
				return slices.Equal(r.GetIds(), []string{inc.GetIncident().GetId()}) && r.GetRevision() == 1
			}},
		{"GetRollout delivery", kind(phxv1.AuditKind_AUDIT_KIND_DELIVERY, "fabrikam", phxv1.RolloutService_GetRollout_FullMethodName),
			func(r *phxv1.AuditRecord) bool {
				return slices.Equal(r.GetIds(), []string{rolloutMsg("2")}) && r.GetRecipient() == "fabrikam"
			}},
	} {
		r := first(recs, w.match)
		if r == nil {
			t.Errorf("%s: no record", w.what)
			continue
		}
		if !w.check(r) {
			t.Errorf("%s: %v", w.what, r)
		}
	}
	for i, r := range recs {
		if r.GetN() != uint64(i+1) || r.GetSeq() != uint64(i+1) || r.GetHash() == "" || (i == 0) != (r.GetPrev() == "") || r.GetHub() == "" {
			t.Fatalf("record %d: n %d seq %d prev %q hash %q hub %q", i, r.GetN(), r.GetSeq(), r.GetPrev(), r.GetHash(), r.GetHub())
		}
	}

	v := auditVerify(ctx, t, h)
	if !v.GetOk() || v.GetFirstBroken() != nil || v.GetBroken() != 0 || v.GetStartN() != 1 || v.GetRecords() < uint64(len(recs)) ||
		v.GetHead().GetN() != v.GetRecords() || len(v.GetHead().GetHash()) != 64 {
		t.Fatalf("VerifyAudit: %v", v)
	}
}

// TestAuditTamperDetected edits one stored record through a raw NATS
// connection, as an administrator of the NATS deployment could, and checks
// that VerifyAudit names it, while the hub goes on recording.
func TestAuditTamperDetected(t *testing.T) {
	t.Parallel()
	url := extStartNATS(t, 1)
	h := servertest.Start(t, servertest.WithNATSURL(url, 1))
	ctx := testCtx(t)
	contoso := as(t, h, "contoso")
	for range 5 {
		if _, err := contoso.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	auditWait(ctx, t, h, func(recs []*phxv1.AuditRecord) error {
		if len(recs) < 5 {
			return errNotYet
		}
		return nil
	})
	if v := auditVerify(ctx, t, h); !v.GetOk() {
		t.Fatalf("before tampering: %v", v)
	}

	// JetStream cannot change a stored message: purge the stream and
	// publish every message again, the third one edited.
	js := extJetStream(t, url)
	s, err := js.Stream(ctx, "PHX_AUDIT")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stored []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, m)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	const edited = 2 // the third record, n 3
	var editedSeq uint64
	for i, m := range stored {
		data := m.Data
		if i == edited {
			data = []byte(strings.Replace(string(data), `"org":"contoso"`, `"org":"fabrikam"`, 1))
			if string(data) == string(m.Data) {
				t.Fatalf("record to edit has no org: %s", m.Data)
			}
		}
		ack, err := js.Publish(ctx, m.Subject, data)
		if err != nil {
			t.Fatal(err)
		}
		if i == edited {
			editedSeq = ack.Sequence
		}
	}

	// The hub records on, chaining after the stream's new last message.
	for range 3 {
		if _, err := contoso.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	recs := auditWait(ctx, t, h, func(recs []*phxv1.AuditRecord) error {
		if len(recs) < len(stored)+3 {
			return errNotYet
		}
		return nil
	})
	if r := recs[edited]; r.GetOrg() != "fabrikam" || r.GetN() != edited+1 {
		t.Fatalf("the edited record reads %v", r)
	}

	v := auditVerify(ctx, t, h)
	b := v.GetFirstBroken()
	if v.GetOk() || b == nil || b.GetSeq() != editedSeq || b.GetN() != edited+1 || !strings.Contains(b.GetReason(), "hash mismatch") {
		t.Fatalf("VerifyAudit after tampering: %v", v)
	}
	// The edited record's own hash breaks, and so does the next record's
	// link to it; the records stored since chain on correctly.
	if v.GetBroken() != 2 || v.GetRecords() < uint64(len(stored)+3) {
		t.Errorf("VerifyAudit: %d broken of %d records; want the edited one and the next", v.GetBroken(), v.GetRecords())
	}
}

// TestAuditTwoHubsOnCluster: two hub replicas on a 3-node JetStream cluster
// record concurrently into one audit stream; the chain is whole and holds
// every record of both.
func TestAuditTwoHubsOnCluster(t *testing.T) {
	url := extStartNATS(t, 3)
	a := servertest.Start(t, servertest.WithNATSURL(url, 3))
	b := servertest.Start(t, servertest.WithNATSURL(url, 3), servertest.WithDataDir(a.DataDir))
	ctx := testCtx(t)
	callers := []*clients{as(t, a, "contoso"), as(t, b, "contoso"), as(t, a, "fabrikam"), as(t, b, "fabrikam")}
	const calls = 40
	race(len(callers), func(i int) {
		for range calls {
			if _, err := callers[i].identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	whoami := func(recs []*phxv1.AuditRecord) (n int, hubs map[string]bool) {
		hubs = map[string]bool{}
		for _, r := range recs {
			if r.GetMethod() == phxv1.IdentityService_WhoAmI_FullMethodName {
				n++
				hubs[r.GetHub()] = true
			}
		}
		return n, hubs
	}
	recs := auditWait(ctx, t, a, func(recs []*phxv1.AuditRecord) error {
		if n, _ := whoami(recs); n < len(callers)*calls {
			return errNotYet
		}
		return nil
	})
	if n, hubs := whoami(recs); n != len(callers)*calls || len(hubs) != 2 {
		t.Fatalf("%d WhoAmI records from hubs %v; want %d from two hubs", n, hubs, len(callers)*calls)
	}
	for _, h := range []*servertest.Hub{a, b} {
		if v := auditVerify(ctx, t, h); !v.GetOk() || v.GetStartN() != 1 || v.GetRecords() < uint64(len(recs)) {
			t.Fatalf("VerifyAudit through %s: %v", h.Addr, v)
		}
	}
}

// TestAuditTokens: issuing and revoking a token, and each call made with
// it (allowed or denied by its scopes), are in the audit log with the
// token's id, and so is the refusal of the revoked token.
func TestAuditTokens(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)
	tok := issueToken(t, h, &phxv1.IssueTokenRequest{Org: "contoso", Role: phxv1.Role_ROLE_RESPONDER, Scope: []string{"read"}})
	c := withToken(t, h, tok.Token)
	if _, err := c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err := c.incident.Acknowledge(ctx, &phxv1.AcknowledgeRequest{Id: "INC-0000000000"})
	wantStatus(t, err, codes.PermissionDenied, "")
	if _, err := as(t, h, "operator").token.RevokeToken(ctx, &phxv1.RevokeTokenRequest{Jti: tok.Jti}); err != nil {
		t.Fatal(err)
	}
	_, err = c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "")

	want := []struct {
		what  string
		match func(*phxv1.AuditRecord) bool
	}{
		{"the issue", func(r *phxv1.AuditRecord) bool {
			return r.GetKind() == phxv1.AuditKind_AUDIT_KIND_TOKEN_ISSUE && r.GetTokenId() == tok.Jti && r.GetOrg() == "operator" && r.GetRecipient() == "contoso"
		}},
		{"the allowed call", func(r *phxv1.AuditRecord) bool {
			return r.GetKind() == phxv1.AuditKind_AUDIT_KIND_AUTHZ && r.GetTokenId() == tok.Jti && r.GetAllowed() &&
				r.GetMethod() == phxv1.IdentityService_WhoAmI_FullMethodName && strings.Contains(r.GetRule(), "scope=read")
		}},
		{"the call its scopes deny", func(r *phxv1.AuditRecord) bool {
			return r.GetKind() == phxv1.AuditKind_AUDIT_KIND_AUTHZ && r.GetTokenId() == tok.Jti && !r.GetAllowed() &&
				r.GetMethod() == phxv1.IncidentService_Acknowledge_FullMethodName && strings.Contains(r.GetRule(), "scope=respond")
		}},
		{"the revocation", func(r *phxv1.AuditRecord) bool {
			return r.GetKind() == phxv1.AuditKind_AUDIT_KIND_TOKEN_REVOKE && r.GetTokenId() == tok.Jti && r.GetRecipient() == "contoso"
		}},
		{"the revoked token's refusal", func(r *phxv1.AuditRecord) bool {
			return r.GetKind() == phxv1.AuditKind_AUDIT_KIND_AUTHN_FAILURE && strings.Contains(r.GetError(), "revoked")
		}},
	}
	auditWait(ctx, t, h, func(recs []*phxv1.AuditRecord) error {
		for _, w := range want {
			if first(recs, w.match) == nil {
				return fmt.Errorf("no record of %s", w.what)
			}
		}
		return nil
	})
	if v := auditVerify(ctx, t, h); v.GetFirstBroken() != nil {
		t.Fatalf("audit log broken: %v", v)
	}
}
