package detect

import (
	"math/rand/v2"
	"testing"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

func TestCatastrophe(t *testing.T) {
	const (
		canary = phxv1.Ring_RING_CANARY
		early  = phxv1.Ring_RING_EARLY
		broad  = phxv1.Ring_RING_BROAD
	)
	tests := []struct {
		name    string
		windows int
		// cells returns the specs of window i.
		cells func(i int) []cellSpec
		// wantAt is the window whose evaluation must raise the one
		// catastrophe advisory, or -1 for none.
		wantAt    int
		wantBuild string
	}{
		{
			name:    "boot loop on canary from the first window",
			windows: 20,
			cells: func(i int) []cellSpec {
				return []cellSpec{
					{product: "agent", version: "v2", rollout: "r1", build: "b1", ring: canary, exposed: 120, silent: 1},
					{product: "agent", version: "v1", build: "b1", ring: broad, exposed: 5000, silent: 0.04, kernel: 1e-4},
				}
			},
			wantAt: 0, wantBuild: "b1",
		},
		{
			name:    "boot loop on one build only, growing exposure, no control",
			windows: 20,
			cells: func(i int) []cellSpec {
				return []cellSpec{
					{product: "agent", version: "v2", rollout: "r1", build: "b2", ring: canary, exposed: uint32(60 + 40*i), silent: 0.03},
					{product: "agent", version: "v2", rollout: "r1", build: "b3", ring: canary, exposed: uint32(60 + 40*i), silent: 0.9, boot: 0.1},
				}
			},
			wantAt: 0, wantBuild: "b3",
		},
		{
			name:    "small canary cells below the minimum are judged with the previous window",
			windows: 10,
			cells: func(i int) []cellSpec {
				return []cellSpec{
					{product: "agent", version: "v2", rollout: "r1", build: "b1", ring: canary, exposed: 30, silent: 1},
				}
			},
			wantAt: 1, wantBuild: "b1",
		},
		{
			name:    "normal silence, small cells, no control",
			windows: 600,
			cells: func(i int) []cellSpec {
				return []cellSpec{
					{product: "agent", version: "v2", rollout: "r1", build: "b1", ring: canary, exposed: 50, silent: 0.05},
					{product: "agent", version: "v2", rollout: "r1", build: "b2", ring: canary, exposed: 80, silent: 0.06, boot: 0.002},
				}
			},
			wantAt: -1,
		},
		{
			name:    "evening switch-off silences both versions alike",
			windows: 600,
			cells: func(i int) []cellSpec {
				s := 0.04
				if i > 300 {
					s = 0.35
				}
				return []cellSpec{
					{product: "agent", version: "v2", rollout: "r1", build: "b1", ring: early, exposed: 400, silent: s},
					{product: "agent", version: "v1", build: "b1", ring: broad, exposed: 20000, silent: s},
				}
			},
			wantAt: -1,
		},
		{
			name:    "zero exposed cells",
			windows: 5,
			cells: func(i int) []cellSpec {
				return []cellSpec{{product: "agent", version: "v2", rollout: "r1", build: "b1", ring: canary}}
			},
			wantAt: -1,
		},
	}
	for seed, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(seed), 7))
			d := New(Config{})
			d.ObserveRollout("vendor-a", rolloutMsg("r1", "agent", "v2", "v1", phxv1.RolloutState_ROLLOUT_ACTIVE, canary), windowAt(0))
			got := -1
			for i := range tc.windows {
				for _, s := range tc.cells(i) {
					d.ObserveCell("vendor-a", s.draw(r, i))
				}
				fs := d.Step(stepAt(i))
				for _, f := range fs {
					if f.Advisory.GetKind() != phxv1.AdvisoryKind_ADVISORY_KIND_CATASTROPHE {
						continue
					}
					if got >= 0 {
						t.Fatalf("second catastrophe advisory at window %d (first at %d): %s", i, got, f.Advisory.GetSummary())
					}
					got = i
					a := f.Advisory
					if a.GetRecommendation() != phxv1.Recommendation_RECOMMENDATION_PAUSE_ROLLOUT || a.GetSeverity() != phxv1.Severity_SEVERITY_CRITICAL {
						t.Errorf("advisory %v", a)
					}
					if a.GetRolloutId() != "r1" || f.Publisher != "vendor-a" {
						t.Errorf("rollout %q publisher %q", a.GetRolloutId(), f.Publisher)
					}
					ev := a.GetEvidence()
					if ev.GetDevicesExposed() < 50 || ev.GetRate() < 0.08 || ev.GetFailingDevices() > ev.GetDevicesExposed() {
						t.Errorf("evidence %v", ev)
					}
					if !ev.GetFirstDataAt().AsTime().Equal(windowAt(0)) || !ev.GetDetectedAt().AsTime().Equal(f.WindowEnd) || ev.GetDetectedAt().AsTime().After(stepAt(i)) {
						t.Errorf("times %v %v", ev.GetFirstDataAt().AsTime(), ev.GetDetectedAt().AsTime())
					}
					if len(a.GetCells()) == 0 || a.GetCells()[0].GetOsBuild() != tc.wantBuild {
						t.Errorf("cells %v, want build %s", a.GetCells(), tc.wantBuild)
					}
					if f.Audience.GetTlp() != phxv1.Tlp_TLP_AMBER || len(f.Audience.GetOrgs()) == 0 || f.Audience.GetOrgs()[0] != "vendor-a" {
						t.Errorf("audience %v", f.Audience)
					}
				}
			}
			if got != tc.wantAt {
				t.Fatalf("catastrophe advisory at window %d, want %d", got, tc.wantAt)
			}
		})
	}
}
