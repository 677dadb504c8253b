package detect

import (
	"math"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// t0 is the start of every simulated stream.
var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

// windowAt is the start of the i-th one-minute window.
func windowAt(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }

// stepAt is when the i-th window is evaluated.
func stepAt(i int) time.Time { return windowAt(i + 1).Add(30 * time.Second) }

// cellSpec describes one simulated cell before its counts are drawn.
type cellSpec struct {
	product, version, rollout, build, region string
	ring                                     phxv1.Ring
	exposed                                  uint32
	// per-device probabilities per window
	silent, kernel, boot, hang, agent float64
}

// binom draws Binomial(n, p): exactly for small n, by the normal
// approximation (rounded, clamped) for large n*p.
func binom(r *rand.Rand, n uint32, p float64) uint32 {
	if p <= 0 || n == 0 {
		return 0
	}
	if p >= 1 {
		return n
	}
	mean := float64(n) * p
	if mean < 30 {
		// Poisson-thinned inversion via waiting times.
		k := uint32(0)
		lq := math.Log1p(-p)
		i := 0.0
		for {
			u := r.Float64()
			i += math.Floor(math.Log(1-u)/lq) + 1
			if i > float64(n) {
				return k
			}
			k++
		}
	}
	v := mean + math.Sqrt(mean*(1-p))*r.NormFloat64()
	return uint32(math.Max(0, math.Min(float64(n), math.Round(v))))
}

func (s cellSpec) draw(r *rand.Rand, i int) *phxv1.HealthSignal {
	region := s.region
	if region == "" {
		region = "global"
	}
	return &phxv1.HealthSignal{
		Product:            s.product,
		ContentVersion:     s.version,
		RolloutId:          s.rollout,
		Ring:               s.ring,
		OsFamily:           "windows",
		OsBuild:            s.build,
		Region:             region,
		WindowStart:        timestamppb.New(windowAt(i)),
		WindowSeconds:      60,
		DevicesActive:      s.exposed,
		DevicesExposed:     s.exposed,
		DevicesSilent:      binom(r, s.exposed, s.silent),
		KernelCrashDevices: binom(r, s.exposed, s.kernel),
		BootFailureDevices: binom(r, s.exposed, s.boot),
		HangDevices:        binom(r, s.exposed, s.hang),
		AgentCrashDevices:  binom(r, s.exposed, s.agent),
	}
}

// rolloutMsg builds a rollout state.
func rolloutMsg(id, product, version, prev string, state phxv1.RolloutState, ring phxv1.Ring) *phxv1.Rollout {
	return &phxv1.Rollout{RolloutId: id, Product: product, ContentVersion: version, PreviousVersion: prev,
		State: state, CurrentRing: ring}
}

// kinds counts findings by advisory kind.
func kinds(fs []Finding) map[phxv1.AdvisoryKind]int {
	m := map[phxv1.AdvisoryKind]int{}
	for _, f := range fs {
		m[f.Advisory.GetKind()]++
	}
	return m
}
