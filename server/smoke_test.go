package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

func dial(t *testing.T, h *servertest.Hub, org string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(h.ClientTLS(t, org))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func signal(id string) *phxv1.HealthSignal {
	ws := time.Now().Add(-2 * time.Minute).Truncate(time.Minute)
	return &phxv1.HealthSignal{
		SignalId: id, Product: "contoso-av", ProductVersion: "7.16.18", ContentChannel: "channel-291", ContentVersion: "291.1",
		Ring: phxv1.Ring_RING_CANARY, OsFamily: "windows", OsBuild: "10.0.22631.3880", Arch: "x64", Region: "global",
		WindowStart: timestamppb.New(ws), WindowSeconds: 60, DevicesActive: 1000, DevicesExposed: 900, DevicesSilent: 10,
		DistinctTenants: 40, KernelCrashDevices: 3, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	}
}

func TestSmoke(t *testing.T) {
	h := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	contoso := dial(t, h, "contoso")
	fab := dial(t, h, "fabrikam")
	who, err := phxv1.NewIdentityServiceClient(contoso).WhoAmI(ctx, &phxv1.WhoAmIRequest{})
	if err != nil || who.Org != "contoso" || who.Role != phxv1.Role_ROLE_VENDOR {
		t.Fatalf("whoami: %v %v", who, err)
	}
	sub, err := phxv1.NewFeedServiceClient(fab).Subscribe(ctx, &phxv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hb, err := sub.Recv()
	if err != nil || hb.Kind != phxv1.Kind_KIND_HEARTBEAT {
		t.Fatalf("first: %v %v", hb, err)
	}
	hs := phxv1.NewHealthServiceClient(contoso)
	res, err := hs.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{signal("a1"), signal("a1"), signal("")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", res)
	if res.Accepted != 1 || res.Duplicates != 1 || res.Rejected != 1 {
		t.Fatalf("res %v", res)
	}
	env, err := sub.Recv()
	if err != nil || env.GetHealthSignal().GetSignalId() != "a1" {
		t.Fatalf("env %v %v", env, err)
	}
	t.Logf("cursor %s", env.Cursor)
	rs := phxv1.NewRolloutServiceClient(contoso)
	ro, err := rs.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: &phxv1.Rollout{RolloutId: "r-291", Product: "contoso-av", ContentVersion: "291.1", CurrentRing: phxv1.Ring_RING_CANARY, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = rs.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: &phxv1.Rollout{RolloutId: "r-291", Product: "contoso-av", ContentVersion: "291.1", CurrentRing: phxv1.Ring_RING_CANARY, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}}})
	t.Logf("dup announce: %v", err)
	up, err := rs.UpdateRollout(ctx, &phxv1.UpdateRolloutRequest{RolloutId: "r-291", ExpectedRevision: ro.Rollout.Revision, Rollout: &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}}})
	if err != nil || up.Rollout.Revision != 2 {
		t.Fatalf("update %v %v", up, err)
	}
	_, err = rs.UpdateRollout(ctx, &phxv1.UpdateRolloutRequest{RolloutId: "r-291", ExpectedRevision: 1, Rollout: &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_ACTIVE}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}}})
	t.Logf("stale: %v", err)
	for range 2 {
		env, err = sub.Recv()
		t.Logf("env %v %v", env.GetRollout().GetState(), err)
	}
	is := phxv1.NewIncidentServiceClient(contoso)
	inc, err := is.ReportIncident(ctx, &phxv1.ReportIncidentRequest{Incident: &phxv1.Incident{Title: "boot loop", Severity: phxv1.Severity_SEVERITY_CRITICAL, Affected: []*phxv1.Affected{{Product: "contoso-av", ContentVersion: "291.1"}}, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("incident %s", inc.Incident.Id)
	env, err = sub.Recv()
	t.Logf("env %v %v", env.GetIncident().GetId(), err)
	list, err := phxv1.NewIncidentServiceClient(fab).ListIncidents(ctx, &phxv1.ListIncidentsRequest{})
	t.Logf("list %d %v", len(list.GetIncidents()), err)
	lr, err := phxv1.NewRolloutServiceClient(fab).ListRollouts(ctx, &phxv1.ListRolloutsRequest{})
	t.Logf("list rollouts %d %v", len(lr.GetRollouts()), err)
	h.Restart(t)
	g, err := phxv1.NewIncidentServiceClient(fab).GetIncident(ctx, &phxv1.GetIncidentRequest{Id: inc.Incident.Id})
	t.Logf("after restart %v %v", g.GetIncident().GetTitle(), err)
}
