package cells_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk/cells"
)

// TestDistinctCounts checks that every count is of distinct devices.
func TestDistinctCounts(t *testing.T) {
	m := time.Minute
	crash := func(t time.Time, dev string, ev cells.Event) cells.Observation {
		o := obs(t, dev, "tenant-0")
		o.Event = ev
		return o
	}
	tests := []struct {
		name  string
		extra []cells.Observation // on top of 60 check-ins in 6 tenants
		want  []string
	}{
		{"check-ins only", nil, []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6"}},
		{"five crashes of one device count once", []cells.Observation{
			crash(t0, "dev-0", cells.KernelCrash), crash(t0.Add(10*time.Second), "dev-0", cells.KernelCrash),
			crash(t0.Add(20*time.Second), "dev-0", cells.KernelCrash), crash(t0.Add(30*time.Second), "dev-0", cells.KernelCrash),
			crash(t0.Add(40*time.Second), "dev-0", cells.KernelCrash),
		}, []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6 kernel=1"}},
		{"each kind counted apart", []cells.Observation{
			crash(t0, "dev-1", cells.KernelCrash), crash(t0, "dev-1", cells.BootFailure),
			crash(t0, "dev-2", cells.BootFailure), crash(t0, "dev-3", cells.Hang), crash(t0, "dev-3", cells.Hang),
			crash(t0, "dev-4", cells.AgentCrash), crash(t0, "dev-5", cells.AgentCrash),
		}, []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6 kernel=1 boot=2 hang=1 agent=2"}},
		{"a crash report is a check-in", []cells.Observation{
			crash(t0, "new-1", cells.KernelCrash), crash(t0, "new-2", cells.Hang),
		}, []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=62 tenants=6 kernel=1 hang=1"}},
		{"a device that changed content version is in both cells", func() []cells.Observation {
			return fleet(t0.Add(30*time.Second), "dev", 55, 6, func(_ int, o *cells.Observation) { o.ContentVersion = "291.2" })
		}(), []string{
			"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6",
			"DE 04:10/60s 10.0.22631.3880 291.2 active=55 tenants=6",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder(t, cells.WithClock(newClock(t0).Now), cells.WithLateness(0))
			observeAll(t, b, fleet(t0, "dev", 60, 6, nil), tt.extra)
			got, rep := b.Flush(t0.Add(m))
			sameLines(t, "cells", describeAll(got), tt.want)
			checkRelations(t, got, 50, 5)
			if rep.Windows != 1 || rep.Cells() != len(tt.want) {
				t.Errorf("report %v", rep)
			}
		})
	}
}

// TestTenants checks that tenants are counted distinct through their
// pseudonyms, whatever the key, and that too few tenants suppress a cell.
func TestTenants(t *testing.T) {
	key1 := []byte("0123456789abcdef0123456789abcdef")
	key2 := []byte("another key of at least 16 bytes")
	tests := []struct {
		name       string
		key        []byte
		tenants    int
		tenantName func(i int) string
		want       []string
		suppressed cells.Tally
	}{
		{"five tenants", key1, 5, nil, []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=5"}, cells.Tally{}},
		{"same count under another key", key2, 5, nil, []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=5"}, cells.Tally{}},
		{"ids that differ in case are distinct", key1, 60, func(i int) string {
			return []string{"Acme", "ACME", "acme", "aCme", "acmE", "AcMe"}[i%6]
		}, []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6"}, cells.Tally{}},
		{"four tenants are too few at every level", key1, 4, nil, nil, cells.Tally{Cells: 1, Devices: 60}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder(t, cells.WithClock(newClock(t0).Now), cells.WithLateness(0), cells.WithTenantKey(tt.key), cells.WithSilentHorizon(0))
			observeAll(t, b, fleet(t0, "dev", 60, tt.tenants, func(i int, o *cells.Observation) {
				if tt.tenantName != nil {
					o.Tenant = tt.tenantName(i)
				}
			}))
			got, rep := b.Flush(t0.Add(5 * time.Minute))
			sameLines(t, "cells", describeAll(got), tt.want)
			if rep.Suppressed[cells.TooFewTenants] != tt.suppressed {
				t.Errorf("suppressed for tenants: %+v, want %+v (%v)", rep.Suppressed[cells.TooFewTenants], tt.suppressed, rep)
			}
		})
	}
}

// TestSilentDevices checks silent counting over windows: devices seen in
// the horizon that do not report are silent, counted in the population of
// their last cell, and forgotten after the horizon.
func TestSilentDevices(t *testing.T) {
	type window struct {
		report []int // device indices reporting (of 60, 6 tenants)
		want   string
	}
	all := func() []int {
		s := make([]int, 60)
		for i := range s {
			s[i] = i
		}
		return s
	}
	tail := func(from int) []int { return all()[from:] }
	tests := []struct {
		name    string
		horizon int
		windows []window
	}{
		{"ten stop reporting for longer than the horizon", 3, []window{
			{all(), "active=60 tenants=6"},
			{tail(10), "active=60 silent=10 tenants=6"},
			{tail(10), "active=60 silent=10 tenants=6"},
			{tail(10), "active=60 silent=10 tenants=6"},
			{tail(10), "active=50 tenants=6"},
		}},
		{"horizon of one window", 1, []window{
			{all(), "active=60 tenants=6"},
			{tail(10), "active=60 silent=10 tenants=6"},
			{tail(10), "active=50 tenants=6"},
		}},
		{"a silent device that reports again is no longer silent", 5, []window{
			{all(), "active=60 tenants=6"},
			{tail(10), "active=60 silent=10 tenants=6"},
			{all(), "active=60 tenants=6"},
		}},
		{"every device in a boot loop", 5, []window{
			{all(), "active=60 tenants=6"},
			{nil, "active=60 silent=60 tenants=6"},
			{nil, "active=60 silent=60 tenants=6"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			b := newBuilder(t, cells.WithClock(clk.Now), cells.WithLateness(0), cells.WithSilentHorizon(tt.horizon))
			devs := fleet(t0, "dev", 60, 6, nil)
			for w, win := range tt.windows {
				start := t0.Add(time.Duration(w) * time.Minute)
				clk.Set(start)
				for _, i := range win.report {
					o := devs[i]
					o.Time = start.Add(time.Duration(i) * 100 * time.Millisecond)
					observeAll(t, b, []cells.Observation{o})
				}
				got, _ := b.Flush(start.Add(time.Minute))
				want := fmt.Sprintf("DE %s/60s 10.0.22631.3880 291.1 %s", start.Format("15:04"), win.want)
				if len(got) != 1 || describe(got[0]) != want {
					t.Fatalf("window %d: %q, want %q", w, describeAll(got), want)
				}
				checkRelations(t, got, 50, 5)
			}
		})
	}
}

// TestRollUp checks each roll-up step on the cells of one five-minute
// window.
func TestRollUp(t *testing.T) {
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	in := func(region string) func(int, *cells.Observation) {
		return func(_ int, o *cells.Observation) { o.Region = region }
	}
	tests := []struct {
		name       string
		obs        [][]cells.Observation
		want       []string
		emitted    map[cells.Level]cells.Tally
		rolledUp   map[cells.Level]cells.Tally
		suppressed map[cells.Reason]cells.Tally
	}{
		{
			name:    "a country cell",
			obs:     [][]cells.Observation{fleet(at(0), "de", 60, 6, nil)},
			want:    []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6"},
			emitted: map[cells.Level]cells.Tally{cells.LevelCountry: {1, 60}},
		},
		{
			name: "small countries roll up to their continent, next to a country cell",
			obs: [][]cells.Observation{
				fleet(at(0), "de", 60, 6, nil), fleet(at(0), "fr", 30, 6, in("FR")), fleet(at(0), "it", 25, 6, in("IT")),
			},
			want: []string{
				"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6",
				"europe 04:10/60s 10.0.22631.3880 291.1 active=55 tenants=6",
			},
			emitted:  map[cells.Level]cells.Tally{cells.LevelCountry: {1, 60}, cells.LevelContinent: {1, 55}},
			rolledUp: map[cells.Level]cells.Tally{cells.LevelCountry: {2, 55}},
		},
		{
			name:    "small continents roll up to global",
			obs:     [][]cells.Observation{fleet(at(0), "de", 30, 6, nil), fleet(at(0), "jp", 30, 6, in("JP"))},
			want:    []string{"global 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6"},
			emitted: map[cells.Level]cells.Tally{cells.LevelGlobal: {1, 60}},
			rolledUp: map[cells.Level]cells.Tally{
				cells.LevelCountry: {2, 60}, cells.LevelContinent: {2, 60},
			},
		},
		{
			name: "small minutes roll up to five minutes",
			obs: [][]cells.Observation{
				fleet(at(0), "a", 20, 6, nil), fleet(at(1), "b", 20, 6, nil), fleet(at(4), "c", 20, 6, nil),
			},
			want:    []string{"global 04:10/300s 10.0.22631.3880 291.1 active=60 tenants=6"},
			emitted: map[cells.Level]cells.Tally{cells.LevelWindow: {1, 60}},
			rolledUp: map[cells.Level]cells.Tally{
				cells.LevelCountry: {3, 60}, cells.LevelContinent: {3, 60}, cells.LevelGlobal: {3, 60},
			},
		},
		{
			name: "a device seen in every minute counts once in five minutes",
			obs: [][]cells.Observation{
				fleet(at(0), "a", 40, 6, nil), fleet(at(1), "a", 40, 6, nil), fleet(at(2), "a", 40, 6, nil),
				fleet(at(3), "a", 40, 6, nil), fleet(at(4), "a", 40, 6, nil),
				fleet(at(3), "b", 5, 6, nil), fleet(at(4), "c", 5, 6, nil),
			},
			want:    []string{"global 04:10/300s 10.0.22631.3880 291.1 active=50 tenants=6"},
			emitted: map[cells.Level]cells.Tally{cells.LevelWindow: {1, 50}},
		},
		{
			name: "small builds roll up to the OS version",
			obs: [][]cells.Observation{
				fleet(at(2), "a", 30, 6, nil),
				fleet(at(2), "b", 30, 6, func(_ int, o *cells.Observation) { o.OSBuild = "10.0.22631.4037" }),
			},
			want:    []string{"global 04:10/300s 10.0.22631 291.1 active=60 tenants=6"},
			emitted: map[cells.Level]cells.Tally{cells.LevelOSVersion: {1, 60}},
			rolledUp: map[cells.Level]cells.Tally{
				cells.LevelCountry: {2, 60}, cells.LevelContinent: {2, 60}, cells.LevelGlobal: {2, 60}, cells.LevelWindow: {2, 60},
			},
		},
		{
			name:     "a region that is a continent joins at the continent level",
			obs:      [][]cells.Observation{fleet(at(0), "de", 30, 6, nil), fleet(at(0), "eu", 30, 6, in("europe"))},
			want:     []string{"europe 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6"},
			emitted:  map[cells.Level]cells.Tally{cells.LevelContinent: {1, 60}},
			rolledUp: map[cells.Level]cells.Tally{cells.LevelCountry: {1, 30}},
		},
		{
			name:    "no region is global",
			obs:     [][]cells.Observation{fleet(at(0), "x", 60, 6, in(""))},
			want:    []string{"global 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6"},
			emitted: map[cells.Level]cells.Tally{cells.LevelGlobal: {1, 60}},
		},
		{
			name:    "what stays small is suppressed and counted",
			obs:     [][]cells.Observation{fleet(at(0), "de", 60, 6, nil), fleet(at(3), "jp", 10, 6, in("JP"))},
			want:    []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=6"},
			emitted: map[cells.Level]cells.Tally{cells.LevelCountry: {1, 60}},
			rolledUp: map[cells.Level]cells.Tally{
				cells.LevelCountry: {1, 10}, cells.LevelContinent: {1, 10}, cells.LevelGlobal: {1, 10}, cells.LevelWindow: {1, 10},
			},
			suppressed: map[cells.Reason]cells.Tally{cells.TooFewDevices: {1, 10}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder(t, cells.WithClock(newClock(t0.Add(4*time.Minute)).Now), cells.WithLateness(0), cells.WithSilentHorizon(0))
			observeAll(t, b, tt.obs...)
			got, rep := b.Flush(t0.Add(5 * time.Minute))
			sameLines(t, "cells", describeAll(got), tt.want)
			checkRelations(t, got, 50, 5)
			for l := range cells.NumLevels {
				if rep.Emitted[l] != tt.emitted[cells.Level(l)] {
					t.Errorf("emitted at %s: %+v, want %+v", cells.Level(l), rep.Emitted[l], tt.emitted[cells.Level(l)])
				}
				if tt.rolledUp != nil && rep.RolledUp[l] != tt.rolledUp[cells.Level(l)] {
					t.Errorf("rolled up at %s: %+v, want %+v", cells.Level(l), rep.RolledUp[l], tt.rolledUp[cells.Level(l)])
				}
			}
			for r := range cells.NumReasons {
				if rep.Suppressed[r] != tt.suppressed[cells.Reason(r)] {
					t.Errorf("suppressed %s: %+v, want %+v", cells.Reason(r), rep.Suppressed[r], tt.suppressed[cells.Reason(r)])
				}
			}
		})
	}
}

// TestAccounting checks that every device of every closed window ends up
// emitted or suppressed, over several windows with silent devices and
// every roll-up level.
func TestAccounting(t *testing.T) {
	clk := newClock(t0)
	b := newBuilder(t, cells.WithClock(clk.Now), cells.WithLateness(0), cells.WithSilentHorizon(2))
	regions := []string{"DE", "FR", "JP", "US", "BR", "", "europe"}
	builds := []string{"10.0.22631.3880", "10.0.22631.4037", "10.0.19045.4651"}
	perWindow := map[int]int{} // window → distinct devices (reporting or silent)
	seen := map[string]int{}   // device → last window reported
	for w := range 15 {
		start := t0.Add(time.Duration(w) * time.Minute)
		clk.Set(start)
		n := 0
		for i := range 300 {
			dev := fmt.Sprintf("d%d", i)
			if (i+w)%7 == 0 { // some devices skip windows
				if last, ok := seen[dev]; ok && w-last <= 2 {
					n++ // silent
				}
				continue
			}
			o := obs(start.Add(time.Duration(i)*time.Millisecond), dev, fmt.Sprintf("t%d", i%9))
			o.Region = regions[(i*7)%len(regions)]
			o.OSBuild = builds[i%len(builds)]
			if i%11 == 0 {
				o.Event = cells.KernelCrash
				o.BugcheckCode = "0x50"
			}
			observeAll(t, b, []cells.Observation{o})
			seen[dev] = w
			n++
		}
		perWindow[w] = n
	}
	got, rep := b.Flush(t0.Add(15 * time.Minute))
	checkRelations(t, got, 50, 5)
	total := 0
	for _, n := range perWindow {
		total += n
	}
	// Devices are counted once per window at the minute levels and once per
	// five minutes at the longer levels, so count what the longer levels
	// received instead: each device-minute is emitted at a minute level or
	// moved to the window level.
	minute := rep.Emitted[cells.LevelCountry].Devices + rep.Emitted[cells.LevelContinent].Devices +
		rep.Emitted[cells.LevelGlobal].Devices + rep.RolledUp[cells.LevelGlobal].Devices
	if minute != total {
		t.Errorf("device-minutes emitted or moved on: %d, want %d (%v)", minute, total, rep)
	}
	if rep.Windows != 15 {
		t.Errorf("windows: %d", rep.Windows)
	}
}

// TestTopFailures checks bucket counting, merging and suppression.
func TestTopFailures(t *testing.T) {
	type fail struct {
		n                     int // devices
		code, module, version string
		times                 int // reports per device
	}
	tests := []struct {
		name       string
		fails      []fail
		want       string
		merged     cells.Tally
		suppressed [cells.NumReasons]cells.Tally
	}{
		{"a bucket of distinct devices", []fail{{12, "0x50", "csagent.sys", "7.16", 5}},
			"[0x50/csagent.sys/7.16:12]", cells.Tally{}, [cells.NumReasons]cells.Tally{}},
		{"module versions merge", []fail{{6, "0x50", "csagent.sys", "7.16", 1}, {6, "0x50", "csagent.sys", "7.17", 1}, {10, "0x7E", "other.sys", "1", 1}},
			"[0x50/csagent.sys/:12] [0x7E/other.sys/1:10]", cells.Tally{Cells: 2, Devices: 12}, [cells.NumReasons]cells.Tally{}},
		{"modules merge to the code", []fail{{6, "0x50", "a.sys", "1", 1}, {6, "0x50", "b.sys", "1", 1}},
			"[0x50//:12]", cells.Tally{Cells: 4, Devices: 24}, [cells.NumReasons]cells.Tally{}},
		{"a module alone merges to the module", []fail{{6, "", "agent.exe", "1", 1}, {6, "", "agent.exe", "2", 1}},
			"[/agent.exe/:12]", cells.Tally{Cells: 2, Devices: 12}, [cells.NumReasons]cells.Tally{}},
		{"too small after merging", []fail{{6, "0x50", "a.sys", "1", 1}, {3, "0x7E", "", "", 1}},
			"", cells.Tally{Cells: 2, Devices: 12},
			[cells.NumReasons]cells.Tally{cells.TooFewDevices: {Cells: 2, Devices: 9}}},
		{"at most twenty buckets", func() []fail {
			var fs []fail
			for i := range 25 {
				fs = append(fs, fail{10 + i, fmt.Sprintf("0x%X", 0x100+i), "m.sys", "1", 1})
			}
			return fs
		}(), "", cells.Tally{}, [cells.NumReasons]cells.Tally{cells.OverBucketLimit: {Cells: 5, Devices: 10 + 11 + 12 + 13 + 14}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder(t, cells.WithClock(newClock(t0).Now), cells.WithLateness(0), cells.WithThresholds(10, 1))
			var all []cells.Observation
			dev := 0
			for _, f := range tt.fails {
				for range f.n {
					for k := range f.times {
						o := obs(t0.Add(time.Duration(k)*time.Second), fmt.Sprintf("dev-%d", dev), "t")
						o.Event, o.BugcheckCode, o.Module, o.ModuleVersion = cells.KernelCrash, f.code, f.module, f.version
						all = append(all, o)
					}
					dev++
				}
			}
			all = append(all, fleet(t0, "ok", 700, 1, nil)...)
			observeAll(t, b, all)
			got, rep := b.Flush(t0.Add(time.Minute))
			if len(got) != 1 {
				t.Fatalf("%d cells", len(got))
			}
			checkRelations(t, got, 10, 1)
			tops := ""
			for _, tf := range got[0].GetTopFailures() {
				tops += fmt.Sprintf(" [%s/%s/%s:%d]", tf.GetBugcheckCode(), tf.GetModule(), tf.GetModuleVersion(), tf.GetDevices())
			}
			if tt.name == "at most twenty buckets" {
				if n := len(got[0].GetTopFailures()); n != cells.MaxTopFailures || got[0].GetTopFailures()[0].GetDevices() != 34 {
					t.Errorf("%d buckets:%s", n, tops)
				}
			} else if tops != "" && tops[1:] != tt.want || tops == "" && tt.want != "" {
				t.Errorf("top failures%s, want %s", tops, tt.want)
			}
			if rep.Buckets.Merged != tt.merged || rep.Buckets.Suppressed != tt.suppressed {
				t.Errorf("buckets merged %+v suppressed %+v, want %+v %+v", rep.Buckets.Merged, rep.Buckets.Suppressed, tt.merged, tt.suppressed)
			}
		})
	}
}

// TestObserveErrors checks what Observe refuses, and that each refusal is
// counted.
func TestObserveErrors(t *testing.T) {
	edit := func(f func(o *cells.Observation)) cells.Observation {
		o := obs(t0, "dev", "tenant")
		f(&o)
		return o
	}
	tests := []struct {
		name string
		obs  cells.Observation
		want error
	}{
		{"no device", edit(func(o *cells.Observation) { o.Device = "" }), cells.ErrInvalid},
		{"no tenant", edit(func(o *cells.Observation) { o.Tenant = "" }), cells.ErrInvalid},
		{"no product", edit(func(o *cells.Observation) { o.Product = "" }), cells.ErrInvalid},
		{"product with spaces", edit(func(o *cells.Observation) { o.Product = "Contoso AV" }), cells.ErrInvalid},
		{"lower-case country", edit(func(o *cells.Observation) { o.Region = "de" }), cells.ErrInvalid},
		{"unknown country", edit(func(o *cells.Observation) { o.Region = "QQ" }), cells.ErrInvalid},
		{"no ring", edit(func(o *cells.Observation) { o.Ring = phxv1.Ring_RING_UNSPECIFIED }), cells.ErrInvalid},
		{"unknown OS", edit(func(o *cells.Observation) { o.OSFamily = "win" }), cells.ErrInvalid},
		{"unknown arch", edit(func(o *cells.Observation) { o.Arch = "amd64" }), cells.ErrInvalid},
		{"channel without version", edit(func(o *cells.Observation) { o.ContentVersion = "" }), cells.ErrInvalid},
		{"bad OS build", edit(func(o *cells.Observation) { o.OSBuild = "build 1" }), cells.ErrInvalid},
		{"bad bugcheck code", edit(func(o *cells.Observation) { o.Event, o.BugcheckCode = cells.KernelCrash, "50" }), cells.ErrInvalid},
		{"bad module", edit(func(o *cells.Observation) { o.Event, o.Module = cells.AgentCrash, `C:\x.sys` }), cells.ErrInvalid},
		{"module version alone", edit(func(o *cells.Observation) { o.Event, o.ModuleVersion = cells.Hang, "1.0" }), cells.ErrInvalid},
		{"a check-in with a bugcheck", edit(func(o *cells.Observation) { o.BugcheckCode = "0x50" }), cells.ErrInvalid},
		{"unknown event", edit(func(o *cells.Observation) { o.Event = 9 }), cells.ErrInvalid},
		{"from the future", edit(func(o *cells.Observation) { o.Time = t0.Add(3 * time.Minute) }), cells.ErrFuture},
		{"valid", obs(t0, "dev", "tenant"), nil},
		{"next window", edit(func(o *cells.Observation) { o.Time = t0.Add(time.Minute) }), nil},
		{"no time is now", edit(func(o *cells.Observation) { o.Time = time.Time{} }), nil},
	}
	b := newBuilder(t, cells.WithClock(newClock(t0.Add(10*time.Second)).Now), cells.WithLateness(0))
	var invalid, future uint64
	for _, tt := range tests {
		err := b.Observe(tt.obs)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		switch tt.want {
		case cells.ErrInvalid:
			invalid++
		case cells.ErrFuture:
			future++
		}
	}
	b.Flush(t0.Add(time.Minute))
	if err := b.Observe(obs(t0.Add(59*time.Second), "dev", "tenant")); !errors.Is(err, cells.ErrLate) {
		t.Errorf("observation of a closed window: %v", err)
	}
	s := b.Stats()
	if s.Invalid != invalid || s.Future != future || s.Late != 1 || s.Accepted != 3 {
		t.Errorf("stats %+v; want %d invalid, %d future, 1 late, 3 accepted", s, invalid, future)
	}

	t.Run("limits", func(t *testing.T) {
		b := newBuilder(t, cells.WithClock(newClock(t0).Now), cells.WithLimits(2, 1))
		observeAll(t, b, fleet(t0, "d", 2, 1, nil))
		if err := b.Observe(obs(t0, "d-3", "t")); !errors.Is(err, cells.ErrTooManyDevices) {
			t.Errorf("third device: %v", err)
		}
		o := obs(t0, "d-0", "t")
		o.Region = "FR"
		if err := b.Observe(o); !errors.Is(err, cells.ErrTooManyCells) {
			t.Errorf("second cell: %v", err)
		}
		if s := b.Stats(); s.OverLimit != 2 || s.Tracked.Devices != 2 || s.Tracked.Cells != 1 {
			t.Errorf("stats %+v", s)
		}
	})
}

// TestOptions checks that options refuse what the hub would refuse.
func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		opt  cells.Option
		ok   bool
	}{
		{"one-minute window", cells.WithWindow(time.Minute), true},
		{"hour window", cells.WithWindow(time.Hour), true},
		{"two-minute window", cells.WithWindow(2 * time.Minute), false},
		{"thresholds", cells.WithThresholds(100, 10), true},
		{"zero devices", cells.WithThresholds(0, 5), false},
		{"short key", cells.WithTenantKey([]byte("short")), false},
		{"horizon 0", cells.WithSilentHorizon(0), true},
		{"negative horizon", cells.WithSilentHorizon(-1), false},
		{"horizon 33", cells.WithSilentHorizon(33), false},
		{"negative lateness", cells.WithLateness(-time.Second), false},
		{"lateness above the window", cells.WithLateness(2 * time.Minute), false},
		{"no audience", cells.WithAudience(nil), false},
		{"audience without label", cells.WithAudience(&phxv1.Audience{}), false},
		{"source", cells.WithSource("eu-1"), true},
		{"source with a space", cells.WithSource("eu 1"), false},
		{"no clock", cells.WithClock(nil), false},
		{"no limits", cells.WithLimits(0, 0), false},
		{"shards", cells.WithShards(3), true},
	}
	for _, tt := range tests {
		_, err := cells.New(tt.opt)
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// TestOSVersion checks the OS build → OS version step.
func TestOSVersion(t *testing.T) {
	tests := []struct{ family, build, want string }{
		{"windows", "10.0.22631.3880", "10.0.22631"},
		{"windows", "10.0.22631", "10.0.22631"},
		{"macos", "14.5.1", "14.5"},
		{"macos", "23F79", "23F79"},
		{"linux", "6.8.0-45-generic", "6.8"},
		{"linux", "6.8-rc1", "6.8"},
	}
	for _, tt := range tests {
		if got := cells.OSVersion(tt.family, tt.build); got != tt.want {
			t.Errorf("OSVersion(%s, %s) = %s, want %s", tt.family, tt.build, got, tt.want)
		}
		if again := cells.OSVersion(tt.family, tt.want); again != tt.want {
			t.Errorf("OSVersion(%s, %s) = %s: not a fixed point", tt.family, tt.want, again)
		}
	}
}

// TestContinent checks the country table.
func TestContinent(t *testing.T) {
	tests := []struct{ country, want string }{
		{"DE", "europe"}, {"RU", "europe"}, {"TR", "asia"}, {"JP", "asia"}, {"EG", "africa"},
		{"US", "north-america"}, {"PA", "north-america"}, {"BR", "south-america"},
		{"AU", "oceania"}, {"AQ", "antarctica"}, {"XK", "europe"},
	}
	for _, tt := range tests {
		if got, ok := cells.Continent(tt.country); !ok || got != tt.want {
			t.Errorf("Continent(%s) = %s, %v; want %s", tt.country, got, ok, tt.want)
		}
	}
	if _, ok := cells.Continent("QQ"); ok {
		t.Error("QQ has a continent")
	}
}

// TestWindowLengths checks the roll-up of builders with five-minute and
// one-hour windows: the longer window is an hour, or there is none and the
// OS version follows "global" in the same window.
func TestWindowLengths(t *testing.T) {
	hour := time.Date(2024, 7, 19, 4, 0, 0, 0, time.UTC)
	builds := func(_ int, o *cells.Observation) {
		o.Region = "JP"
		if o.Device[len(o.Device)-1]%2 == 0 {
			o.OSBuild = "10.0.22631.4037"
		}
	}
	tests := []struct {
		name   string
		window time.Duration
		obs    [][]cells.Observation
		want   []string
		level  cells.Level
	}{
		{"five minutes, small windows roll up to the hour", 5 * time.Minute,
			[][]cells.Observation{fleet(hour, "a", 30, 6, nil), fleet(hour.Add(50*time.Minute), "b", 30, 6, nil)},
			[]string{"global 04:00/3600s 10.0.22631.3880 291.1 active=60 tenants=6"}, cells.LevelWindow},
		{"five minutes, a country cell", 5 * time.Minute,
			[][]cells.Observation{fleet(hour.Add(55*time.Minute), "a", 60, 6, nil)},
			[]string{"DE 04:55/300s 10.0.22631.3880 291.1 active=60 tenants=6"}, cells.LevelCountry},
		{"an hour, builds roll up to the version in the same window", time.Hour,
			[][]cells.Observation{fleet(hour.Add(30*time.Minute), "a", 60, 6, builds)},
			[]string{"global 04:00/3600s 10.0.22631 291.1 active=60 tenants=6"}, cells.LevelOSVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder(t, cells.WithWindow(tt.window), cells.WithClock(newClock(hour.Add(59*time.Minute)).Now),
				cells.WithLateness(0), cells.WithSilentHorizon(0))
			observeAll(t, b, tt.obs...)
			got, rep := b.Flush(hour.Add(time.Hour))
			sameLines(t, "cells", describeAll(got), tt.want)
			checkRelations(t, got, 50, 5)
			if rep.Emitted[tt.level].Cells != 1 {
				t.Errorf("report %v; want a cell at %s", rep, tt.level)
			}
		})
	}
}

// TestLateness checks that a window stays open for the lateness after its
// end, and that each window is emitted once.
func TestLateness(t *testing.T) {
	clk := newClock(t0)
	b := newBuilder(t, cells.WithClock(clk.Now), cells.WithLateness(10*time.Second), cells.WithSilentHorizon(0))
	observeAll(t, b, fleet(t0.Add(50*time.Second), "a", 50, 5, nil))
	clk.Set(t0.Add(time.Minute + 5*time.Second))
	if got, _ := b.Flush(clk.Now()); len(got) != 0 {
		t.Fatalf("flushed within the lateness: %v", describeAll(got))
	}
	observeAll(t, b, fleet(t0.Add(59*time.Second), "b", 10, 5, nil)) // late, within the lateness
	got, rep := b.Flush(t0.Add(time.Minute + 10*time.Second))
	sameLines(t, "cells", describeAll(got), []string{"DE 04:10/60s 10.0.22631.3880 291.1 active=60 tenants=5"})
	if rep.Windows != 1 {
		t.Errorf("report %v", rep)
	}
	if again, rep := b.Flush(t0.Add(time.Minute + 20*time.Second)); len(again) != 0 || rep.Windows != 0 {
		t.Errorf("second flush: %v, %v", describeAll(again), rep)
	}
	if err := b.Observe(obs(t0.Add(59*time.Second), "c-1", "t")); !errors.Is(err, cells.ErrLate) {
		t.Errorf("after the lateness: %v", err)
	}
}
