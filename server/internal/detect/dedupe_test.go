package detect

import (
	"math/rand/v2"
	"testing"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// boots returns canary cells in a boot loop during the windows of bad, and
// healthy otherwise, next to a healthy control.
func bootLoop(bad func(i int) bool) func(i int) []cellSpec {
	return func(i int) []cellSpec {
		s := 0.03
		if bad(i) {
			s = 1
		}
		return []cellSpec{
			{product: "agent", version: "v2", rollout: "r1", build: "b1", ring: phxv1.Ring_RING_CANARY, exposed: 200, silent: s, kernel: 5e-4},
			{product: "agent", version: "v1", build: "b1", ring: phxv1.Ring_RING_BROAD, exposed: 20000, silent: 0.03, kernel: 5e-4},
		}
	}
}

func TestDedupe(t *testing.T) {
	tests := []struct {
		name    string
		windows int
		cells   func(i int) []cellSpec
		wantAt  []int
	}{
		{name: "held while the boot loop lasts", windows: 60, cells: bootLoop(func(i int) bool { return i >= 3 }), wantAt: []int{3}},
		{name: "short relief does not clear", windows: 60, cells: bootLoop(func(i int) bool { return i < 10 || (i >= 15 && i < 30) }), wantAt: []int{0}},
		{name: "cleared, then fires again", windows: 60, cells: bootLoop(func(i int) bool { return i < 10 || i >= 30 }), wantAt: []int{0, 30}},
	}
	for n, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(4000+n), 19))
			d := New(Config{})
			d.ObserveRollout("vendor-a", rolloutMsg("r1", "agent", "v2", "v1", phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_CANARY), windowAt(0))
			var got []int
			for i := range tc.windows {
				for _, s := range tc.cells(i) {
					d.ObserveCell("vendor-a", s.draw(r, i))
				}
				for _, f := range d.Step(stepAt(i)) {
					if f.Advisory.GetKind() != phxv1.AdvisoryKind_ADVISORY_KIND_CATASTROPHE {
						t.Fatalf("unexpected %v: %s", f.Advisory.GetKind(), f.Advisory.GetSummary())
					}
					got = append(got, i)
				}
			}
			if len(got) != len(tc.wantAt) {
				t.Fatalf("advisories at %v, want %v", got, tc.wantAt)
			}
			for i := range got {
				if got[i] != tc.wantAt[i] {
					t.Fatalf("advisories at %v, want %v", got, tc.wantAt)
				}
			}
		})
	}
}

// TestRestartRoundTrip checks that a detector restored from the state of
// another, mid-stream, raises exactly the advisories the uninterrupted one
// raises after that point, none repeated.
func TestRestartRoundTrip(t *testing.T) {
	f := fleet{newFrom: 120, brokenRatio: 8, vendorBad: 1}
	const windows = 250
	ref := runFleet(t, New(Config{PlatformOrg: "platform"}), rand.New(rand.NewPCG(5, 23)), f, 0, windows)
	if len(ref) != 1 {
		t.Fatalf("reference run raised %d advisories, want one cross-vendor", len(ref))
	}
	tests := []struct {
		name string
		cut  int
	}{
		{name: "before any advisory", cut: 3},
		{name: "as the new build arrives", cut: 121},
		{name: "while the build rise is held", cut: 150},
		{name: "cells pending", cut: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(5, 23))
			d := New(Config{PlatformOrg: "platform"})
			cut := tc.cut
			var got []Finding
			if cut < 0 {
				// Cells of window 100 observed but not yet evaluated
				// when the state is saved.
				cut = 101
				got = runFleet(t, d, r, f, 0, 100)
				for _, pub := range []string{"vendor-a", "vendor-b"} {
					for _, s := range f.cells(100)[pub] {
						d.ObserveCell(pub, s.draw(r, 100))
					}
				}
			} else {
				got = runFleet(t, d, r, f, 0, cut)
			}
			b, err := d.MarshalState()
			if err != nil {
				t.Fatal(err)
			}
			d2 := New(Config{PlatformOrg: "platform"})
			if err := d2.Restore(b); err != nil {
				t.Fatal(err)
			}
			if tc.cut < 0 {
				got = append(got, d2.Step(stepAt(100))...)
			}
			got = append(got, runFleet(t, d2, r, f, cut, windows)...)
			if len(got) != len(ref) {
				t.Fatalf("got %d advisories, want %d", len(got), len(ref))
			}
			seen := map[string]bool{}
			for i := range ref {
				if got[i].Advisory.GetId() != ref[i].Advisory.GetId() || got[i].Advisory.GetSummary() != ref[i].Advisory.GetSummary() {
					t.Errorf("advisory %d: %s, want %s", i, got[i].Advisory.GetSummary(), ref[i].Advisory.GetSummary())
				}
				if seen[got[i].Key] {
					t.Errorf("advisory %s repeated", got[i].Key)
				}
				seen[got[i].Key] = true
			}
		})
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{name: "not json", in: "{"},
		{name: "wrong version", in: `{"version": 99}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := New(Config{}).Restore([]byte(tc.in)); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

// TestNormalOperation runs many healthy rollouts, with ring progression, a
// healthy OS update and evening switch-offs, and wants no advisory at all.
func TestNormalOperation(t *testing.T) {
	tests := []struct {
		name     string
		rollouts int
		windows  int
	}{
		{name: "40 rollouts x 10 h", rollouts: 40, windows: 600},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			total := 0
			for k := range tc.rollouts {
				r := rand.New(rand.NewPCG(uint64(6000+k), 29))
				d := New(Config{PlatformOrg: "platform"})
				d.ObserveRollout("vendor-a", rolloutMsg("r1", "agent", "v2", "v1", phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_CANARY), windowAt(0))
				d.ObserveRollout("platform", rolloutMsg("win", "windows", "10.0.1.4", "10.0.1.3", phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_BROAD), windowAt(0))
				for i := range tc.windows {
					silent := 0.03
					if i%600 > 400 {
						silent = 0.3
					}
					newExp := uint32(100 + 20*i) // the new version reaches more rings
					for _, b := range []string{"10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"} {
						oldExp := uint32(30000)
						if b == "10.0.1.4" {
							oldExp = uint32(200 + 40*i)
						}
						for _, s := range []cellSpec{
							{product: "agent", version: "v2", rollout: "r1", build: b, ring: phxv1.Ring_RING_EARLY, exposed: newExp, silent: silent, kernel: 5e-4, boot: 1e-4, hang: 3e-4, agent: 1e-3},
							{product: "agent", version: "v1", build: b, ring: phxv1.Ring_RING_BROAD, exposed: oldExp, silent: silent, kernel: 5e-4, boot: 1e-4, hang: 3e-4, agent: 1e-3},
						} {
							d.ObserveCell("vendor-a", s.draw(r, i))
						}
					}
					for _, f := range d.Step(stepAt(i)) {
						total++
						t.Errorf("run %d window %d: false advisory %v: %s", k, i, f.Advisory.GetKind(), f.Advisory.GetSummary())
					}
				}
			}
			t.Logf("%d false advisories over %d rollout-hours", total, tc.rollouts*tc.windows/60)
		})
	}
}

func BenchmarkObserveStep(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	d := New(Config{})
	d.ObserveRollout("vendor-a", rolloutMsg("r1", "agent", "v2", "v1", phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_CANARY), windowAt(0))
	regions := []string{"DE", "FR", "US", "JP", "BR"}
	var cells [][]*phxv1.HealthSignal
	for i := range 100 {
		var w []*phxv1.HealthSignal
		for _, bld := range []string{"b1", "b2", "b3", "b4"} {
			for _, reg := range regions {
				w = append(w,
					cellSpec{product: "agent", version: "v2", rollout: "r1", build: bld, region: reg, ring: phxv1.Ring_RING_EARLY, exposed: 2000, silent: 0.03, kernel: 5e-4, agent: 1e-3}.draw(r, i),
					cellSpec{product: "agent", version: "v1", build: bld, region: reg, ring: phxv1.Ring_RING_BROAD, exposed: 20000, silent: 0.03, kernel: 5e-4, agent: 1e-3}.draw(r, i))
			}
		}
		cells = append(cells, w)
	}
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		w := cells[i%len(cells)]
		for _, c := range w {
			c.WindowStart.Seconds = windowAt(i).Unix()
			d.ObserveCell("vendor-a", c)
		}
		n += len(w)
		d.Step(stepAt(i))
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "cells/s")
}
