package sim

import (
	"fmt"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Scenario names.
const (
	// Normal: every rollout is healthy.
	Normal = "normal"
	// ChannelFile291: contoso's content update 291.2 puts every device on
	// the affected Windows builds that takes it into a boot loop: the device
	// reports the new version once, then never again. The rollout skips the
	// internal ring: it is released to canary (and internal) first, then
	// wider, and nobody stops it.
	ChannelFile291 = "channel-file-291"
	// SlowRegression: northwind's content version 5.32 doubles the kernel
	// crash rate on build 10.0.26100.1150.
	SlowRegression = "slow-regression"
	// PlatformConflict: the Windows update to 10.0.22631.4169 breaks
	// fabrikam's driver: fabrikam devices crash on that build once it
	// arrives; the other vendors' devices do not.
	PlatformConflict = "platform-conflict"
)

// Scenarios returns the scenario names, Normal first.
func Scenarios() []string {
	return []string{Normal, ChannelFile291, SlowRegression, PlatformConflict}
}

// Vendor is a vendor org of the model fleet, its product and the content
// update it rolls out during a run.
type Vendor struct {
	// Org is the org id that publishes the vendor's cells and rollouts.
	Org string
	// Product is the product the org owns.
	Product string
	// ProductVersion is the agent version every device runs.
	ProductVersion string
	// Channel is the content channel of the update.
	Channel string
	// Previous is the content version devices run at the start.
	Previous string
	// Next is the content version the vendor rolls out.
	Next string
	// Driver is the vendor's kernel module, named in crashes it causes.
	Driver string
	// Service is the vendor's agent process, named in agent crashes.
	Service string
}

// Vendors returns the vendors of the model: the dev orgs contoso,
// fabrikam and northwind.
func Vendors() []Vendor {
	return []Vendor{
		{Org: "contoso", Product: "contoso-av", ProductVersion: "7.16.18", Channel: "channel-291", Previous: "291.1", Next: "291.2", Driver: "contosoav.sys", Service: "contosoav.exe"},
		{Org: "fabrikam", Product: "fabrikam-edr", ProductVersion: "4.2.1", Channel: "threat-intel", Previous: "2024.08.1", Next: "2024.08.2", Driver: "fabedr.sys", Service: "fabedr.exe"},
		{Org: "northwind", Product: "northwind-sensor", ProductVersion: "2.9.0", Channel: "sensor-rules", Previous: "5.31", Next: "5.32", Driver: "nwsensor.sys", Service: "nwsensor.exe"},
	}
}

// The platform: the org that rolls out OS updates and the product they are
// rollouts of.
const (
	// PlatformOrg is the org that announces OS updates.
	PlatformOrg = "microsoft"
	// PlatformProduct is the product of OS update rollouts.
	PlatformProduct = "windows"
)

// Build is an OS build of the fleet and the share of devices that start on
// it.
type Build struct {
	// Name, e.g. "10.0.22631.3880".
	Name string
	// Share of devices at the start (0 for a build only an update brings).
	Share float64
}

// Builds of the fleet. The Windows update of every run moves devices from
// UpdateFrom to UpdateTo.
var builds = []Build{
	{"10.0.22631.3880", 0.35},
	{"10.0.22631.4037", 0.25},
	{"10.0.19045.4651", 0.25},
	{"10.0.26100.1150", 0.15},
	{"10.0.22631.4169", 0},
}

// Indexes into builds.
const (
	build3880 = iota
	build4037
	build19045
	build26100
	build4169
)

// Builds returns the OS builds of the model.
func Builds() []Build { return append([]Build(nil), builds...) }

// The Windows update of every run, and the builds the scenarios' faults are
// tied to.
const (
	// UpdateFrom is the build the Windows update applies to.
	UpdateFrom = "10.0.22631.3880"
	// UpdateTo is the build it installs.
	UpdateTo = "10.0.22631.4169"
	// RegressionBuild is where SlowRegression doubles kernel crashes.
	RegressionBuild = "10.0.26100.1150"
	// ConflictBuild is where PlatformConflict breaks fabrikam's driver.
	ConflictBuild = UpdateTo
)

// BootLoopBuilds are the builds on which ChannelFile291 boot-loops devices:
// every Windows 11 23H2 and Windows 10 22H2 build of the model, not 24H2.
var BootLoopBuilds = []string{"10.0.22631.3880", "10.0.22631.4037", "10.0.22631.4169", "10.0.19045.4651"}

// Region is a country of the fleet, its share of tenants and its offset
// from UTC, which sets the day/night rhythm of its devices.
type Region struct {
	// Country is the ISO 3166-1 alpha-2 code.
	Country string
	// Share of tenants.
	Share float64
	// UTCOffset in hours.
	UTCOffset int
}

var regions = []Region{
	{"US", 0.28, -5}, {"CA", 0.05, -5}, {"BR", 0.08, -3},
	{"GB", 0.10, 0}, {"DE", 0.14, 1}, {"FR", 0.08, 1},
	{"IN", 0.09, 5}, {"JP", 0.10, 9}, {"AU", 0.08, 10},
}

// Regions returns the regions of the model.
func Regions() []Region { return append([]Region(nil), regions...) }

// Rings in rollout order.
var rings = []phxv1.Ring{phxv1.Ring_RING_INTERNAL, phxv1.Ring_RING_CANARY, phxv1.Ring_RING_EARLY, phxv1.Ring_RING_BROAD}

// Params are the model's parameters. DefaultParams returns the documented
// defaults; a zero field is not replaced by its default.
type Params struct {
	// Devices per vendor.
	Devices int
	// DevicesOf overrides Devices for the vendors it names (by org).
	DevicesOf map[string]int
	// RingShares are the shares of devices in the internal, canary and
	// early rings; broad has the rest. Each device has one ring for its
	// vendor's updates and, drawn apart, one for Windows updates.
	RingShares [3]float64
	// ArmShare is the share of arm64 devices; the rest are x64.
	ArmShare float64
	// TenantMedian and TenantSigma: tenant sizes are log-normal with this
	// median and log standard deviation, within TenantMin..TenantMax.
	TenantMedian, TenantSigma float64
	// TenantMin and TenantMax bound tenant sizes.
	TenantMin, TenantMax int
	// AwayShare is the share of a tenant's devices in another country than
	// the tenant's.
	AwayShare float64

	// Rates per device-hour, at the daily mean, of a powered-on device.
	Rates Rates
	// MeanOff is how long a switched-off device stays off on average
	// (exponential).
	MeanOff time.Duration
	// Rhythm is the amplitude (0..1) of the day/night rhythm: failure
	// rates peak at 14:00 local time, switching off at 19:00, each as
	// 1 + Rhythm·cos(2π(h−peak)/24).
	Rhythm float64
	// Noise is the log standard deviation of an hourly random factor on
	// each rate, per vendor (its mean is 1).
	Noise float64

	// RolloutStart is when the first rollout starts, after the start of
	// the run; Stagger separates the rollouts of the vendors and of
	// Windows, in that order.
	RolloutStart, Stagger time.Duration
	// Bake is how long each ring (internal, canary, early, broad) bakes
	// before the next; after broad's the rollout is completed.
	Bake [4]time.Duration
	// AdoptSpread: a device takes an update within this time of its ring's
	// release (uniform, fixed per device), or when it is next on.
	AdoptSpread time.Duration

	// RegressionFactor multiplies the kernel crash rate of SlowRegression.
	RegressionFactor float64
	// ConflictCrash is the kernel crash rate per device-hour that
	// PlatformConflict adds.
	ConflictCrash float64

	// MinDevices and MinTenants are the minimum cohort of the cell
	// builders: the hub's k_devices and k_tenants.
	MinDevices, MinTenants int
}

// Rates are event rates per device-hour.
type Rates struct {
	// KernelCrash: bugchecks.
	KernelCrash float64
	// Hang: hangs the user had to reset.
	Hang float64
	// BootFailure: failed boots reported afterwards.
	BootFailure float64
	// AgentCrash: crashes of the vendor's agent process.
	AgentCrash float64
	// PowerOff: switching off (the device goes silent until it is on
	// again).
	PowerOff float64
}

// DefaultParams returns the default parameters: 20,000 devices per vendor
// (60,000 in all: a run of a simulated hour feeds 3.6 million observations
// to the cell builders), rings of 0.5 %, 1 %, 10 % and the rest, tenants
// of median 40 devices (10 to 3,000), and per device-hour 0.002 kernel
// crashes, 0.003 hangs, 0.0005 boot failures, 0.004 agent crashes and 0.04
// switch-offs (off for 2 h on average), with a day/night amplitude of 0.3
// and hourly noise of 0.15. Rollouts start 30 min into the run, 10 min
// apart, and bake 15 min in internal, 30 min in canary, 60 min in early
// and 60 min in broad; devices take an update within 10 min of its
// release. SlowRegression doubles kernel crashes; PlatformConflict adds 0.5
// kernel crashes per device-hour. The minimum cohort is the hub's default,
// 50 devices and 5 tenants.
func DefaultParams() Params {
	return Params{
		Devices:      20_000,
		RingShares:   [3]float64{0.005, 0.01, 0.10},
		ArmShare:     0.05,
		TenantMedian: 40, TenantSigma: 1.3, TenantMin: 10, TenantMax: 3000,
		AwayShare: 0.1,
		Rates: Rates{
			KernelCrash: 0.002, Hang: 0.003, BootFailure: 0.0005, AgentCrash: 0.004, PowerOff: 0.04,
		},
		MeanOff:      2 * time.Hour,
		Rhythm:       0.3,
		Noise:        0.15,
		RolloutStart: 30 * time.Minute,
		Stagger:      10 * time.Minute,
		Bake:         [4]time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, time.Hour},
		AdoptSpread:  10 * time.Minute,

		RegressionFactor: 2,
		ConflictCrash:    0.5,
		MinDevices:       50,
		MinTenants:       5,
	}
}

// devicesOf returns how many devices org has.
func (p *Params) devicesOf(org string) int {
	if n, ok := p.DevicesOf[org]; ok {
		return n
	}
	return p.Devices
}

func (p *Params) validate() error {
	switch {
	case p.Devices < 1 || p.Devices > 5_000_000:
		return fmt.Errorf("devices: %d is not within 1..5000000", p.Devices)
	case p.RingShares[0] < 0 || p.RingShares[1] < 0 || p.RingShares[2] < 0 || p.RingShares[0]+p.RingShares[1]+p.RingShares[2] >= 1:
		return fmt.Errorf("ring shares %v: need non-negative shares below 1 in all", p.RingShares)
	case p.TenantMin < 1 || p.TenantMax < p.TenantMin || p.TenantMedian <= 0:
		return fmt.Errorf("tenant sizes: need 1 ≤ min ≤ max and a positive median")
	case p.MeanOff < time.Minute:
		return fmt.Errorf("mean off time %v is under a minute", p.MeanOff)
	case p.Rhythm < 0 || p.Rhythm > 1:
		return fmt.Errorf("rhythm %v is not within 0..1", p.Rhythm)
	case p.AdoptSpread < time.Minute:
		return fmt.Errorf("adopt spread %v is under a minute", p.AdoptSpread)
	case p.MinDevices < 1 || p.MinTenants < 1:
		return fmt.Errorf("minimum cohort %d devices, %d tenants: need at least 1 each", p.MinDevices, p.MinTenants)
	}
	for org, n := range p.DevicesOf {
		if n < 1 || n > 5_000_000 {
			return fmt.Errorf("devices of %s: %d is not within 1..5000000", org, n)
		}
	}
	for _, r := range []float64{p.Rates.KernelCrash, p.Rates.Hang, p.Rates.BootFailure, p.Rates.AgentCrash, p.Rates.PowerOff, p.ConflictCrash} {
		if r < 0 || r > 30 {
			return fmt.Errorf("rate %v per device-hour is not within 0..30", r)
		}
	}
	for _, b := range p.Bake {
		if b < time.Minute {
			return fmt.Errorf("bake time %v is under a minute", b)
		}
	}
	return nil
}
