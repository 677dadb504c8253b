package cells_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk/cells"
)

// TestMemoryBounded checks that state follows the devices and cells of the
// open windows and the horizon, not the number of observations or windows.
func TestMemoryBounded(t *testing.T) {
	const horizon = 3
	tests := []struct {
		name string
		// devices reporting in window w (at most 400)
		devices func(w int) []int
		// bound on tracked devices after any flush
		maxDevices int
	}{
		{"the same fleet every window", func(int) []int { return seq(0, 400) }, 400},
		{"a new fleet every window", func(w int) []int { return seq(w*100, w*100+100) }, 100 * (horizon + 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			b := newBuilder(t, cells.WithClock(clk.Now), cells.WithLateness(0), cells.WithSilentHorizon(horizon), cells.WithShards(4))
			regions := []string{"DE", "FR", "US", "JP"}
			var maxCells int
			const windows = 60
			for w := range windows {
				start := t0.Add(time.Duration(w) * time.Minute)
				clk.Set(start)
				for _, i := range tt.devices(w) {
					for k := range 5 { // five reports a window, some with a crash
						o := obs(start.Add(time.Duration(k)*time.Second), fmt.Sprintf("dev-%d", i), fmt.Sprintf("t%d", i%20))
						o.Region = regions[i%len(regions)]
						if k == 4 && i%3 == 0 {
							o.Event, o.BugcheckCode, o.Module = cells.KernelCrash, "0x50", "csagent.sys"
						}
						observeAll(t, b, []cells.Observation{o})
					}
				}
				b.Flush(start.Add(time.Minute))
				tr := b.Tracked()
				// Tenant pseudonyms are cached per shard.
				if tr.Devices > tt.maxDevices || tr.Cells > 4 || tr.Failures != 0 || tr.Buckets != 0 || tr.Tenants > 20*4 {
					t.Fatalf("window %d: tracked %+v", w, tr)
				}
				maxCells = max(maxCells, tr.Cells)
			}
			if maxCells != 4 {
				t.Errorf("at most %d cells tracked, want 4", maxCells)
			}
			// Nobody reports any more: after the horizon nothing is left.
			end := t0.Add(windows * time.Minute)
			clk.Set(end.Add(10 * time.Minute))
			b.Flush(end.Add(10 * time.Minute))
			if tr := b.Tracked(); tr != (cells.Tracked{}) {
				t.Errorf("after the horizon: tracked %+v", tr)
			}
			if s := b.Stats(); s.Accepted != uint64(5*len(tt.devices(0))*windows) {
				t.Errorf("accepted %d", s.Accepted)
			}
		})
	}
}

func seq(from, to int) []int {
	s := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// scenarioOpts configure a builder for scenario: a silent horizon of two
// windows, so that a device population that changes every minute stays
// small in a minute and is enough in five.
var scenarioOpts = []cells.Option{cells.WithSilentHorizon(2)}

// scenario feeds a builder observations that reach every roll-up level,
// with silent devices and failure buckets, over two five-minute windows
// starting at start, flushing after each minute, and returns the cells and
// the sum of the reports.
func scenario(tb testing.TB, b *cells.Builder, clk *clock, start time.Time) ([]*phxv1.HealthSignal, cells.Report) {
	tb.Helper()
	var all []*phxv1.HealthSignal
	var rep cells.Report
	for m := range 10 {
		at := start.Add(time.Duration(m) * time.Minute)
		if clk != nil {
			clk.Set(at)
		}
		var obs [][]cells.Observation
		// DE: 80 devices every minute but 8 fall silent from minute 3.
		obs = append(obs, fleet(at, "DEVICE-DE-7f3a", 80, 8, func(i int, o *cells.Observation) {
			o.Device = fmt.Sprintf("DEVICE-DE-7f3a-%04d", i)
			o.Tenant = fmt.Sprintf("TENANT-contoso-customer-%02d", i%8)
			if i < 8 && m >= 3 {
				o.Device = "" // marker: skip
			}
			if i >= 8 && i < 70 && m == 2 {
				o.Event, o.BugcheckCode, o.Module, o.ModuleVersion = cells.KernelCrash, "0x50", "csagent.sys", "7.16.18"
			}
		}))
		// FR and IT: too small alone, enough for europe.
		obs = append(obs, fleet(at, "DEVICE-FR", 30, 6, func(i int, o *cells.Observation) { o.Region = "FR"; o.Tenant = fmt.Sprintf("TENANT-fr-%d", i%6) }))
		obs = append(obs, fleet(at, "DEVICE-IT", 25, 6, func(i int, o *cells.Observation) { o.Region = "IT"; o.Tenant = fmt.Sprintf("TENANT-it-%d", i%6) }))
		// JP and US: too small for asia or north-america, enough together.
		obs = append(obs, fleet(at, "DEVICE-JP", 30, 6, func(_ int, o *cells.Observation) { o.Region = "JP"; o.ContentVersion = "290.4" }))
		obs = append(obs, fleet(at, "DEVICE-US", 30, 6, func(_ int, o *cells.Observation) { o.Region = "US"; o.ContentVersion = "290.4" }))
		// BR: 12 new devices a minute on the early ring: only five minutes
		// are enough.
		obs = append(obs, fleet(at, fmt.Sprintf("DEVICE-BR-%d", m), 12, 6, func(_ int, o *cells.Observation) {
			o.Region, o.Ring = "BR", phxv1.Ring_RING_EARLY
		}))
		// AU on arm64: two builds of 5 devices a minute, new each minute:
		// only the OS version over five minutes is enough.
		obs = append(obs, fleet(at, fmt.Sprintf("DEVICE-AU-%d", m), 10, 6, func(i int, o *cells.Observation) {
			o.Region, o.Arch = "AU", "arm64"
			if i%2 == 1 {
				o.OSBuild = "10.0.22631.4037"
			}
		}))
		// NZ on x86: 3 devices, never enough.
		obs = append(obs, fleet(at, "DEVICE-NZ", 3, 3, func(_ int, o *cells.Observation) { o.Region, o.Arch = "NZ", "x86" }))
		for _, list := range obs {
			for _, o := range list {
				if o.Device == "" {
					continue
				}
				if err := b.Observe(o); err != nil {
					tb.Fatal(err)
				}
			}
		}
		cs, r := b.Flush(at.Add(time.Minute + b.Lateness()))
		all = append(all, cs...)
		rep = addReports(rep, r)
	}
	return all, rep
}

func addReports(a, b cells.Report) cells.Report {
	a.Windows += b.Windows
	for i := range a.Emitted {
		a.Emitted[i].Cells += b.Emitted[i].Cells
		a.Emitted[i].Devices += b.Emitted[i].Devices
		a.RolledUp[i].Cells += b.RolledUp[i].Cells
		a.RolledUp[i].Devices += b.RolledUp[i].Devices
	}
	for i := range a.Suppressed {
		a.Suppressed[i].Cells += b.Suppressed[i].Cells
		a.Suppressed[i].Devices += b.Suppressed[i].Devices
	}
	a.Buckets.Emitted.Cells += b.Buckets.Emitted.Cells
	return a
}

// TestScenario checks that the scenario used by other tests reaches every
// level, and that the report's totals agree with Stats.
func TestScenario(t *testing.T) {
	clk := newClock(t0)
	b := newBuilder(t, append(scenarioOpts, cells.WithClock(clk.Now))...)
	got, rep := scenario(t, b, clk, t0)
	checkRelations(t, got, 50, 5)
	for l := range cells.NumLevels {
		if rep.Emitted[l].Cells == 0 {
			t.Errorf("nothing emitted at %s: %v", cells.Level(l), rep)
		}
	}
	if rep.Suppressed[cells.TooFewDevices].Cells == 0 || rep.Buckets.Emitted.Cells == 0 {
		t.Errorf("report %v", rep)
	}
	var silent uint32
	for _, s := range got {
		silent += s.GetDevicesSilent()
	}
	if silent == 0 {
		t.Error("no silent devices")
	}
	if s := b.Stats(); s.Totals.Cells() != len(got) || s.Totals.Windows != rep.Windows {
		t.Errorf("stats totals %v, flushes %v", s.Totals, rep)
	}
	for _, s := range got {
		t.Log(describe(s))
	}
}

// TestDeterministicIDs checks that signal ids depend on the cell key,
// window and source only: two builders with different tenant keys and hash
// seeds emit the same cells with the same ids.
func TestDeterministicIDs(t *testing.T) {
	run := func(opts ...cells.Option) []*phxv1.HealthSignal {
		clk := newClock(t0)
		b := newBuilder(t, append(append(opts, scenarioOpts...), cells.WithClock(clk.Now))...)
		got, _ := scenario(t, b, clk, t0)
		return got
	}
	a := run()
	b := run(cells.WithTenantKey([]byte("a fixed tenant key of 32 bytes..")), cells.WithShards(1))
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%d and %d cells", len(a), len(b))
	}
	ids := map[string]bool{}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			t.Errorf("cell %d differs:\n%v\n%v", i, a[i], b[i])
		}
		ids[a[i].GetSignalId()] = true
	}
	if len(ids) != len(a) {
		t.Errorf("%d distinct ids for %d cells", len(ids), len(a))
	}
	for _, s := range run(cells.WithSource("eu-1")) {
		if ids[s.GetSignalId()] {
			t.Errorf("another source, same id %s", s.GetSignalId())
		}
	}
}

// TestNoIdentifiers checks that no device or tenant id, nor its unkeyed
// SHA-256, appears in the emitted cells.
func TestNoIdentifiers(t *testing.T) {
	clk := newClock(t0)
	b := newBuilder(t, append(scenarioOpts, cells.WithClock(clk.Now))...)
	got, _ := scenario(t, b, clk, t0)
	if len(got) == 0 {
		t.Fatal("no cells")
	}
	var blob bytes.Buffer
	for _, s := range got {
		bin, err := proto.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		blob.Write(bin)
		blob.WriteString(protojson.Format(s))
		blob.WriteString(s.String())
	}
	text := blob.Bytes()
	var needles [][]byte
	for _, id := range []string{"DEVICE", "TENANT", "7f3a", "contoso-customer", "DEVICE-DE-7f3a-0001", "TENANT-contoso-customer-01", "tenant-0", "DEVICE-FR-3"} {
		sum := sha256.Sum256([]byte(id))
		needles = append(needles, []byte(id), sum[:8], []byte(hex.EncodeToString(sum[:])[:16]),
			[]byte(base64.StdEncoding.EncodeToString(sum[:])[:12]))
	}
	for _, n := range needles {
		if bytes.Contains(text, n) {
			t.Errorf("the cells contain %q", n)
		}
	}
}

// TestConcurrentObserve observes from many goroutines while others flush
// and read the state, and checks that nothing is lost: each device is
// counted once, and every refusal is a late observation.
func TestConcurrentObserve(t *testing.T) {
	t.Run("one window", func(t *testing.T) {
		clk := newClock(t0)
		b := newBuilder(t, cells.WithClock(clk.Now), cells.WithLateness(0), cells.WithShards(4))
		const goroutines, devices = 8, 600
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var readers sync.WaitGroup
		readers.Add(1)
		go func() { // flushes nothing (the window is open) and reads state
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if cs, _ := b.Flush(t0.Add(30 * time.Second)); len(cs) != 0 {
					t.Error("flushed an open window")
				}
				b.Tracked()
				b.Stats()
			}
		}()
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range devices {
					o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("dev-%d", (i*7+g)%devices), fmt.Sprintf("t%d", i%10))
					if g%2 == 0 {
						o.Event = cells.Hang
					}
					if err := b.Observe(o); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		readers.Wait()
		got, _ := b.Flush(t0.Add(time.Minute))
		if len(got) != 1 || got[0].GetDevicesActive() != devices || got[0].GetHangDevices() != devices || got[0].GetDistinctTenants() != 10 {
			t.Errorf("cells %v", describeAll(got))
		}
	})
	t.Run("windows closing meanwhile", func(t *testing.T) {
		var now atomic.Int64
		now.Store(t0.UnixNano())
		clock := func() time.Time { return time.Unix(0, now.Load()) }
		b := newBuilder(t, cells.WithClock(clock), cells.WithLateness(0), cells.WithShards(4))
		const goroutines, per = 6, 3000
		var wg sync.WaitGroup
		var late, ok atomic.Int64
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					o := obs(time.Time{}, fmt.Sprintf("dev-%d-%d", g, i%200), "t")
					switch err := b.Observe(o); {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, cells.ErrLate):
						late.Add(1)
					default:
						t.Error(err)
						return
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		flushes := 0
	loop:
		for {
			select {
			case <-done:
				break loop
			default:
			}
			now.Add(int64(20 * time.Second))
			b.Flush(clock())
			flushes++
		}
		s := b.Stats()
		if s.Accepted != uint64(ok.Load()) || s.Late != uint64(late.Load()) || ok.Load()+late.Load() != goroutines*per {
			t.Errorf("accepted %d late %d; observed %d and %d", s.Accepted, s.Late, ok.Load(), late.Load())
		}
		t.Logf("%d flushes, %d accepted, %d late", flushes, ok.Load(), late.Load())
	})
}
