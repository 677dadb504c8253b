package detect_test

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/phx-exchange/phx/internal/sim"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/detect"
)

// detectorPub is a sim.Publisher that feeds the detector directly, as the
// hub's detector runner does from the stored feed: cells advance the event
// time, rollouts are observed at the event time they arrive at, and the
// detector steps after every simulated minute.
type detectorPub struct {
	mu    sync.Mutex
	d     *detect.Detector
	now   time.Time // event time: the latest cell window end
	found []detect.Finding
}

func (p *detectorPub) Publish(_ context.Context, org string, cs []*phxv1.HealthSignal) (sim.Outcome, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.d.ObserveCell(org, c)
		end := c.GetWindowStart().AsTime().Add(time.Duration(c.GetWindowSeconds()) * time.Second)
		if end.After(p.now) {
			p.now = end
		}
	}
	return sim.Outcome{Accepted: len(cs)}, nil
}

func (p *detectorPub) Apply(_ context.Context, c sim.Change) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.d.ObserveRollout(c.Org, c.Rollout, p.now)
	return nil
}

func (p *detectorPub) step() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.now.IsZero() {
		p.found = append(p.found, p.d.Step(p.now)...)
	}
}

// scenarioRun is one scenario run through the detector.
type scenarioRun struct {
	Summary  *sim.Summary
	Findings []detect.Finding
	// Hours are the rollout-hours: the time each rollout was active.
	Hours float64
}

// runScenario simulates a scenario and feeds the detector with it.
func runScenario(t testing.TB, scenario string, seed uint64, start time.Time, dur time.Duration, p *sim.Params) scenarioRun {
	t.Helper()
	m, err := sim.New(sim.Config{Scenario: scenario, Seed: seed, Start: start, Duration: dur, Params: p})
	if err != nil {
		t.Fatal(err)
	}
	pub := &detectorPub{d: detect.New(detect.Config{PlatformOrg: sim.PlatformOrg})}
	var hours sim.RolloutHours
	s, err := sim.Run(context.Background(), m, pub, sim.RunOptions{OnMinute: func(min *sim.Minute, _ sim.Progress) {
		hours.Add(min)
		pub.step()
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Evaluate the last windows.
	pub.mu.Lock()
	pub.found = append(pub.found, pub.d.Step(pub.now.Add(time.Hour))...)
	pub.mu.Unlock()
	return scenarioRun{Summary: s, Findings: pub.found, Hours: hours.Total(s.End)}
}

var (
	scenarioDevices = flag.Int("scenario.devices", 100_000, "devices per vendor of TestScenarioDetection")
	normalHours     = flag.Float64("scenario.rollout-hours", 20, "rollout-hours of the normal scenario TestNormalNoFalseAdvisories runs")
)

func describe(f detect.Finding) string {
	a := f.Advisory
	return fmt.Sprintf("%s %s %s rollout=%q pub=%s: %s", f.WindowEnd.Format("15:04"), a.GetKind(), a.GetRecommendation(),
		a.GetRolloutId(), f.Publisher, a.GetSummary())
}

var scenarioStart = time.Date(2024, 7, 19, 4, 0, 0, 0, time.UTC)

// TestScenarioDetection runs the faulty scenarios of the simulator through
// the detector and checks what it raises against the ground truth.
func TestScenarioDetection(t *testing.T) {
	if raceEnabled {
		t.Skip("simulates a fleet; too slow under the race detector (scripts/test runs it without)")
	}
	p := sim.DefaultParams()
	p.Devices = *scenarioDevices
	tests := []struct {
		scenario string
		dur      time.Duration
		// within: the first advisory names the faulty rollout within
		// this many windows of the first faulty window (0: no advisory
		// is required, but any must name the faulty rollout).
		within int
	}{
		{sim.ChannelFile291, 90 * time.Minute, 2},
		{sim.PlatformConflict, 90 * time.Minute, 2},
		// A doubled crash rate needs exposure the default fleet only
		// reaches later: here no advisory may blame anything else.
		{sim.SlowRegression, 2 * time.Hour, 0},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			t.Parallel()
			r := runScenario(t, tt.scenario, 7, scenarioStart, tt.dur, &p)
			tr := r.Summary.Truth
			t.Logf("truth: rollout %s, fault %s, first faulty window %s; %.1f rollout-hours",
				tr.RolloutID, tr.FaultStart.Format("15:04"), tr.FirstFaultyWindow.Format("15:04"), r.Hours)
			for _, f := range r.Findings {
				t.Log(describe(f))
			}
			if tt.within > 0 && len(r.Findings) == 0 {
				t.Fatal("no advisory")
			}
			for i, f := range r.Findings {
				if got := f.Advisory.GetRolloutId(); got != tr.RolloutID {
					t.Errorf("advisory %d names rollout %q, want %q", i, got, tr.RolloutID)
				}
				if f.WindowEnd.Before(tr.FirstFaultyWindow) {
					t.Errorf("advisory %d at %s, before the first faulty window %s", i, f.WindowEnd, tr.FirstFaultyWindow)
				}
			}
			if tt.within > 0 {
				w := int(r.Findings[0].WindowEnd.Sub(tr.FirstFaultyWindow) / time.Minute)
				t.Logf("detected in %d window(s)", w)
				if w > tt.within {
					t.Errorf("first advisory %d windows after the first faulty window, want at most %d", w, tt.within)
				}
			}
		})
	}
}

// TestNormalNoFalseAdvisories runs the normal scenario (healthy rollouts
// of three vendors and a Windows update) with new seeds until it has
// covered -scenario.rollout-hours, and requires that the detector raise
// nothing. The figure in the README comes from
//
//	go test ./server/internal/detect -run TestNormalNoFalseAdvisories -v -timeout 3h -scenario.rollout-hours 10000
func TestNormalNoFalseAdvisories(t *testing.T) {
	if raceEnabled {
		t.Skip("simulates a fleet; too slow under the race detector (scripts/test runs it without)")
	}
	p := sim.DefaultParams()
	const dur = 4 * time.Hour
	var (
		mu       sync.Mutex
		hours    float64
		runs     int
		cells    int
		findings []detect.Finding
	)
	next := make(chan uint64)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for seed := range next {
				// Each run a new day and hour: the day/night rhythm differs.
				start := scenarioStart.Add(time.Duration(seed%400) * 25 * time.Hour)
				r := runScenario(t, sim.Normal, seed, start, dur, &p)
				mu.Lock()
				hours += r.Hours
				runs++
				cells += r.Summary.Cells
				findings = append(findings, r.Findings...)
				for _, f := range r.Findings {
					t.Logf("seed %d (start %s): false advisory: %s", seed, start.Format("2006-01-02 15:04"), describe(f))
				}
				if runs%25 == 0 {
					t.Logf("%d runs, %.0f rollout-hours, %d cells, %d advisories", runs, hours, cells, len(findings))
				}
				mu.Unlock()
			}
		})
	}
	for seed := uint64(1000); ; seed++ {
		mu.Lock()
		done := hours >= *normalHours
		mu.Unlock()
		if done || t.Failed() {
			break
		}
		next <- seed
	}
	close(next)
	wg.Wait()
	t.Logf("normal: %d runs of %v, %.0f rollout-hours, %d cells, %d advisories", runs, dur, hours, cells, len(findings))
	if len(findings) > 0 {
		t.Errorf("%d false advisories", len(findings))
	}
}

var northwindDevices = flag.Int("scenario.northwind", 0, "devices of northwind in TestSlowRegressionAtScale (0 skips it)")

// TestSlowRegressionAtScale measures the slow regression (kernel crashes
// doubled on one build) with a large northwind fleet: a doubling is found
// once about 34 crashes were expected on the new version and build (the
// sequential test's threshold at its share of alpha), so the windows it
// takes depend on the fleet. Run with
//
//	go test ./server/internal/detect -run TestSlowRegressionAtScale -v -timeout 1h -scenario.northwind 3000000
func TestSlowRegressionAtScale(t *testing.T) {
	if *northwindDevices == 0 {
		t.Skip("set -scenario.northwind to the fleet size")
	}
	p := sim.DefaultParams()
	p.DevicesOf = map[string]int{"northwind": *northwindDevices}
	r := runScenario(t, sim.SlowRegression, 7, scenarioStart, 150*time.Minute, &p)
	tr := r.Summary.Truth
	t.Logf("northwind %d devices: rollout %s, fault %s, first faulty window %s", *northwindDevices,
		tr.RolloutID, tr.FaultStart.Format("15:04"), tr.FirstFaultyWindow.Format("15:04"))
	for _, f := range r.Findings {
		t.Log(describe(f))
	}
	if len(r.Findings) == 0 {
		t.Fatal("no advisory")
	}
	f := r.Findings[0]
	w := int(f.WindowEnd.Sub(tr.FirstFaultyWindow) / time.Minute)
	t.Logf("first advisory %s after %d windows: %s", f.Advisory.GetKind(), w, f.Advisory.GetSummary())
	if f.Advisory.GetRolloutId() != tr.RolloutID || w > 60 {
		t.Errorf("first advisory names %q after %d windows, want %q within 60", f.Advisory.GetRolloutId(), w, tr.RolloutID)
	}
}
