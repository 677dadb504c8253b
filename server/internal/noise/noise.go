// Package noise perturbs the counts of health cells delivered to wide
// audiences (CERTs, public feeds) with discrete Laplace noise (DESIGN.md
// section 8).
//
// Each count of a cell changes by at most 1 when one device is added or
// removed, so two-sided geometric noise with parameter alpha = exp(-epsilon)
// makes each count epsilon-differentially private. The noise of a cell is
// drawn once, from a generator seeded by a keyed hash of the cell's identity
// and the hub's secret: the same cell read twice, by anyone, on any replica,
// on any day, gets the same noise, so repeated reads cannot average it away
// and reading again spends no budget. A cell's counts together spend at most
// the per-cell budget: when count × epsilon would exceed it, each count gets
// budget / count instead.
package noise

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Mechanism names the noise in envelopes.
const Mechanism = "discrete_laplace"

// Defaults.
const (
	DefaultEpsilon    = 1.0
	DefaultCellBudget = 8.0
)

// Noiser noises cells for wide audiences.
type Noiser struct {
	secret  []byte
	epsilon float64
	budget  float64
}

// New returns a Noiser with a hub-wide secret, the epsilon of each count
// and the budget of a cell (defaults when zero).
func New(secret []byte, epsilon, cellBudget float64) (*Noiser, error) {
	if epsilon == 0 {
		epsilon = DefaultEpsilon
	}
	if cellBudget == 0 {
		cellBudget = DefaultCellBudget
	}
	if !(epsilon > 0) || math.IsInf(epsilon, 0) || !(cellBudget > 0) || math.IsInf(cellBudget, 0) {
		return nil, fmt.Errorf("noise: epsilon (%v) and cell budget (%v) must be positive and finite", epsilon, cellBudget)
	}
	if len(secret) < 16 {
		return nil, fmt.Errorf("noise: secret of %d bytes; want at least 16", len(secret))
	}
	return &Noiser{secret: secret, epsilon: epsilon, budget: cellBudget}, nil
}

// Epsilon is the epsilon of each count before the cell budget applies.
func (n *Noiser) Epsilon() float64 { return n.epsilon }

// CellBudget is the most epsilon one cell's counts spend together.
func (n *Noiser) CellBudget() float64 { return n.budget }

// Apply noises the counts of s in place and describes what it did. id
// identifies the cell for good (e.g. "<publisher>/<signal_id>").
func (n *Noiser) Apply(id string, s *phxv1.HealthSignal) *phxv1.Noise {
	type count struct {
		field string
		v     *uint32
	}
	counts := []count{
		{"devices_active", &s.DevicesActive},
		{"devices_exposed", &s.DevicesExposed},
		{"devices_silent", &s.DevicesSilent},
		{"distinct_tenants", &s.DistinctTenants},
		{"kernel_crash_devices", &s.KernelCrashDevices},
		{"boot_failure_devices", &s.BootFailureDevices},
		{"hang_devices", &s.HangDevices},
		{"agent_crash_devices", &s.AgentCrashDevices},
	}
	for i, tf := range s.TopFailures {
		counts = append(counts, count{fmt.Sprintf("top_failures[%d].devices", i), &tf.Devices})
	}
	eps := n.epsilon
	if total := eps * float64(len(counts)); total > n.budget {
		eps = n.budget / float64(len(counts))
	}
	mac := hmac.New(sha256.New, n.secret)
	mac.Write([]byte(id))
	var seed [32]byte
	copy(seed[:], mac.Sum(nil))
	rng := rand.New(rand.NewChaCha8(seed))
	info := &phxv1.Noise{Mechanism: Mechanism, EpsilonPerCount: eps, EpsilonCell: eps * float64(len(counts))}
	for _, c := range counts {
		*c.v = addClamped(*c.v, TwoSidedGeometric(rng, eps))
		info.Fields = append(info.Fields, c.field)
	}
	return info
}

// TwoSidedGeometric draws from the discrete Laplace distribution with
// P(k) ∝ exp(-epsilon·|k|): the difference of two geometric variables.
func TwoSidedGeometric(rng *rand.Rand, epsilon float64) int64 {
	logAlpha := -epsilon // ln(exp(-epsilon))
	geo := func() int64 {
		u := 1 - rng.Float64() // (0, 1]
		return int64(math.Floor(math.Log(u) / logAlpha))
	}
	return geo() - geo()
}

func addClamped(v uint32, d int64) uint32 {
	r := int64(v) + d
	switch {
	case r < 0:
		return 0
	case r > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(r)
}
