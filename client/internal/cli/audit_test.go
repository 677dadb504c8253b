package cli

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// tailJSON runs "audit tail --json" as the operator and decodes its lines.
func tailJSON(t *testing.T, n int) []*phxv1.AuditRecord {
	t.Helper()
	out, _, err := phx(t, args(as(hub, "operator"), "audit", "tail", "-n", fmt.Sprint(n), "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*phxv1.AuditRecord
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		r := &phxv1.AuditRecord{}
		if err := protojson.Unmarshal([]byte(l), r); err != nil {
			t.Fatalf("not one record per line: %v\n%q", err, l)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestAuditCommands(t *testing.T) {
	id := "aud-" + unique()
	// A vendor may not read the audit log; its attempt is itself audited.
	for _, cmd := range [][]string{{"audit", "tail"}, {"audit", "verify"}} {
		_, _, err := phx(t, args(as(hub, "northwind"), cmd...)...)
		if !errors.Is(err, sdk.ErrPermissionDenied) || ExitCode(err) != 1 {
			t.Errorf("%v as a vendor: %v", cmd, err)
		}
	}
	// A refused update, whose record names the rollout.
	if _, _, err := phx(t, args(as(hub, "contoso"), "rollout", "update", id, "--revision", "1", "--state", "paused")...); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("update of a missing rollout: %v", err)
	}

	// The records are stored shortly after the calls return.
	var recs []*phxv1.AuditRecord
	var update, denied *phxv1.AuditRecord
	deadline := time.Now().Add(20 * time.Second)
	for update == nil || denied == nil {
		if time.Now().After(deadline) {
			t.Fatalf("records not found in the newest 50: update %v, denied %v", update, denied)
		}
		time.Sleep(50 * time.Millisecond)
		recs = tailJSON(t, 50)
		for _, r := range recs {
			switch {
			case len(r.GetIds()) == 1 && r.GetIds()[0] == id:
				update = r
			case r.GetOrg() == "northwind" && r.GetMethod() == phxv1.AuditService_VerifyAudit_FullMethodName:
				denied = r
			}
		}
	}
	if len(recs) > 50 {
		t.Errorf("%d records, want at most 50", len(recs))
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].GetN() != recs[i-1].GetN()+1 || recs[i].GetSeq() <= recs[i-1].GetSeq() {
			t.Fatalf("records out of order: n %d seq %d, then n %d seq %d", recs[i-1].GetN(), recs[i-1].GetSeq(), recs[i].GetN(), recs[i].GetSeq())
		}
	}
	if update.GetKind() != phxv1.AuditKind_AUDIT_KIND_UPDATE || update.GetOrg() != "contoso" || update.GetCode() != "NotFound" {
		t.Errorf("update record: %v", update)
	}
	if denied.GetKind() != phxv1.AuditKind_AUDIT_KIND_AUTHZ || denied.Allowed == nil || denied.GetAllowed() || denied.GetCode() != "PermissionDenied" ||
		!strings.Contains(denied.GetRule(), "[operator]") {
		t.Errorf("denied record: %v", denied)
	}

	// For people: a header and aligned lines.
	out, _, err := phx(t, args(as(hub, "operator"), "audit", "tail", "-n", "3")...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !regexp.MustCompile(`^N\s+TIME\s+KIND\s+ORG\s+METHOD\s+RESULT\s+DETAIL$`).MatchString(lines[0]) {
		t.Fatalf("tail:\n%s", out)
	}
	for _, l := range lines[1:] {
		if !regexp.MustCompile(`^\d+\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+[a-z-]+\s+\S+\s+\S+\s+\S+`).MatchString(l) {
			t.Errorf("tail line %q", l)
		}
	}

	// Verify: intact, with the head to anchor.
	out, _, err = phx(t, args(as(hub, "operator"), "audit", "verify")...)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^audit chain intact: \d+ records, stream seq 1 to \d+$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^head: n \d+ hash [0-9a-f]{64} seq \d+ time \S+Z$`).MatchString(out) {
		t.Errorf("verify:\n%s", out)
	}
	out, _, err = phx(t, args(as(hub, "operator"), "--json", "audit", "verify")...)
	var v phxv1.AuditVerification
	if err != nil || protojson.Unmarshal([]byte(out), &v) != nil || !v.GetOk() || v.GetHead().GetN() < update.GetN() || v.GetStartN() != 1 {
		t.Errorf("verify --json: %v\n%s", err, out)
	}

	// Follow: new records as they are stored.
	w := startWatch(t, args(as(hub, "operator"), "audit", "tail", "--follow", "-n", "1", "--json")...)
	time.Sleep(300 * time.Millisecond)
	if _, _, err := phx(t, args(as(hub, "contoso"), "rollout", "update", id+"-f", "--revision", "1", "--state", "paused")...); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatal(err)
	}
	w.waitFor(t, id+"-f")
	if err := w.stop(t); err != nil {
		t.Errorf("interrupted follow: %v", err)
	}
}

func TestShowVerificationBroken(t *testing.T) {
	e := &env{}
	var b strings.Builder
	e.showVerification(&b, &phxv1.AuditVerification{
		Records: 25, FirstSeq: 21, LastSeq: 45, StartN: 3, Broken: 2,
		FirstBroken: &phxv1.AuditBreak{Seq: 27, N: 9, Reason: "hash mismatch: the record was changed after it was stored"},
		Head:        &phxv1.AuditHead{N: 27, Hash: strings.Repeat("ab", 32), Seq: 45},
	})
	want := "audit chain BROKEN: first broken record: n 9 (stream seq 27): hash mismatch: the record was changed after it was stored\n" +
		"2 of 25 records break the chain (stream seq 21 to 45)\n" +
		"the chain starts at n 3: older records are no longer in the stream\n" +
		"head: n 27 hash " + strings.Repeat("ab", 32) + " seq 45 time -\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
