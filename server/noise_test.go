package server_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestNoiseForWideReaders: a CERT receives a cell's counts with discrete
// Laplace noise, the same noise on every read (live, replay, another
// connection, after a restart), and the envelope says so; vendors and the
// platform receive the exact counts and no noise.
func TestNoiseForWideReaders(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	exact := cells("contoso-av", 20)
	for _, c := range exact {
		c.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}
	}
	live := open(t, as(t, h, "national-cert"), &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}})
	publish(t, as(t, h, "contoso"), exact...)
	replay := func(org string) []*phxv1.Envelope {
		f := open(t, as(t, h, org), &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL},
			Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
		defer f.close()
		return f.items(len(exact))
	}
	first := live.items(len(exact))
	second := replay("national-cert")
	changed := 0
	for i, env := range first {
		got, want := env.GetHealthSignal(), exact[i]
		if got.SignalId != want.SignalId {
			t.Fatalf("item %d is %s, want %s", i, got.SignalId, want.SignalId)
		}
		n := env.GetNoise()
		if n.GetMechanism() != "discrete_laplace" || n.GetEpsilonPerCount() <= 0 || n.GetEpsilonCell() > 8+1e-9 || len(n.GetFields()) < 8 {
			t.Fatalf("%s: noise %v", got.SignalId, n)
		}
		if !proto.Equal(got, second[i].GetHealthSignal()) || !proto.Equal(n, second[i].GetNoise()) {
			t.Fatalf("%s: read twice with different noise:\n%v\n%v", got.SignalId, got, second[i].GetHealthSignal())
		}
		if got.DevicesExposed != want.DevicesExposed || got.DevicesActive != want.DevicesActive || got.DistinctTenants != want.DistinctTenants {
			changed++
		}
	}
	// With ε = 8/9 per count, P(no change of three counts) ≈ 0.18³ per cell.
	if changed < len(exact)/2 {
		t.Fatalf("only %d of %d cells had noised counts", changed, len(exact))
	}
	for _, org := range []string{"fabrikam", "microsoft", "contoso"} {
		for i, env := range replay(org) {
			if env.GetNoise() != nil || !proto.Equal(env.GetHealthSignal(), stripAudience(exact[i], env.GetHealthSignal())) {
				t.Fatalf("%s got %v (noise %v), want the exact cell %v", org, env.GetHealthSignal(), env.GetNoise(), exact[i])
			}
		}
	}
	who, err := as(t, h, "national-cert").identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
	if err != nil || who.GetPrivacy().GetNoiseEpsilon() != 1 || who.GetPrivacy().GetNoiseCellBudget() != 8 {
		t.Fatalf("WhoAmI privacy %v, %v", who.GetPrivacy(), err)
	}

	// The noise is a property of the cell and the hub's secret: it survives
	// a restart.
	h.Restart(t)
	for i, env := range replay("national-cert") {
		if !proto.Equal(env.GetHealthSignal(), first[i].GetHealthSignal()) {
			t.Fatalf("after a restart %s has other noise", env.GetHealthSignal().GetSignalId())
		}
	}
}

// stripAudience returns want with got's audience, for comparing what the
// hub stored (it may fill the audience in) with what was published.
func stripAudience(want, got *phxv1.HealthSignal) *phxv1.HealthSignal {
	c := proto.CloneOf(want)
	c.Audience = got.GetAudience()
	return c
}
