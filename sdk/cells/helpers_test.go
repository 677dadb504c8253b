package cells_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk/cells"
)

// t0 starts a five-minute window.
var t0 = time.Date(2024, 7, 19, 4, 10, 0, 0, time.UTC)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *clock { return &clock{now: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// obs returns a check-in of contoso-av on Windows in DE at t.
func obs(t time.Time, device, tenant string) cells.Observation {
	return cells.Observation{
		Time: t, Device: device, Tenant: tenant,
		Product: "contoso-av", ProductVersion: "7.16.18",
		ContentChannel: "channel-291", ContentVersion: "291.1",
		Ring: phxv1.Ring_RING_CANARY, OSFamily: "windows", OSBuild: "10.0.22631.3880",
		Arch: "x64", Region: "DE",
	}
}

// fleet returns one check-in of each of n devices named prefix-i at t, in
// tenants tenant-(i mod tenants); edit changes each observation.
func fleet(t time.Time, prefix string, n, tenants int, edit func(i int, o *cells.Observation)) []cells.Observation {
	out := make([]cells.Observation, n)
	for i := range out {
		out[i] = obs(t, fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("tenant-%d", i%tenants))
		if edit != nil {
			edit(i, &out[i])
		}
	}
	return out
}

func observeAll(tb testing.TB, b *cells.Builder, os ...[]cells.Observation) {
	tb.Helper()
	for _, list := range os {
		for _, o := range list {
			if err := b.Observe(o); err != nil {
				tb.Fatalf("Observe(%s at %s): %v", o.Device, o.Time.Format(time.TimeOnly), err)
			}
		}
	}
}

func newBuilder(tb testing.TB, opts ...cells.Option) *cells.Builder {
	tb.Helper()
	b, err := cells.New(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// describe prints a cell on one line: region, window, OS build, content
// version and the non-zero counts.
func describe(s *phxv1.HealthSignal) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s/%ds %s %s active=%d", s.GetRegion(), s.GetWindowStart().AsTime().Format("15:04"),
		s.GetWindowSeconds(), s.GetOsBuild(), s.GetContentVersion(), s.GetDevicesActive())
	if s.GetDevicesExposed() != s.GetDevicesActive() {
		fmt.Fprintf(&b, " exposed=%d", s.GetDevicesExposed())
	}
	for _, c := range []struct {
		name string
		v    uint32
	}{
		{"silent", s.GetDevicesSilent()}, {"tenants", s.GetDistinctTenants()},
		{"kernel", s.GetKernelCrashDevices()}, {"boot", s.GetBootFailureDevices()},
		{"hang", s.GetHangDevices()}, {"agent", s.GetAgentCrashDevices()},
	} {
		if c.v != 0 {
			fmt.Fprintf(&b, " %s=%d", c.name, c.v)
		}
	}
	for _, tf := range s.GetTopFailures() {
		fmt.Fprintf(&b, " [%s/%s/%s:%d]", tf.GetBugcheckCode(), tf.GetModule(), tf.GetModuleVersion(), tf.GetDevices())
	}
	return b.String()
}

func describeAll(cs []*phxv1.HealthSignal) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = describe(c)
	}
	return out
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	g := append([]string(nil), got...)
	w := append([]string(nil), want...)
	sort.Strings(g)
	sort.Strings(w)
	if strings.Join(g, "\n") != strings.Join(w, "\n") {
		t.Errorf("%s:\ngot:\n  %s\nwant:\n  %s", what, strings.Join(g, "\n  "), strings.Join(w, "\n  "))
	}
}

// checkRelations checks the count relations the hub enforces.
func checkRelations(t *testing.T, cs []*phxv1.HealthSignal, minDevices, minTenants int) {
	t.Helper()
	ids := map[string]bool{}
	for _, s := range cs {
		d := describe(s)
		if ids[s.GetSignalId()] {
			t.Errorf("%s: signal_id %s twice", d, s.GetSignalId())
		}
		ids[s.GetSignalId()] = true
		if s.GetDevicesExposed() > s.GetDevicesActive() || s.GetDevicesSilent() > s.GetDevicesActive() {
			t.Errorf("%s: exposed or silent above active", d)
		}
		for _, v := range []uint32{s.GetDistinctTenants(), s.GetKernelCrashDevices(), s.GetBootFailureDevices(), s.GetHangDevices(), s.GetAgentCrashDevices()} {
			if v > s.GetDevicesExposed() {
				t.Errorf("%s: a count above exposed", d)
			}
		}
		if int(s.GetDevicesExposed()) < minDevices || int(s.GetDistinctTenants()) < minTenants {
			t.Errorf("%s: under the thresholds %d/%d", d, minDevices, minTenants)
		}
		if len(s.GetTopFailures()) > cells.MaxTopFailures {
			t.Errorf("%s: %d buckets", d, len(s.GetTopFailures()))
		}
		for _, tf := range s.GetTopFailures() {
			if int(tf.GetDevices()) < minDevices || tf.GetDevices() > s.GetDevicesExposed() {
				t.Errorf("%s: bucket of %d devices", d, tf.GetDevices())
			}
		}
		ws := s.GetWindowStart().AsTime()
		if ws.Unix()%int64(s.GetWindowSeconds()) != 0 {
			t.Errorf("%s: window not aligned", d)
		}
	}
}
