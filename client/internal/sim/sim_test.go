package sim

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk/cells"
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

// key of a cell for the shape tests.
type agg struct {
	exposed, silent, kernel int
	cells                   int
}

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

var _ = cells.CheckIn

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
