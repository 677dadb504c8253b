package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestPublishSignalsBatches publishes more than MaxBatch signals with
// rejected items spread over several batches, and checks that results come
// back in the caller's order with the caller's indices.
func TestPublishSignalsBatches(t *testing.T) {
	ctx := context.Background()
	c := client(t, hub, "contoso")
	run := unique()
	const n = 2*sdk.MaxBatch + 345
	bad := map[int]string{ // index → field the hub names
		3:     "devices_exposed",
		999:   "window_seconds",
		1000:  "devices_exposed",
		1500:  "product",
		n - 1: "devices_exposed",
	}
	signals := make([]*phxv1.HealthSignal, n)
	for i := range signals {
		s := cell(fmt.Sprintf("batch-%s-%d", run, i))
		switch bad[i] {
		case "devices_exposed":
			s.DevicesExposed = s.DevicesActive + 1
		case "window_seconds":
			s.WindowSeconds = 61
		case "product":
			s.Product = "fabrikam-edr"
		}
		signals[i] = s
	}
	resp, err := c.PublishSignals(ctx, signals)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetResults()); got != n {
		t.Fatalf("%d results, want %d", got, n)
	}
	if resp.GetAccepted() != uint32(n-len(bad)) || resp.GetRejected() != uint32(len(bad)) || resp.GetDuplicates() != 0 {
		t.Errorf("accepted=%d rejected=%d duplicates=%d, want %d, %d, 0", resp.GetAccepted(), resp.GetRejected(), resp.GetDuplicates(), n-len(bad), len(bad))
	}
	for i, r := range resp.GetResults() {
		if r.GetIndex() != uint32(i) || r.GetSignalId() != signals[i].GetSignalId() {
			t.Fatalf("results[%d] = index %d, id %s; want index %d, id %s", i, r.GetIndex(), r.GetSignalId(), i, signals[i].GetSignalId())
		}
		field, isBad := bad[i]
		err := sdk.ItemErr(r.GetError())
		switch {
		case isBad:
			var e *sdk.Error
			if r.GetOutcome() != phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED || !errors.As(err, &e) || e.Field != field {
				t.Errorf("results[%d] = %v, %v; want rejected on %s", i, r.GetOutcome(), err, field)
			}
			want := sdk.ErrInvalidArgument
			if field == "product" {
				want = sdk.ErrPermissionDenied
			}
			if !errors.Is(err, want) {
				t.Errorf("results[%d]: %v is not %v", i, err, want)
			}
		case r.GetOutcome() != phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED || r.GetCursor() == "" || err != nil:
			t.Errorf("results[%d] = %v cursor %q err %v; want accepted with a cursor", i, r.GetOutcome(), r.GetCursor(), err)
		}
	}

	// Again: every accepted item is a duplicate now, at the same index.
	resp, err = c.PublishSignals(ctx, signals)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDuplicates() != uint32(n-len(bad)) || resp.GetAccepted() != 0 || resp.GetRejected() != uint32(len(bad)) {
		t.Errorf("second publish: accepted=%d duplicates=%d rejected=%d", resp.GetAccepted(), resp.GetDuplicates(), resp.GetRejected())
	}
	for i, r := range resp.GetResults() {
		if _, isBad := bad[i]; !isBad && (r.GetIndex() != uint32(i) || r.GetOutcome() != phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE) {
			t.Fatalf("second publish results[%d] = index %d %v", i, r.GetIndex(), r.GetOutcome())
		}
	}

	// Nothing to publish is not a call.
	resp, err = c.PublishSignals(ctx, nil)
	if err != nil || len(resp.GetResults()) != 0 {
		t.Errorf("empty publish: %v, %v", resp, err)
	}
}

// TestErrors checks the mapping of the hub's refusals to sentinels and
// fields.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	c := client(t, hub, "contoso")
	id := "errs-" + unique()
	r, err := c.AnnounceRollout(ctx, &phxv1.Rollout{
		RolloutId: id, Product: "contoso-av", ContentVersion: "1.0", CurrentRing: phxv1.Ring_RING_CANARY,
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		call  func() error
		is    error
		field string
	}{
		{"not found", func() error { _, err := c.GetRollout(ctx, "nope-"+unique()); return err }, sdk.ErrNotFound, ""},
		{"already exists", func() error {
			_, err := c.AnnounceRollout(ctx, &phxv1.Rollout{
				RolloutId: id, Product: "contoso-av", ContentVersion: "1.1", CurrentRing: phxv1.Ring_RING_CANARY,
				Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
			})
			return err
		}, sdk.ErrAlreadyExists, ""},
		{"stale revision", func() error {
			_, err := c.UpdateRollout(ctx, id, r.GetRevision()+5, &phxv1.Rollout{PercentDeployed: 5}, "percent_deployed")
			return err
		}, sdk.ErrFailedPrecondition, "expected_revision"},
		{"no paths", func() error {
			_, err := c.UpdateRollout(ctx, id, r.GetRevision(), &phxv1.Rollout{})
			return err
		}, sdk.ErrInvalidArgument, "update_mask"},
		{"invalid rollout id", func() error {
			_, err := c.AnnounceRollout(ctx, &phxv1.Rollout{
				RolloutId: "Not Valid", Product: "contoso-av", ContentVersion: "1.0", CurrentRing: phxv1.Ring_RING_CANARY,
				Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
			})
			return err
		}, sdk.ErrInvalidArgument, "rollout.rollout_id"},
		{"not the owner", func() error {
			_, err := c.AnnounceRollout(ctx, &phxv1.Rollout{
				RolloutId: "x-" + unique(), Product: "fabrikam-edr", ContentVersion: "1.0", CurrentRing: phxv1.Ring_RING_CANARY,
				Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
			})
			return err
		}, sdk.ErrPermissionDenied, "rollout.product"},
		{"bad cursor", func() error {
			_, err := c.Subscribe(ctx, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "garbage"}})
			return err
		}, sdk.ErrInvalidArgument, "cursor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *sdk.Error", err, err)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
			if e.Field != tt.field {
				t.Errorf("field = %q, want %q (%v)", e.Field, tt.field, err)
			}
		})
	}
}

// TestUnauthenticated connects without a client certificate.
func TestUnauthenticated(t *testing.T) {
	c, err := sdk.New(hub.Addr, sdk.WithCAFile(hub.PKI.CACert()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.WhoAmI(context.Background())
	if !errors.Is(err, sdk.ErrUnauthenticated) {
		t.Errorf("err = %v, want unauthenticated", err)
	}
	_, err = c.Subscribe(context.Background(), &phxv1.SubscribeRequest{})
	if !errors.Is(err, sdk.ErrUnauthenticated) {
		t.Errorf("subscribe err = %v, want unauthenticated", err)
	}
}

// TestRetryUntilHubStarts calls a hub that is down and comes up while the
// client retries.
func TestRetryUntilHubStarts(t *testing.T) {
	h := servertest.Start(t)
	h.Stop()
	c := client(t, h, "contoso", sdk.WithRetry(50, 20*time.Millisecond, 200*time.Millisecond))

	// Without retries the call fails at once with Unavailable.
	c1 := client(t, h, "contoso", sdk.WithRetry(1, time.Millisecond, time.Millisecond))
	if _, err := c1.WhoAmI(context.Background()); !errors.Is(err, sdk.ErrUnavailable) {
		t.Fatalf("hub down: err = %v, want unavailable", err)
	}

	restarted := make(chan struct{})
	go func() {
		time.Sleep(500 * time.Millisecond)
		h.Restart(t)
		close(restarted)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.AnnounceRollout(ctx, &phxv1.Rollout{
		RolloutId: "retry-" + unique(), Product: "contoso-av", ContentVersion: "1.0", CurrentRing: phxv1.Ring_RING_CANARY,
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	})
	<-restarted
	if err != nil {
		t.Fatalf("announce while the hub restarts: %v", err)
	}
	if r.GetRevision() != 1 {
		t.Errorf("revision = %d, want 1", r.GetRevision())
	}
}

// TestSubscribeResumesAcrossRestart restarts the hub under a subscription:
// the subscription resumes after its last cursor, with nothing lost and
// nothing repeated.
func TestSubscribeResumesAcrossRestart(t *testing.T) {
	h := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub := client(t, h, "contoso", sdk.WithRetry(100, 20*time.Millisecond, 200*time.Millisecond))
	sc := client(t, h, "fabrikam", sdk.WithRetry(5, 20*time.Millisecond, 200*time.Millisecond))
	sub, err := sc.Subscribe(ctx, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}, HeartbeatSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sub.Cursor() == "" || sub.LastHeard().IsZero() {
		t.Errorf("after Subscribe: cursor %q, last heard %v; want the first heartbeat's", sub.Cursor(), sub.LastHeard())
	}

	publish := func(ids ...string) {
		t.Helper()
		var cells []*phxv1.HealthSignal
		for _, id := range ids {
			cells = append(cells, cell(id))
		}
		resp, err := pub.PublishSignals(ctx, cells)
		if err != nil || resp.GetAccepted() != uint32(len(ids)) {
			t.Fatalf("publish %v: %v, %v", ids, resp, err)
		}
	}
	expect := func(ids ...string) {
		t.Helper()
		for _, want := range ids {
			env, err := sub.Recv()
			if err != nil {
				t.Fatalf("recv (want %s): %v", want, err)
			}
			if got := env.GetHealthSignal().GetSignalId(); got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
			if env.GetKind() == phxv1.Kind_KIND_HEARTBEAT {
				t.Fatal("Recv returned a heartbeat")
			}
		}
	}

	publish("a1", "a2")
	expect("a1", "a2")
	before := sub.Cursor()

	// Published while the subscription is down: delivered after it resumes.
	h.Stop()
	time.Sleep(200 * time.Millisecond)
	h.Restart(t)
	publish("b1", "b2")
	expect("b1", "b2")
	publish("c1")
	expect("c1")
	if sub.Cursor() == before {
		t.Error("cursor did not move")
	}

	// While Recv waits, heartbeats (every second here) are recorded but
	// not returned.
	heard := sub.LastHeard()
	got := make(chan string, 1)
	go func() {
		env, err := sub.Recv()
		if err != nil {
			got <- err.Error()
			return
		}
		got <- env.GetHealthSignal().GetSignalId()
	}()
	time.Sleep(2500 * time.Millisecond)
	if !sub.LastHeard().After(heard) {
		t.Error("no heartbeat recorded")
	}
	publish("d1")
	if id := <-got; id != "d1" {
		t.Errorf("got %s, want d1", id)
	}
}

// TestSubscriptionClose closes a subscription while Recv waits, from another
// goroutine, and reads its state concurrently (run with -race).
func TestSubscriptionClose(t *testing.T) {
	c := client(t, hub, "contoso")
	sub, err := c.Subscribe(context.Background(), &phxv1.SubscribeRequest{HeartbeatSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			if _, err := sub.Recv(); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 20 {
			_ = sub.Cursor()
			_ = sub.LastHeard()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(1200 * time.Millisecond)
	sub.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, sdk.ErrCanceled) {
			t.Errorf("Recv after Close: %v, want canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Recv did not return after Close")
	}
	wg.Wait()
	if _, err := sub.Recv(); !errors.Is(err, sdk.ErrCanceled) {
		t.Errorf("Recv on a closed subscription: %v", err)
	}
	if sub.Close() != nil {
		t.Error("second Close failed")
	}
}

// TestRecvAny receives heartbeats and items in one loop: a heartbeat while
// the feed is idle, then an item published meanwhile, each with a cursor.
func TestRecvAny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := client(t, hub, "contoso")
	sub, err := c.Subscribe(ctx, &phxv1.SubscribeRequest{
		Kinds:            []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL},
		Products:         []string{"contoso-av"},
		HeartbeatSeconds: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	env, err := sub.RecvAny()
	if err != nil {
		t.Fatal(err)
	}
	if env.GetKind() != phxv1.Kind_KIND_HEARTBEAT || env.GetCursor() == "" || env.GetPublishedAt() == nil {
		t.Fatalf("first envelope: %v cursor %q at %v; want a heartbeat with cursor and time", env.GetKind(), env.GetCursor(), env.GetPublishedAt())
	}
	id := "any-" + unique()
	if _, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell(id)}); err != nil {
		t.Fatal(err)
	}
	for {
		env, err := sub.RecvAny()
		if err != nil {
			t.Fatal(err)
		}
		if env.GetCursor() != sub.Cursor() {
			t.Errorf("envelope cursor %q, Cursor() %q", env.GetCursor(), sub.Cursor())
		}
		if env.GetHealthSignal().GetSignalId() == id {
			return
		}
	}
}

// TestSubscribeContextEnds ends the subscription with its context.
func TestSubscribeContextEnds(t *testing.T) {
	c := client(t, hub, "contoso")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	sub, err := c.Subscribe(ctx, &phxv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	_, err = sub.Recv()
	if !errors.Is(err, sdk.ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
}

// TestUnimplemented calls the RPCs the hub does not serve yet, if any: their
// errors must still be *sdk.Error.
func TestThinWrappers(t *testing.T) {
	ctx := context.Background()
	c := client(t, hub, "contoso")
	calls := map[string]func() error{
		"AddPost": func() error { _, err := c.AddPost(ctx, "INC-0000000000", "text", 0); return err },
		"Respond": func() error {
			_, err := c.Respond(ctx, "INC-0000000000", phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED, "")
			return err
		},
		"Acknowledge":  func() error { _, err := c.Acknowledge(ctx, "INC-0000000000"); return err },
		"ListReceipts": func() error { _, err := c.ListReceipts(ctx, "INC-0000000000"); return err },
		"IssueToken":   func() error { _, err := c.IssueToken(ctx, &phxv1.IssueTokenRequest{Org: "national-cert"}); return err },
		"RevokeToken":  func() error { _, err := c.RevokeToken(ctx, "jti"); return err },
	}
	for name, call := range calls {
		err := call()
		var e *sdk.Error
		if !errors.As(err, &e) {
			t.Errorf("%s: err = %v (%T), want an *sdk.Error", name, err, err)
			continue
		}
		if e.Code == sdk.Code(codes.OK) {
			t.Errorf("%s: code OK in an error", name)
		}
	}
}

// TestAudit reads the audit log as the operator, and is refused it as a vendor.
func TestAudit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vendor, op := client(t, hub, "contoso"), client(t, hub, "operator")
	for range 3 {
		if _, err := vendor.WhoAmI(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The records of a call are stored shortly after it returns.
	var recs []*phxv1.AuditRecord
	deadline := time.Now().Add(20 * time.Second)
	for {
		recs = recs[:0]
		err := op.TailAudit(ctx, &phxv1.TailAuditRequest{Limit: 3}, func(r *phxv1.AuditRecord) error {
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for i, r := range recs {
		if r.GetKind() == phxv1.AuditKind_AUDIT_KIND_UNSPECIFIED || r.GetHash() == "" || i > 0 && r.GetN() != recs[i-1].GetN()+1 {
			t.Errorf("record %d: %v", i, r)
		}
	}
	// An error from the callback ends the stream and is returned.
	stop := errors.New("enough")
	if err := op.TailAudit(ctx, nil, func(*phxv1.AuditRecord) error { return stop }); err != stop {
		t.Errorf("TailAudit with a failing callback: %v", err)
	}

	progress := 0
	res, err := op.VerifyAudit(ctx, func(*phxv1.AuditProgress) { progress++ })
	if err != nil {
		t.Fatal(err)
	}
	if !res.GetOk() || res.GetFirstBroken() != nil || res.GetRecords() == 0 || res.GetHead().GetN() < recs[2].GetN() || progress == 0 {
		t.Errorf("VerifyAudit: %v (%d progress reports)", res, progress)
	}

	if err := vendor.TailAudit(ctx, nil, func(*phxv1.AuditRecord) error { return nil }); !errors.Is(err, sdk.ErrPermissionDenied) {
		t.Errorf("TailAudit as a vendor: %v", err)
	}
	if _, err := vendor.VerifyAudit(ctx, nil); !errors.Is(err, sdk.ErrPermissionDenied) {
		t.Errorf("VerifyAudit as a vendor: %v", err)
	}
}

// TestSeveralHubs gives the client two hub replicas: when the one it uses
// stops, calls go to the other.
func TestSeveralHubs(t *testing.T) {
	a := servertest.Start(t)
	// b shares a's dev PKI and member registry, as replicas share a CA.
	dirB := t.TempDir()
	if err := os.CopyFS(filepath.Join(dirB, "pki"), os.DirFS(a.PKI.Dir())); err != nil {
		t.Fatal(err)
	}
	members, err := os.ReadFile(a.PKI.Members())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "members.json"), members, 0o600); err != nil {
		t.Fatal(err)
	}
	b := servertest.Start(t, servertest.WithDataDir(dirB))
	_, portB, _ := net.SplitHostPort(b.Addr)
	// Each replica's certificate is checked against its own name.
	target := a.Addr + ", localhost:" + portB
	c, err := sdk.New(target, sdk.WithCertFiles(a.PKI.CACert(), a.PKI.OrgCert("contoso"), a.PKI.OrgKey("contoso")),
		sdk.WithRetry(10, 20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Target() != target {
		t.Errorf("Target() = %q", c.Target())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := unique()
	if _, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell("hubs-" + run + "-a")}); err != nil {
		t.Fatal(err)
	}
	a.Stop()
	if _, err := c.WhoAmI(ctx); err != nil {
		t.Fatalf("WhoAmI with the first hub down: %v", err)
	}
	if _, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell("hubs-" + run + "-b")}); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, b, "hubs-"+run); len(got) != 1 || got["hubs-"+run+"-b"] != 1 {
		t.Errorf("second hub stored %v", got)
	}
	a.Restart(t)
	if got := stored(t, a, "hubs-"+run); len(got) != 1 || got["hubs-"+run+"-a"] != 1 {
		t.Errorf("first hub stored %v", got)
	}

	for _, bad := range []string{"127.0.0.1:1,no-port", " , "} {
		if _, err := sdk.New(bad, sdk.FromEnv()); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
}
