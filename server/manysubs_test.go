package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestMoreThanAThousandSubscribers: every live Subscribe holds a JetStream
// consumer per stream it reads; more than the NATS server's default of
// 1,000 consumers per stream subscribe, and each receives an incident.
func TestMoreThanAThousandSubscribers(t *testing.T) {
	const n = 1001
	h := servertest.Start(t)
	req := &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_INCIDENT}}
	conns := make([]*clients, 0, n/100+1)
	for range n/100 + 1 {
		conns = append(conns, as(t, h, "fabrikam"))
	}
	reporter := as(t, h, "contoso")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	streams := make([]grpc.ServerStreamingClient[phxv1.Envelope], n)
	for i := range streams {
		st, err := conns[i/100].feed.Subscribe(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if env, err := st.Recv(); err != nil || env.Kind != phxv1.Kind_KIND_HEARTBEAT {
			t.Fatalf("subscriber %d: %v %v", i, env, err)
		}
		streams[i] = st
	}
	in, err := reporter.incident.ReportIncident(ctx, &phxv1.ReportIncidentRequest{
		Incident: incident("fan-out", "contoso-av", phxv1.Severity_SEVERITY_LOW, green()), RequestId: uniq("req"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range streams {
		env, err := st.Recv()
		for err == nil && env.Kind == phxv1.Kind_KIND_HEARTBEAT {
			env, err = st.Recv()
		}
		if err != nil || env.GetIncident().GetId() != in.Incident.Id {
			t.Fatalf("subscriber %d: %v %v", i, env, err)
		}
	}
}
