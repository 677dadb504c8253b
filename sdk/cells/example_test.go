package cells_test

import (
	"fmt"
	"log"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk/cells"
)

// Build the cells of one minute: a German cell large enough on its own,
// French and Austrian devices rolled up into a European cell, and a few
// Japanese devices that are too few even for five minutes worldwide.
func Example() {
	// A fixed clock makes the example reproducible; a backend leaves it out.
	minute := time.Date(2024, 7, 19, 4, 9, 0, 0, time.UTC)
	b, err := cells.New(cells.WithClock(func() time.Time { return minute }))
	if err != nil {
		log.Fatal(err)
	}

	observe := func(n int, prefix, region string, tenants int, ev cells.Event) {
		for i := range n {
			o := cells.Observation{
				Time:   minute.Add(time.Duration(i) * 100 * time.Millisecond),
				Device: fmt.Sprintf("%s-%d", prefix, i), Tenant: fmt.Sprintf("%s-customer-%d", prefix, i%tenants),
				Product: "contoso-av", ProductVersion: "7.16.18",
				ContentChannel: "channel-291", ContentVersion: "291.1",
				Ring: phxv1.Ring_RING_CANARY, OSFamily: "windows", OSBuild: "10.0.22631.3880",
				Arch: "x64", Region: region, Event: ev,
			}
			if ev == cells.KernelCrash {
				o.BugcheckCode, o.Module = "0x50", "csagent.sys"
			}
			if err := b.Observe(o); err != nil {
				log.Fatal(err)
			}
		}
	}
	observe(120, "de", "DE", 8, cells.CheckIn)
	for range 5 { // 60 devices crash five times each: 60 devices
		observe(60, "de", "DE", 8, cells.KernelCrash)
	}
	observe(30, "fr", "FR", 6, cells.CheckIn)
	observe(25, "at", "AT", 5, cells.CheckIn)
	observe(10, "jp", "JP", 3, cells.CheckIn)

	// The minute (and its five minutes) closed at 04:10, plus the lateness.
	cs, report := b.Flush(time.Date(2024, 7, 19, 4, 10, 10, 0, time.UTC))
	for _, c := range cs {
		fmt.Printf("%s %s %ds active=%d exposed=%d silent=%d tenants=%d kernel-crash=%d top=%v\n",
			c.GetRegion(), c.GetWindowStart().AsTime().Format("15:04"), c.GetWindowSeconds(),
			c.GetDevicesActive(), c.GetDevicesExposed(), c.GetDevicesSilent(), c.GetDistinctTenants(),
			c.GetKernelCrashDevices(), topFailures(c))
	}
	fmt.Println(report)
	fmt.Println("suppressed:", report.Suppressed[cells.TooFewDevices].Devices, "devices")
	// Output:
	// DE 04:09 60s active=120 exposed=120 silent=0 tenants=8 kernel-crash=60 top=[0x50 csagent.sys: 60]
	// europe 04:09 60s active=55 exposed=55 silent=0 tenants=11 kernel-crash=0 top=[]
	// windows=1 emitted=2 emitted[country]=1/120 emitted[continent]=1/55 rolled-up[country]=3/65 rolled-up[continent]=1/10 rolled-up[global]=1/10 rolled-up[window]=1/10 suppressed[too-few-devices]=1/10 buckets=1
	// suppressed: 10 devices
}

func topFailures(c *phxv1.HealthSignal) []string {
	out := []string{}
	for _, tf := range c.GetTopFailures() {
		out = append(out, fmt.Sprintf("%s %s: %d", tf.GetBugcheckCode(), tf.GetModule(), tf.GetDevices()))
	}
	return out
}
