package sim

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/phx-exchange/phx/sdk/cells"
)

// odds are the chances of each event in one minute for a device that is on.
type odds struct {
	kernel, hang, boot, agent, off, conflict float64
}

// Noise slots.
const (
	nKernel = iota
	nHang
	nBoot
	nAgent
	nOff
)

// rhythm is the day/night factor at local hour h for a rate that peaks at
// peak o'clock.
func rhythm(amp, h, peak float64) float64 {
	return 1 + amp*math.Cos(2*math.Pi*(h-peak)/24)
}

// rates returns, per vendor and region, the chances of each event in the
// minute starting at t.
func (m *Model) rates(t time.Time) [][]odds {
	out := make([][]odds, len(m.fleets))
	hour := int(t.Sub(m.start) / time.Hour)
	utc := float64(t.Hour()) + float64(t.Minute())/60
	perMin := func(r float64) float64 { return -math.Expm1(-r / 60) }
	for vi, f := range m.fleets {
		if f.noiseHr != hour {
			f.noiseHr = hour
			r := rand.New(rand.NewPCG(m.cfg.Seed^0x6e6f697365, uint64(vi)<<40|uint64(hour)))
			s := m.p.Noise
			for k := range f.noise {
				f.noise[k] = math.Exp(s*r.NormFloat64() - s*s/2)
			}
		}
		out[vi] = make([]odds, len(regions))
		for ri, reg := range regions {
			h := math.Mod(utc+float64(reg.UTCOffset)+24, 24)
			day := rhythm(m.p.Rhythm, h, 14)
			eve := rhythm(m.p.Rhythm, h, 19)
			rt := &m.p.Rates
			out[vi][ri] = odds{
				kernel:   perMin(rt.KernelCrash * day * f.noise[nKernel]),
				hang:     perMin(rt.Hang * day * f.noise[nHang]),
				boot:     perMin(rt.BootFailure * day * f.noise[nBoot]),
				agent:    perMin(rt.AgentCrash * day * f.noise[nAgent]),
				off:      perMin(rt.PowerOff * eve * f.noise[nOff]),
				conflict: perMin(m.p.ConflictCrash * day),
			}
		}
	}
	return out
}

// crash is a bugcheck and the module it names.
type crash struct{ code, module string }

// baseCrashes are the kernel crashes of a healthy fleet.
var baseCrashes = []crash{
	{"0x50", "ntoskrnl.exe"}, {"0x7E", "ntoskrnl.exe"}, {"0xD1", "tcpip.sys"},
	{"0x3B", "win32kfull.sys"}, {"0x139", "ndis.sys"}, {"0x9F", "pci.sys"},
	{"0x1E", "ntoskrnl.exe"}, {"0x133", "storport.sys"},
}

// step simulates minute i (starting at t) of the fleet's devices.
func (f *fleet) step(m *Model, i int, t time.Time, od []odds) {
	f.hit = 0
	scen := m.cfg.Scenario
	bootLoop := scen == ChannelFile291 && f.v.Org == "contoso"
	slow := scen == SlowRegression && f.v.Org == "northwind"
	conflict := scen == PlatformConflict && f.v.Org == "fabrikam"
	factor := m.p.RegressionFactor - 1
	meanOff := m.p.MeanOff.Minutes()
	win := m.windows
	obs := cells.Observation{
		Product: f.v.Product, ProductVersion: f.v.ProductVersion, ContentChannel: f.v.Channel,
		OSFamily: "windows",
	}
	for di := range f.devs {
		d := &f.devs[di]
		if d.dead {
			f.hit++
			continue
		}
		if int32(i) < d.offUntil {
			continue
		}
		at := t.Add(time.Duration(d.sec) * time.Second)
		if d.build == build3880 && win.released(d.osRing, i, d.osDelay) {
			d.build = build4169
			f.moved++
			if conflict && f.faultAt.IsZero() {
				f.faultAt = at
			}
		}
		fresh := false
		if !d.adopted && f.roll.released(d.ring, i, d.delay) {
			d.adopted, fresh = true, true
			f.adopted++
		}
		obs.Time, obs.Device, obs.Tenant = at, d.id, f.tenants[d.tenant]
		obs.Ring = rings[d.ring]
		obs.OSBuild = builds[d.build].Name
		obs.Arch = "x64"
		if d.arm {
			obs.Arch = "arm64"
		}
		obs.Region = regions[d.region].Country
		if d.adopted {
			obs.ContentVersion, obs.RolloutID = f.v.Next, f.roll.Rollout.RolloutId
		} else {
			obs.ContentVersion, obs.RolloutID = f.v.Previous, ""
		}
		obs.Event, obs.BugcheckCode, obs.Module, obs.ModuleVersion = cells.CheckIn, "", "", ""

		if bootLoop && d.adopted && (d.build != build26100) {
			// The device reports the new version, loads it, and never
			// boots again: silent from the next window on.
			f.observe(obs)
			d.dead = true
			f.hit++
			if f.faultAt.IsZero() {
				f.faultAt = at
			}
			if f.effectAt < 0 {
				f.effectAt = i + 1
			}
			continue
		}
		o := &od[d.region]
		extra := 0.0
		switch {
		case slow && d.adopted && d.build == build26100:
			extra = o.kernel * factor
			f.hit++
			if fresh && f.faultAt.IsZero() {
				f.faultAt = at
			}
		case conflict && d.build == build4169:
			extra = o.conflict
			f.hit++
		}
		u := f.rng.Float64()
		switch {
		case u < o.kernel:
			c := baseCrashes[int(u/o.kernel*float64(len(baseCrashes)))%len(baseCrashes)]
			obs.Event, obs.BugcheckCode, obs.Module = cells.KernelCrash, c.code, c.module
		case u < o.kernel+extra:
			obs.Event, obs.Module, obs.ModuleVersion = cells.KernelCrash, f.v.Driver, f.v.ProductVersion
			obs.BugcheckCode = "0x50"
			if conflict {
				obs.BugcheckCode = "0x3B"
			}
			if f.effectAt < 0 {
				f.effectAt = i
			}
		default:
			u -= o.kernel + extra
			switch {
			case u < o.hang:
				obs.Event = cells.Hang
			case u < o.hang+o.boot:
				obs.Event, obs.BugcheckCode = cells.BootFailure, "0x7B"
			case u < o.hang+o.boot+o.agent:
				obs.Event, obs.Module, obs.ModuleVersion = cells.AgentCrash, f.v.Service, f.v.ProductVersion
			case u < o.hang+o.boot+o.agent+o.off:
				// Reports this minute, then is switched off.
				d.offUntil = int32(i + 1 + int(f.rng.ExpFloat64()*meanOff))
			}
		}
		f.observe(obs)
	}
}

// observe feeds one observation to the builder and counts it.
func (f *fleet) observe(o cells.Observation) {
	if err := f.b.Observe(o); err != nil {
		f.errs++
		f.lastErr = err
		return
	}
	f.observed++
}
