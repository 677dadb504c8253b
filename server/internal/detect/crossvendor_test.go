package detect

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// fleet simulates two vendors on OS builds b1, b2 and, from window
// newFrom, the new build nb deployed by the platform's rollout "win-upd".
// brokenRatio multiplies vendor-a's kernel crash rate on nb (its driver
// breaks there); vendorBad multiplies the kernel crash rate of vendor-a's
// own new content version on every build.
type fleet struct {
	newFrom     int
	brokenRatio float64
	vendorBad   float64
}

const nb = "10.0.2.100"

func (f fleet) cells(i int) map[string][]cellSpec {
	const k = 5e-4
	out := map[string][]cellSpec{}
	builds := []string{"10.0.1.10", "10.0.1.20"}
	if i >= f.newFrom {
		builds = append(builds, nb)
	}
	for _, b := range builds {
		ka := k
		if b == nb {
			ka = k * f.brokenRatio
		}
		exp := func(n uint32) uint32 {
			if b != nb {
				return n
			}
			return min(n, n*uint32(1+i-f.newFrom)/20)
		}
		out["vendor-a"] = append(out["vendor-a"],
			cellSpec{product: "agent-a", version: "v8", build: b, ring: phxv1.Ring_RING_BROAD, exposed: exp(20000), kernel: ka, agent: 1e-3, silent: 0.03},
			cellSpec{product: "agent-a", version: "v9", rollout: "a-r7", build: b, ring: phxv1.Ring_RING_EARLY, exposed: exp(2000), kernel: ka * f.vendorBad, agent: 1e-3, silent: 0.03},
		)
		out["vendor-b"] = append(out["vendor-b"],
			cellSpec{product: "agent-b", version: "5.1", build: b, ring: phxv1.Ring_RING_BROAD, exposed: exp(15000), kernel: k, hang: 3e-4, silent: 0.03},
			cellSpec{product: "agent-b", version: "5.2", rollout: "b-r3", build: b, ring: phxv1.Ring_RING_CANARY, exposed: exp(800), kernel: k, hang: 3e-4, silent: 0.03},
		)
	}
	return out
}

func runFleet(t *testing.T, d *Detector, r *rand.Rand, f fleet, from, to int) []Finding {
	t.Helper()
	var out []Finding
	for i := from; i < to; i++ {
		switch i {
		case 0:
			d.ObserveRollout("vendor-a", rolloutMsg("a-r7", "agent-a", "v9", "v8", phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_EARLY), windowAt(0))
		case 60:
			d.ObserveRollout("vendor-b", rolloutMsg("b-r3", "agent-b", "5.2", "5.1", phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_CANARY), windowAt(60))
		}
		if i == f.newFrom-5 {
			d.ObserveRollout("platform", rolloutMsg("win-upd", "windows", nb, "10.0.2.90", phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_BROAD), windowAt(i))
		}
		cs := f.cells(i)
		for _, pub := range []string{"vendor-a", "vendor-b"} {
			for _, s := range cs[pub] {
				d.ObserveCell(pub, s.draw(r, i))
			}
		}
		out = append(out, d.Step(stepAt(i))...)
	}
	return out
}

func TestCrossVendor(t *testing.T) {
	tests := []struct {
		name     string
		fleet    fleet
		windows  int
		wantKind phxv1.AdvisoryKind
		wantTop  string
	}{
		{name: "OS update breaks vendor-a's driver on the new build", fleet: fleet{newFrom: 180, brokenRatio: 8, vendorBad: 1}, windows: 300,
			wantKind: phxv1.AdvisoryKind_ADVISORY_KIND_CROSS_VENDOR, wantTop: "win-upd"},
		{name: "OS update triples vendor-a's crashes on the new build", fleet: fleet{newFrom: 180, brokenRatio: 3, vendorBad: 1}, windows: 400,
			wantKind: phxv1.AdvisoryKind_ADVISORY_KIND_CROSS_VENDOR, wantTop: "win-upd"},
		{name: "vendor-a's own content is bad: its regression, no cross-vendor", fleet: fleet{newFrom: 100000, brokenRatio: 1, vendorBad: 3}, windows: 200,
			wantKind: phxv1.AdvisoryKind_ADVISORY_KIND_REGRESSION, wantTop: "a-r7"},
		{name: "healthy OS update", fleet: fleet{newFrom: 120, brokenRatio: 1, vendorBad: 1}, windows: 400},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(3000+i), 17))
			d := New(Config{PlatformOrg: "platform"})
			fs := runFleet(t, d, r, tc.fleet, 0, tc.windows)
			if tc.wantKind == phxv1.AdvisoryKind_ADVISORY_KIND_UNSPECIFIED {
				if len(fs) != 0 {
					t.Fatalf("want no advisory, got %d: %s", len(fs), fs[0].Advisory.GetSummary())
				}
				return
			}
			if len(fs) != 1 {
				for _, f := range fs {
					t.Logf("%v %s", f.Advisory.GetKind(), f.Advisory.GetSummary())
				}
				t.Fatalf("want one advisory, got %d", len(fs))
			}
			f := fs[0]
			a := f.Advisory
			t.Logf("window %s: %s", f.WindowEnd.Sub(t0), a.GetSummary())
			if a.GetKind() != tc.wantKind || a.GetRolloutId() != tc.wantTop {
				t.Fatalf("got %v on %q, want %v on %q", a.GetKind(), a.GetRolloutId(), tc.wantKind, tc.wantTop)
			}
			if a.GetKind() == phxv1.AdvisoryKind_ADVISORY_KIND_CROSS_VENDOR {
				if len(f.Ranking) < 3 || f.Ranking[0].Publisher != "platform" {
					t.Errorf("ranking %+v", f.Ranking)
				}
				if a.GetRecommendation() != phxv1.Recommendation_RECOMMENDATION_INVESTIGATE || a.GetCells()[0].GetOsBuild() != nb {
					t.Errorf("advisory %v", a)
				}
				orgs := f.Audience.GetOrgs()
				if len(orgs) != 2 || orgs[0] != "platform" || orgs[1] != "vendor-a" {
					t.Errorf("audience %v", orgs)
				}
				if a.GetEvidence().GetRatioLowerBound() < 1.5 || a.GetEvidence().GetPValue() > 1e-4 {
					t.Errorf("evidence %v", a.GetEvidence())
				}
			}
		})
	}
}

// TestCrossVendorRiseAfterGap: the platform announced an update to build nb
// twice. Devices took the first one (win-1) and reported from nb for 40
// minutes, a vendor-a crash among them near the end, then none were left on
// nb for an hour; the second announcement (win-2) brought devices back to
// nb, and vendor-a's driver crashes there. The rise dates from the new data,
// not from the crash before the gap: the advisory blames win-2.
func TestCrossVendorRiseAfterGap(t *testing.T) {
	d := New(Config{PlatformOrg: "platform"})
	const control = "10.0.1.10"
	cell := func(build string, i int, exposed, crashes uint32) *phxv1.HealthSignal {
		return &phxv1.HealthSignal{Product: "agent-a", ContentVersion: "v8", OsFamily: "windows", OsBuild: build,
			Region: "global", Ring: phxv1.Ring_RING_BROAD, WindowStart: timestamppb.New(windowAt(i)), WindowSeconds: 60,
			DevicesActive: exposed, DevicesExposed: exposed, KernelCrashDevices: crashes}
	}
	var found []Finding
	for i := range 160 {
		switch i {
		case 0:
			d.ObserveRollout("platform", rolloutMsg("win-1", "windows", nb, control, phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_BROAD), windowAt(i))
		case 100:
			d.ObserveRollout("platform", rolloutMsg("win-2", "windows", nb, control, phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_BROAD), windowAt(i))
		}
		d.ObserveCell("vendor-a", cell(control, i, 20000, 1))
		switch {
		case i < 40:
			var x uint32
			if i == 37 {
				x = 1 // chance
			}
			d.ObserveCell("vendor-a", cell(nb, i, 150, x))
		case i >= 105:
			d.ObserveCell("vendor-a", cell(nb, i, 150, uint32(i%2))) // broken: a crash per 300 device-minutes
		}
		found = append(found, d.Step(stepAt(i))...)
	}
	if len(found) != 1 {
		for _, f := range found {
			t.Log(f.Advisory.GetSummary())
		}
		t.Fatalf("%d advisories, want 1", len(found))
	}
	f := found[0]
	t.Logf("window %s: %s", f.WindowEnd.Sub(t0), f.Advisory.GetSummary())
	if got := f.Advisory.GetRolloutId(); got != "win-2" {
		t.Errorf("advisory blames %q, want win-2 (the rise started after it)", got)
	}
}
