package noise

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func cell() *phxv1.HealthSignal {
	return &phxv1.HealthSignal{
		DevicesActive: 1000, DevicesExposed: 900, DevicesSilent: 40, DistinctTenants: 30,
		KernelCrashDevices: 60, BootFailureDevices: 55, HangDevices: 0, AgentCrashDevices: 7,
		TopFailures: []*phxv1.TopFailure{{BugcheckCode: "0x50", Devices: 60}},
	}
}

// TestTwoSidedGeometricMoments checks the sampler against the discrete
// Laplace distribution: mean 0, variance 2α/(1-α)², P(0) = (1-α)/(1+α).
func TestTwoSidedGeometricMoments(t *testing.T) {
	for _, eps := range []float64{0.1, 0.5, 1, 2} {
		rng := rand.New(rand.NewPCG(1, uint64(eps*1000)))
		const n = 200_000
		var sum, sq float64
		zeros := 0
		for range n {
			x := float64(TwoSidedGeometric(rng, eps))
			sum += x
			sq += x * x
			if x == 0 {
				zeros++
			}
		}
		alpha := math.Exp(-eps)
		wantVar := 2 * alpha / ((1 - alpha) * (1 - alpha))
		mean, variance := sum/n, sq/n-(sum/n)*(sum/n)
		// Bounds of about five standard errors.
		if se := math.Sqrt(wantVar / n); math.Abs(mean) > 5*se {
			t.Errorf("ε=%v: mean %.4f, want 0 ± %.4f", eps, mean, 5*se)
		}
		if math.Abs(variance-wantVar)/wantVar > 0.05 {
			t.Errorf("ε=%v: variance %.3f, want %.3f", eps, variance, wantVar)
		}
		wantZero := (1 - alpha) / (1 + alpha)
		if got := float64(zeros) / n; math.Abs(got-wantZero) > 5*math.Sqrt(wantZero*(1-wantZero)/n) {
			t.Errorf("ε=%v: P(0) = %.4f, want %.4f", eps, got, wantZero)
		}
	}
}

func TestApply(t *testing.T) {
	n, err := New(secret, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	a, b, other := cell(), cell(), cell()
	infoA := n.Apply("contoso/sig-1", a)
	n.Apply("contoso/sig-1", b)
	n.Apply("contoso/sig-2", other)
	if !proto.Equal(a, b) {
		t.Fatalf("the same cell got different noise:\n%v\n%v", a, b)
	}
	if proto.Equal(a, other) {
		t.Fatalf("two cells got the same noise: %v", a)
	}
	if proto.Equal(a, cell()) {
		t.Fatalf("no count changed: %v", a)
	}
	// Nine counts at ε=1 exceed the budget of 8: each gets 8/9.
	if len(infoA.Fields) != 9 || infoA.Mechanism != Mechanism || math.Abs(infoA.EpsilonPerCount-8.0/9) > 1e-12 || math.Abs(infoA.EpsilonCell-8) > 1e-9 {
		t.Fatalf("noise info %v", infoA)
	}
	// Under the budget, each count keeps ε.
	small := &phxv1.HealthSignal{DevicesActive: 100, DevicesExposed: 100, DistinctTenants: 10}
	if info := n.Apply("x/y", small); info.EpsilonPerCount != 1 || info.EpsilonCell != 8 {
		t.Fatalf("noise info %v", info)
	}
	// Another hub secret gives other noise.
	n2, _ := New([]byte("another secret of 32 bytes......"), 1, 8)
	c := cell()
	n2.Apply("contoso/sig-1", c)
	if proto.Equal(a, c) {
		t.Fatal("the noise does not depend on the hub's secret")
	}
}

func TestAddClamped(t *testing.T) {
	for _, tc := range []struct {
		v    uint32
		d    int64
		want uint32
	}{{5, -3, 2}, {5, -9, 0}, {0, -1, 0}, {math.MaxUint32 - 1, 5, math.MaxUint32}, {7, 0, 7}} {
		if got := addClamped(tc.v, tc.d); got != tc.want {
			t.Errorf("addClamped(%d, %d) = %d, want %d", tc.v, tc.d, got, tc.want)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		secret      []byte
		eps, budget float64
	}{
		{secret, -1, 8}, {secret, 1, -1}, {secret, math.Inf(1), 8}, {secret, math.NaN(), 8}, {[]byte("short"), 1, 8},
	} {
		if _, err := New(tc.secret, tc.eps, tc.budget); err == nil {
			t.Errorf("New(%d bytes, %v, %v) succeeded", len(tc.secret), tc.eps, tc.budget)
		}
	}
}
