package sim

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/server/servertest"
)

// testStart is a fixed start, so that runs compare equal.
var testStart = time.Date(2024, 7, 19, 4, 0, 0, 0, time.UTC)

// small returns fast parameters: a small fleet, rollouts early and short,
// a low minimum cohort so that cells stay at the build level.
func small(devices int) *Params {
	p := DefaultParams()
	p.Devices = devices
	p.RolloutStart, p.Stagger = 10*time.Minute, 2*time.Minute
	p.Bake = [4]time.Duration{5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 20 * time.Minute}
	p.AdoptSpread = 3 * time.Minute
	p.MinDevices, p.MinTenants = 5, 2
	return &p
}

// simulate runs a model to its end into a recorder.
func simulate(t *testing.T, cfg Config) (*Recorder, *Summary) {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := &Recorder{}
	s, err := Run(context.Background(), m, rec, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range s.Orgs {
		if o.Refused != 0 {
			t.Errorf("%s: %d observations refused by the builder", o.Org, o.Refused)
		}
	}
	return rec, s
}

func TestDeterminism(t *testing.T) {
	cfg := func(seed uint64) Config {
		return Config{Scenario: ChannelFile291, Seed: seed, Start: testStart, Duration: 30 * time.Minute, Params: small(1500)}
	}
	a, sa := simulate(t, cfg(7))
	b, sb := simulate(t, cfg(7))
	c, _ := simulate(t, cfg(8))
	tests := []struct {
		name string
		x, y *Recorder
		same bool
	}{
		{"same seed", a, b, true},
		{"other seed", a, c, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			same := true
			for _, org := range []string{"contoso", "fabrikam", "northwind"} {
				xs, ys := tt.x.Cells[org], tt.y.Cells[org]
				if len(xs) == 0 {
					t.Fatalf("%s: no cells", org)
				}
				if len(xs) != len(ys) {
					same = false
					continue
				}
				for i := range xs {
					if !proto.Equal(xs[i], ys[i]) {
						same = false
					}
				}
			}
			if len(tt.x.Changes) != len(tt.y.Changes) {
				same = false
			}
			if same != tt.same {
				t.Errorf("cells equal: %v, want %v", same, tt.same)
			}
		})
	}
	if ta, tb := sa.Truth, sb.Truth; ta.FaultStart != tb.FaultStart || ta.FirstFaultyWindow != tb.FirstFaultyWindow || ta.RolloutID != tb.RolloutID || ta.FaultStart.IsZero() {
		t.Errorf("ground truth differs or is empty:\n%+v\n%+v", ta, tb)
	}
}

// TestPrivacy checks that no device or tenant id, nor any part of one,
// leaves the builders.
func TestPrivacy(t *testing.T) {
	rec, _ := simulate(t, Config{Scenario: PlatformConflict, Seed: 3, Start: testStart, Duration: 20 * time.Minute, Params: small(1000)})
	n := 0
	for org, cs := range rec.Cells {
		for _, c := range cs {
			b, err := protojson.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			for _, bad := range []string{"-device-", "-tenant-", org + "-d", org + "-t"} {
				if strings.Contains(s, bad) {
					t.Fatalf("%s cell carries %q: %s", org, bad, s)
				}
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no cells")
	}
}

// agg sums counts of cells for the shape tests.
type agg struct {
	exposed, silent, kernel int
	cells                   int
}

func (a agg) kernelRate() float64  { return float64(a.kernel) / float64(max(a.exposed-a.silent, 1)) }
func (a agg) silentShare() float64 { return float64(a.silent) / float64(max(a.exposed, 1)) }

func sum(cs []*phxv1.HealthSignal, keep func(*phxv1.HealthSignal) bool) agg {
	var a agg
	for _, c := range cs {
		if keep(c) {
			a.exposed += int(c.GetDevicesExposed())
			a.silent += int(c.GetDevicesSilent())
			a.kernel += int(c.GetKernelCrashDevices())
			a.cells++
		}
	}
	return a
}

// BenchmarkSimulatedHour runs one simulated hour of the default fleet
// (60,000 devices) into a recorder that keeps no cells.
func BenchmarkSimulatedHour(b *testing.B) {
	for range b.N {
		m, err := New(Config{Scenario: ChannelFile291, Seed: 1, Start: testStart, Duration: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Run(context.Background(), m, &Recorder{Discard: true}, RunOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func inBuilds(c *phxv1.HealthSignal, builds ...string) bool {
	for _, b := range builds {
		if c.GetOsBuild() == b {
			return true
		}
	}
	return false
}

func after(t time.Time) func(*phxv1.HealthSignal) bool {
	return func(c *phxv1.HealthSignal) bool { return !c.GetWindowStart().AsTime().Before(t) }
}

func and(fs ...func(*phxv1.HealthSignal) bool) func(*phxv1.HealthSignal) bool {
	return func(c *phxv1.HealthSignal) bool {
		for _, f := range fs {
			if !f(c) {
				return false
			}
		}
		return true
	}
}

func version(v string) func(*phxv1.HealthSignal) bool {
	return func(c *phxv1.HealthSignal) bool { return c.GetContentVersion() == v }
}

func onBuilds(bs ...string) func(*phxv1.HealthSignal) bool {
	return func(c *phxv1.HealthSignal) bool { return inBuilds(c, bs...) }
}

// windowShares returns, per one-minute window, the silent share of the
// cells that keep selects.
func windowShares(cs []*phxv1.HealthSignal, keep func(*phxv1.HealthSignal) bool) map[time.Time]float64 {
	by := map[time.Time]*agg{}
	for _, c := range cs {
		if c.GetWindowSeconds() != 60 || !keep(c) {
			continue
		}
		w := c.GetWindowStart().AsTime()
		if by[w] == nil {
			by[w] = &agg{}
		}
		by[w].exposed += int(c.GetDevicesExposed())
		by[w].silent += int(c.GetDevicesSilent())
	}
	out := map[time.Time]float64{}
	for w, a := range by {
		out[w] = a.silentShare()
	}
	return out
}

func TestScenarios(t *testing.T) {
	quiet := func(devices int, kernel float64) *Params {
		p := small(devices)
		p.Noise, p.Rhythm = 0, 0
		p.Rates.KernelCrash = kernel
		return p
	}
	tests := []struct {
		name     string
		scenario string
		params   *Params
		duration time.Duration
		check    func(t *testing.T, rec *Recorder, s *Summary)
	}{
		{"boot loop silences the canary ring on the affected builds", ChannelFile291, small(3000), 40 * time.Minute, func(t *testing.T, rec *Recorder, s *Summary) {
			cs := rec.Cells["contoso"]
			canary := func(c *phxv1.HealthSignal) bool {
				return c.GetRing() == phxv1.Ring_RING_CANARY || c.GetRing() == phxv1.Ring_RING_INTERNAL
			}
			peak := 0.0
			for _, v := range windowShares(cs, and(version("291.2"), canary, onBuilds(BootLoopBuilds...))) {
				peak = max(peak, v)
			}
			if peak < 0.95 {
				t.Errorf("silent share of exposed canary devices on the affected builds peaks at %.2f, want ~1", peak)
			}
			if a := sum(cs, and(version("291.2"), onBuilds(RegressionBuild))); a.exposed == 0 || a.silentShare() > 0.05 {
				t.Errorf("unaffected build: %d of %d exposed silent", a.silent, a.exposed)
			}
			if a := sum(cs, and(version("291.1"))); a.silentShare() > 0.05 {
				t.Errorf("previous version: %d of %d silent", a.silent, a.exposed)
			}
			if s.Truth.Devices == 0 {
				t.Error("no device reached by the fault")
			}
		}},
		{"slow regression doubles kernel crashes on one build", SlowRegression, quiet(4000, 0.6), 70 * time.Minute, func(t *testing.T, rec *Recorder, s *Summary) {
			cs := rec.Cells["northwind"]
			since := after(s.Truth.Release)
			bad := sum(cs, and(since, version("5.32"), onBuilds(RegressionBuild)))
			good := sum(cs, and(since, version("5.31"), onBuilds(RegressionBuild)))
			if r := bad.kernelRate() / good.kernelRate(); r < 1.6 || r > 2.5 {
				t.Errorf("kernel crash rate ratio on %s: %.2f (%+v vs %+v), want ~2", RegressionBuild, r, bad, good)
			}
			others := []string{"10.0.22631.3880", "10.0.22631.4037", "10.0.19045.4651"}
			bad = sum(cs, and(since, version("5.32"), onBuilds(others...)))
			good = sum(cs, and(since, version("5.31"), onBuilds(others...)))
			if r := bad.kernelRate() / good.kernelRate(); r < 0.75 || r > 1.33 {
				t.Errorf("kernel crash rate ratio on other builds: %.2f, want ~1", r)
			}
		}},
		{"platform update breaks one vendor's driver on one build", PlatformConflict, quiet(3000, 0.1), 70 * time.Minute, func(t *testing.T, rec *Recorder, s *Summary) {
			since := after(s.Truth.Release)
			for _, org := range []string{"contoso", "fabrikam", "northwind"} {
				cs := rec.Cells[org]
				updated := sum(cs, and(since, onBuilds(UpdateTo)))
				before := sum(cs, and(since, onBuilds(UpdateFrom)))
				r := updated.kernelRate() / before.kernelRate()
				if org == "fabrikam" && r < 3 {
					t.Errorf("fabrikam: kernel crash ratio %s vs %s %.2f, want a rise", UpdateTo, UpdateFrom, r)
				}
				if org != "fabrikam" && (r < 0.6 || r > 1.6) {
					t.Errorf("%s: kernel crash ratio %s vs %s %.2f, want ~1", org, UpdateTo, UpdateFrom, r)
				}
			}
			early := sum(rec.Cells["fabrikam"], func(c *phxv1.HealthSignal) bool { return c.GetWindowStart().AsTime().Before(s.Truth.Release) })
			if r := early.kernelRate() / (0.1 / 60); r > 1.6 {
				t.Errorf("fabrikam before the update: kernel crash rate %.2f × baseline", r)
			}
		}},
		{"normal rollouts stay at baseline", Normal, quiet(3000, 0.1), 60 * time.Minute, func(t *testing.T, rec *Recorder, s *Summary) {
			if s.Truth.Faulty || s.Truth.RolloutID != "" || !s.Truth.FaultStart.IsZero() {
				t.Errorf("normal run has a fault: %+v", s.Truth)
			}
			for _, v := range Vendors() {
				cs := rec.Cells[v.Org]
				all := sum(cs, func(*phxv1.HealthSignal) bool { return true })
				if r := all.kernelRate() / (0.1 / 60); r < 0.7 || r > 1.3 {
					t.Errorf("%s: kernel crash rate %.2f × baseline", v.Org, r)
				}
				if all.silentShare() > 0.02 {
					t.Errorf("%s: silent share %.3f", v.Org, all.silentShare())
				}
				next := sum(cs, version(v.Next))
				prev := sum(cs, version(v.Previous))
				if r := next.kernelRate() / prev.kernelRate(); next.exposed == 0 || r < 0.6 || r > 1.6 {
					t.Errorf("%s: kernel crash ratio new/old %.2f (%+v vs %+v)", v.Org, r, next, prev)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, s := simulate(t, Config{Scenario: tt.scenario, Seed: 11, Start: testStart, Duration: tt.duration, Params: tt.params})
			tr := s.Truth
			if tt.scenario != Normal {
				if !tr.Faulty || tr.RolloutID == "" || tr.FaultStart.Before(tr.Release) || tr.FirstFaultyWindow.Before(tr.FaultStart.Truncate(time.Minute)) {
					t.Errorf("ground truth: %+v", tr)
				}
				found := false
				for _, r := range s.Rollouts {
					found = found || r.GetRolloutId() == tr.RolloutID
				}
				if !found {
					t.Errorf("faulty rollout %s is not among the rollouts", tr.RolloutID)
				}
			}
			tt.check(t, rec, s)
		})
	}
}

// TestHubTakesEveryCell publishes a short run to a real hub, each vendor as
// itself, and checks that the hub rejects no cell and knows every rollout.
func TestHubTakesEveryCell(t *testing.T) {
	h := servertest.Start(t)
	m, err := New(Config{Scenario: ChannelFile291, Seed: 5, Start: time.Now().Add(-40 * time.Minute), Duration: 30 * time.Minute, Params: func() *Params {
		p := small(2500)
		p.MinDevices, p.MinTenants = 50, 5 // the hub's defaults
		return p
	}()})
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*sdk.Client{}
	for _, org := range m.Orgs() {
		c, err := sdk.New(h.Addr, sdk.WithCertFiles(h.PKI.CACert(), h.PKI.OrgCert(org), h.PKI.OrgKey(org)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[org] = c
	}
	ctx := context.Background()
	s, err := Run(ctx, m, NewHub(clients), RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Rejected != 0 || s.Accepted == 0 || s.Accepted+s.Duplicates != s.Cells {
		t.Fatalf("cells %d: accepted %d, duplicates %d, rejected %d (%s)", s.Cells, s.Accepted, s.Duplicates, s.Rejected, s.FirstRejection)
	}
	t.Logf("%d cells accepted, %d rollout changes, %d observations", s.Accepted, s.Changes, s.Observations)
	for _, r := range s.Rollouts {
		got, err := clients["contoso"].GetRollout(ctx, r.GetRolloutId())
		if err != nil {
			t.Errorf("rollout %s: %v", r.GetRolloutId(), err)
			continue
		}
		if got.GetCurrentRing() != r.GetCurrentRing() || got.GetState() != r.GetState() {
			t.Errorf("rollout %s on the hub: %v %v, want %v %v", r.GetRolloutId(), got.GetCurrentRing(), got.GetState(), r.GetCurrentRing(), r.GetState())
		}
	}
}

func TestRolloutHours(t *testing.T) {
	at := func(m int) time.Time { return testStart.Add(time.Duration(m) * time.Minute) }
	r := func(id string, s phxv1.RolloutState) *phxv1.Rollout { return &phxv1.Rollout{RolloutId: id, State: s} }
	var h RolloutHours
	h.Add(&Minute{Window: at(0), Changes: []Change{{Announce: true, Rollout: r("a", phxv1.RolloutState_ROLLOUT_ACTIVE)}}})
	h.Add(&Minute{Window: at(30), Changes: []Change{
		{Announce: true, Rollout: r("b", phxv1.RolloutState_ROLLOUT_ACTIVE)},
		{Rollout: r("a", phxv1.RolloutState_ROLLOUT_ACTIVE)}, // progress: still active
	}})
	h.Add(&Minute{Window: at(60), Changes: []Change{{Rollout: r("a", phxv1.RolloutState_ROLLOUT_COMPLETED)}}})
	h.Add(&Minute{Window: at(70), Changes: []Change{{Rollout: r("a", phxv1.RolloutState_ROLLOUT_COMPLETED)}}}) // counted once
	// a: 0 to 60 min; b: 30 min to the end at 120.
	if got := h.Total(at(120)); got != 2.5 {
		t.Errorf("Total = %v rollout-hours, want 2.5", got)
	}
}
