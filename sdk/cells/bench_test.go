package cells_test

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk/cells"
)

var benchCountries = []string{"DE", "FR", "IT", "ES", "PL", "NL", "SE", "GB", "US", "CA", "MX", "BR", "AR", "JP", "KR", "IN", "CN", "AU", "ZA", "EG"}

// fleetTemplates returns one observation per device of a fleet of n
// devices in 2,000 cells (20 countries × 5 product versions × 4 content
// versions × 5 OS builds) and 400 tenants, so that each cell of 50
// devices has 50 tenants.
func fleetTemplates(n int) []cells.Observation {
	out := make([]cells.Observation, n)
	for i := range out {
		c := i % 2000
		out[i] = cells.Observation{
			Device: fmt.Sprintf("device-%08d", i), Tenant: fmt.Sprintf("tenant-%04d", (i/2000)%400),
			Product: "contoso-av", ProductVersion: fmt.Sprintf("7.16.%d", c%5),
			ContentChannel: "channel-291", ContentVersion: fmt.Sprintf("291.%d", (c/5)%4),
			Ring: phxv1.Ring_RING_BROAD, OSFamily: "windows", OSBuild: fmt.Sprintf("10.0.22631.%d", 3880+(c/20)%5),
			Arch: "x64", Region: benchCountries[(c/100)%20],
		}
	}
	return out
}

// BenchmarkObserve feeds a fleet of 100,000 devices, each reporting four
// times a minute (2 % of reports are kernel crashes with a bugcheck), and
// closes each minute as it ends: the figure includes Flush. It reports
// observations per second of wall time.
func BenchmarkObserve(b *testing.B) {
	const devices = 100_000
	const perWindow = 4 * devices
	tmpl := fleetTemplates(devices)
	start := time.Date(2024, 7, 19, 4, 0, 0, 0, time.UTC)
	run := func(b *testing.B, parallel bool) {
		var win atomic.Int64
		clock := func() time.Time { return start.Add(time.Duration(win.Load()) * time.Minute) }
		bl := newBuilder(b, cells.WithClock(clock))
		var n, late atomic.Int64
		observe := func(i int64) {
			w := i / perWindow
			if w > win.Load() && win.CompareAndSwap(w-1, w) {
				bl.Flush(start.Add(time.Duration(w)*time.Minute + bl.Lateness()))
			}
			o := tmpl[i%devices]
			o.Time = start.Add(time.Duration(w) * time.Minute)
			if i%50 == 0 {
				o.Event, o.BugcheckCode, o.Module = cells.KernelCrash, "0x50", "csagent.sys"
			}
			if err := bl.Observe(o); err != nil {
				if !errors.Is(err, cells.ErrLate) {
					b.Fatal(err)
				}
				late.Add(1)
			}
		}
		// Warm up: the devices, their tenants and cells are known.
		for i := range int64(devices) {
			observe(i)
		}
		n.Store(devices)
		b.ReportAllocs()
		b.ResetTimer()
		if parallel {
			b.RunParallel(func(pb *testing.PB) {
				// Indices in chunks, so that goroutines do not share a
				// counter on every observation.
				const chunk = 256
				next, end := int64(0), int64(0)
				for pb.Next() {
					if next == end {
						end = n.Add(chunk)
						next = end - chunk
					}
					observe(next)
					next++
				}
			})
		} else {
			for range b.N {
				observe(n.Add(1))
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "obs/s")
		b.ReportMetric(0, "ns/op")
		if late.Load() > 0 {
			b.ReportMetric(float64(late.Load()), "late")
		}
	}
	b.Run("serial", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}

// BenchmarkMemoryPerCell measures the heap a builder holds per active cell
// and per device: cells cells with devices devices each, one observation
// per device.
func BenchmarkMemoryPerCell(b *testing.B) {
	for _, devices := range []int{1, 50} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			const numCells = 10_000
			start := time.Date(2024, 7, 19, 4, 0, 0, 0, time.UTC)
			obs := make([]cells.Observation, numCells*devices)
			for i := range obs {
				c := i % numCells
				obs[i] = cells.Observation{
					Time: start, Device: fmt.Sprintf("device-%08d", i), Tenant: fmt.Sprintf("tenant-%04d", i%400),
					Product: "contoso-av", ProductVersion: fmt.Sprintf("7.%d.%d", c/2000, (c/20)%100),
					ContentChannel: "channel-291", ContentVersion: "291.1",
					Ring: phxv1.Ring_RING_BROAD, OSFamily: "windows", OSBuild: "10.0.22631.3880",
					Arch: "x64", Region: benchCountries[c%20],
				}
			}
			var perCell, perDevice float64
			b.ResetTimer()
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				bl := newBuilder(b, cells.WithClock(func() time.Time { return start }))
				for _, o := range obs {
					if err := bl.Observe(o); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if tr := bl.Tracked(); tr.Cells != numCells || tr.Devices != len(obs) {
					b.Fatalf("tracked %+v", tr)
				}
				runtime.KeepAlive(bl)
				used := float64(after.HeapAlloc) - float64(before.HeapAlloc)
				perCell, perDevice = used/numCells, used/float64(len(obs))
			}
			b.ReportMetric(perCell, "bytes/cell")
			b.ReportMetric(perDevice, "bytes/device")
		})
	}
}
