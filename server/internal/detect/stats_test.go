package detect

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// nullRun simulates one stream under the null (same per-device failure rate
// on the new version and the control) and reports whether the sequential
// test and a naive fixed-sample test repeated every window rejected.
func nullRun(r *rand.Rand, windows int, alpha float64, ev, ec uint32, rate float64, growing bool) (seq, naive bool) {
	var s seqTest
	zAlpha := normalQuantile(1 - alpha)
	var cxv, cn, cvar float64
	for i := range windows {
		e := ev
		if growing {
			e = ev * uint32(1+i/50) // the ring grows every 50 windows
		}
		xv := float64(binom(r, e, rate))
		xc := float64(binom(r, ec, rate))
		s.update(xv, float64(e), xc, float64(ec), 1, int64(i+1))
		if s.logMix() >= math.Log(1/alpha) {
			seq = true
		}
		// Naive: one-sided normal test of the cumulative conditional
		// binomial count, looked at after every window.
		n := xv + xc
		p0 := float64(e) / float64(e+ec)
		cxv += xv
		cn += n * p0
		cvar += n * p0 * (1 - p0)
		if cvar > 0 && (cxv-0.5-cn)/math.Sqrt(cvar) >= zAlpha {
			naive = true
		}
	}
	return seq, naive
}

// normalQuantile inverts the standard normal distribution by bisection.
func normalQuantile(p float64) float64 {
	lo, hi := -10.0, 10.0
	for range 100 {
		mid := (lo + hi) / 2
		if 0.5*math.Erfc(-mid/math.Sqrt2) < p {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

func TestSequentialFalseAlarmRate(t *testing.T) {
	tests := []struct {
		name     string
		alpha    float64
		runs     int
		windows  int
		ev, ec   uint32
		rate     float64
		growing  bool
		naiveMin float64 // the naive test must exceed alpha by this factor
	}{
		{name: "canary vs broad, alpha 0.05", alpha: 0.05, runs: 2000, windows: 300, ev: 3000, ec: 30000, rate: 5e-4, naiveMin: 2},
		{name: "growing ring, alpha 0.05", alpha: 0.05, runs: 2000, windows: 300, ev: 1000, ec: 20000, rate: 1e-3, growing: true, naiveMin: 2},
		{name: "default alpha 0.001", alpha: 0.001, runs: 2000, windows: 300, ev: 3000, ec: 30000, rate: 5e-4, naiveMin: 5},
		{name: "rare failures, alpha 0.01", alpha: 0.01, runs: 2000, windows: 300, ev: 5000, ec: 50000, rate: 2e-5, naiveMin: 2},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(1000+i), 11))
			var seqN, naiveN int
			for range tc.runs {
				s, n := nullRun(r, tc.windows, tc.alpha, tc.ev, tc.ec, tc.rate, tc.growing)
				if s {
					seqN++
				}
				if n {
					naiveN++
				}
			}
			seqRate := float64(seqN) / float64(tc.runs)
			naiveRate := float64(naiveN) / float64(tc.runs)
			// Ville: P(ever reject) <= alpha; allow a 3-sigma binomial
			// margin for the finite number of runs.
			bound := tc.alpha + 3*math.Sqrt(tc.alpha*(1-tc.alpha)/float64(tc.runs))
			t.Logf("alpha %.3g: sequential false alarms %d/%d = %.4f (bound %.4f); naive test checked every window %d/%d = %.4f",
				tc.alpha, seqN, tc.runs, seqRate, bound, naiveN, tc.runs, naiveRate)
			if seqRate > bound {
				t.Errorf("sequential false-alarm rate %.4f above %.4f", seqRate, bound)
			}
			if naiveRate < tc.naiveMin*tc.alpha {
				t.Errorf("naive rate %.4f, expected it above %.1f x alpha", naiveRate, tc.naiveMin)
			}
		})
	}
}

// detectionWindow runs one rollout through a detector with default
// settings: the new version on build b1 fails at ratio times the control's
// kernel crash rate; builds b2 and b3 are healthy. It returns the window of
// the regression advisory, or -1.
func detectionWindow(r *rand.Rand, ratio float64, windows int) int {
	d := New(Config{})
	d.ObserveRollout("vendor-a", rolloutMsg("r1", "agent", "v2", "v1", phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.Ring_RING_EARLY), windowAt(0))
	const base = 5e-4
	for i := range windows {
		for _, b := range []string{"b1", "b2", "b3"} {
			k := base
			if b == "b1" {
				k = base * ratio
			}
			specs := []cellSpec{
				{product: "agent", version: "v2", rollout: "r1", build: b, ring: phxv1.Ring_RING_EARLY, exposed: 3000, kernel: k, hang: 2e-4, agent: 1e-3, silent: 0.03},
				{product: "agent", version: "v1", build: b, ring: phxv1.Ring_RING_BROAD, exposed: 30000, kernel: base, hang: 2e-4, agent: 1e-3, silent: 0.03},
			}
			for _, s := range specs {
				d.ObserveCell("vendor-a", s.draw(r, i))
			}
		}
		for _, f := range d.Step(stepAt(i)) {
			if f.Advisory.GetKind() == phxv1.AdvisoryKind_ADVISORY_KIND_REGRESSION {
				return i
			}
		}
	}
	return -1
}

func TestSequentialPower(t *testing.T) {
	tests := []struct {
		name     string
		ratio    float64
		runs     int
		within   int     // windows
		minPower float64 // share of runs detected within
	}{
		{name: "kernel crashes doubled", ratio: 2, runs: 200, within: 60, minPower: 0.9},
		{name: "kernel crashes x10", ratio: 10, runs: 200, within: 5, minPower: 0.99},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(2000+i), 13))
			var at []int
			hit := 0
			for range tc.runs {
				w := detectionWindow(r, tc.ratio, tc.within)
				if w >= 0 {
					hit++
					at = append(at, w)
				}
			}
			slices.Sort(at)
			power := float64(hit) / float64(tc.runs)
			med := -1
			if len(at) > 0 {
				med = at[len(at)/2]
			}
			t.Logf("ratio %.0f: detected within %d windows in %d/%d runs (power %.3f), median window %d",
				tc.ratio, tc.within, hit, tc.runs, power, med)
			if power < tc.minPower {
				t.Errorf("power %.3f below %.2f", power, tc.minPower)
			}
		})
	}
}

func TestRatioLowerBound(t *testing.T) {
	tests := []struct {
		name           string
		xv, ev, xc, ec float64
		wantAtMost     float64
		wantAtLeast    float64
	}{
		{name: "no failures", xv: 0, ev: 1000, xc: 10, ec: 1000, wantAtMost: 0},
		{name: "no control exposure", xv: 5, ev: 1000, xc: 0, ec: 0, wantAtMost: 0},
		{name: "equal rates", xv: 100, ev: 10000, xc: 1000, ec: 100000, wantAtMost: 1},
		{name: "ratio 2 with much data", xv: 2000, ev: 100000, xc: 10000, ec: 1000000, wantAtLeast: 1.6, wantAtMost: 2},
		{name: "ratio 10", xv: 100, ev: 1000, xc: 100, ec: 10000, wantAtLeast: 5, wantAtMost: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lb := ratioLowerBound(tc.xv, tc.ev, tc.xc, tc.ec, 0.001)
			if lb > tc.wantAtMost || lb < tc.wantAtLeast || math.IsNaN(lb) {
				t.Fatalf("lower bound %v, want in [%v, %v]", lb, tc.wantAtLeast, tc.wantAtMost)
			}
		})
	}
}
