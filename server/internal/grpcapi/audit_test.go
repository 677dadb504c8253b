package grpcapi

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/natsembed"
)

// Without an audit log nothing is recorded and nothing fails.
func TestNoAuditLog(t *testing.T) {
	a := New(Config{})
	ctx := authn.NewContext(context.Background(), &authn.Identity{Org: "contoso", Role: "vendor"})
	a.record(ctx, audit.Event{Kind: audit.KindPublish})
	a.auditDelivered(ctx, []string{"rollout/r@1"}, nil)
	d := a.newDeliveries(ctx, "contoso")
	d.add(&phxv1.Envelope{Kind: phxv1.Kind_KIND_ROLLOUT, MessageId: "rollout/r@1", Cursor: "h0.r1.i0.a0"})
	if d.C != nil {
		t.Fatal("a batch is pending without an audit log")
	}
	d.flush()
}

func TestDeliveriesBatching(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := natsembed.Start(ctx, natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := bus.New(ctx, nc, bus.Config{})
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(b.JetStream(), b.Stream(bus.StreamAudit), audit.Config{})
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()

	a := New(Config{Audit: l})
	cctx := authn.NewContext(ctx, &authn.Identity{Org: "fabrikam", Role: "vendor", Workload: "dev", Method: authn.MethodMTLS})
	d := a.newDeliveries(cctx, "fabrikam")
	// 2,500 items: two full batches, then the rest at the end. Every tenth
	// is a rollout, listed by message id; health cells are only counted.
	for i := 1; i <= 2500; i++ {
		env := &phxv1.Envelope{Kind: phxv1.Kind_KIND_HEALTH_SIGNAL, MessageId: fmt.Sprintf("contoso/s%d", i), Cursor: fmt.Sprintf("h%d.r0.i0.a0", i)}
		if i%10 == 0 {
			env.Kind, env.MessageId = phxv1.Kind_KIND_ROLLOUT, fmt.Sprintf("rollout/r%d@1", i)
		}
		d.add(env)
	}
	d.flush()
	// One item, then the batch is due within a second.
	d.add(&phxv1.Envelope{Kind: phxv1.Kind_KIND_INCIDENT, MessageId: "incident/INC-1@2", Cursor: "h2500.r0.i7.a0"})
	select {
	case <-d.C:
		d.flush()
	case <-time.After(5 * time.Second):
		t.Fatal("a pending batch did not come due")
	}
	if d.C != nil {
		t.Fatal("a batch is still pending after flush")
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	var got []*audit.Record
	if err := audit.Scan(ctx, b.Stream(bus.StreamAudit), 0, false, func(e audit.Entry) error {
		got = append(got, e.Record)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		count       uint64
		ids         int
		first, last string
	}{{1000, 100, "h1.r0.i0.a0", "h1000.r0.i0.a0"}, {1000, 100, "h1001.r0.i0.a0", "h2000.r0.i0.a0"}, {500, 50, "h2001.r0.i0.a0", "h2500.r0.i0.a0"}, {1, 1, "h2500.r0.i7.a0", "h2500.r0.i7.a0"}}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i, w := range want {
		r := got[i]
		if r.Kind != audit.KindDelivery || r.Recipient != "fabrikam" || r.Org != "fabrikam" || r.AuthMethod != "mtls" ||
			r.Count != w.count || len(r.IDs) != w.ids || r.FirstCursor != w.first || r.LastCursor != w.last {
			t.Errorf("record %d: %+v", i, r)
		}
		for _, id := range r.IDs {
			if !strings.HasPrefix(id, "rollout/") && !strings.HasPrefix(id, "incident/") {
				t.Errorf("record %d lists %q", i, id)
			}
		}
	}
}
