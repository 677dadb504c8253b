package server_test

import (
	"fmt"
	"testing"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	cellbuilder "github.com/phx-exchange/phx/sdk/cells"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestDetectorRaisesAdvisory: contoso's canary devices on a new content
// version go into a boot loop (they fall silent); the hub's detector,
// reading the cells the SDK builder made, raises one catastrophe advisory
// about the rollout, delivered to contoso and the platform but not to
// other vendors.
func TestDetectorRaisesAdvisory(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)
	contoso := as(t, h, "contoso")
	ro := &phxv1.Rollout{RolloutId: uniq("r-bootloop"), Product: "contoso-av", ContentChannel: "channel-291",
		ContentVersion: "291.2", PreviousVersion: "291.1", State: phxv1.RolloutState_ROLLOUT_ACTIVE,
		CurrentRing: phxv1.Ring_RING_CANARY, PercentDeployed: 1, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}}
	if _, err := contoso.rollouts.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: ro}); err != nil {
		t.Fatal(err)
	}
	contosoFeed := open(t, contoso, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ADVISORY}})

	publishBootLoop(t, h, ro, time.Now().Truncate(time.Minute).Add(-8*time.Minute), "dev")

	env := contosoFeed.next()
	adv := env.GetAdvisory()
	if adv.GetKind() != phxv1.AdvisoryKind_ADVISORY_KIND_CATASTROPHE || adv.GetRolloutId() != ro.RolloutId ||
		adv.GetEvidence().GetDevicesExposed() < 50 || adv.GetEvidence().GetFailingDevices() == 0 {
		t.Fatalf("advisory %v", adv)
	}
	firstData, detected := adv.GetEvidence().GetFirstDataAt().AsTime(), adv.GetEvidence().GetDetectedAt().AsTime()
	t.Logf("advisory %s: %q; first data %s, detected %s (%s later)", adv.GetId(), adv.GetSummary(),
		firstData.Format(time.TimeOnly), detected.Format(time.TimeOnly), detected.Sub(firstData))
	if p := env.GetAudience(); p.GetTlp() != phxv1.Tlp_TLP_AMBER {
		t.Fatalf("audience %v", p)
	}
	if got := open(t, as(t, h, "microsoft"), &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ADVISORY},
		Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}}).next(); got.GetAdvisory().GetId() != adv.GetId() {
		t.Fatalf("the platform got %v", got)
	}

	// fabrikam is not in the audience: replaying everything up to a
	// rollout of its own published after the advisory, it sees none.
	f := open(t, as(t, h, "fabrikam"), &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
	mine := announce(t, as(t, h, "fabrikam"), rollout(uniq("r-sentinel"), "fabrikam-edr", green()))
	for {
		e := f.next()
		if e.GetAdvisory() != nil {
			t.Fatalf("fabrikam received advisory %s", e.GetAdvisory().GetId())
		}
		if e.GetRollout().GetRolloutId() == mine.RolloutId {
			break
		}
	}
}

// publishBootLoop publishes, as contoso through h, six minutes of cells
// from start: 2,000 devices on 291.1 keep checking in; 200 canary devices
// (named with prefix) take ro's content version in minute 2 and are never
// heard from again.
func publishBootLoop(t *testing.T, h *servertest.Hub, ro *phxv1.Rollout, start time.Time, prefix string) {
	t.Helper()
	ctx := testCtx(t)
	c, err := sdk.New(h.Addr, sdk.WithCertFiles(h.PKI.CACert(), h.PKI.OrgCert("contoso"), h.PKI.OrgKey("contoso")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := start
	b, err := cellbuilder.New(cellbuilder.WithClock(func() time.Time { return now }), cellbuilder.WithLateness(0),
		cellbuilder.WithAudience(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}))
	if err != nil {
		t.Fatal(err)
	}
	for m := range 6 {
		at := start.Add(time.Duration(m) * time.Minute)
		now = at
		for i := range 2200 {
			canary := i >= 2000
			if canary && m > 2 {
				continue // boot loop: silent
			}
			o := cellbuilder.Observation{Time: at.Add(time.Duration(i) * time.Millisecond), Device: fmt.Sprintf("%s-%d", prefix, i), Tenant: fmt.Sprintf("t-%d", i%40),
				Product: "contoso-av", ProductVersion: "7.16.18", ContentChannel: ro.ContentChannel, ContentVersion: ro.PreviousVersion,
				Ring: phxv1.Ring_RING_BROAD, OSFamily: "windows", OSBuild: "10.0.22631.3880", Arch: "x64", Region: "global"}
			if canary {
				o.Ring = phxv1.Ring_RING_CANARY
				if m >= 2 {
					o.ContentVersion, o.RolloutID = ro.ContentVersion, ro.RolloutId
				}
			}
			if err := b.Observe(o); err != nil {
				t.Fatal(err)
			}
		}
		now = at.Add(time.Minute)
		out, _ := b.Flush(now)
		if len(out) > 0 {
			if res, err := c.PublishSignals(ctx, out); err != nil || res.GetRejected() > 0 {
				t.Fatalf("minute %d: %v %v", m, res, err)
			}
		}
	}
}
