package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk/cells"
)

// Config is what a Model is made of.
type Config struct {
	// Scenario is one of Scenarios().
	Scenario string
	// Seed makes a run repeatable: the same seed, start and parameters
	// give the same fleet, the same observations and the same cells.
	Seed uint64
	// Start is the start of the simulated time, truncated to the minute.
	Start time.Time
	// Duration is the simulated time, whole minutes.
	Duration time.Duration
	// Params are the model's parameters; the zero value means
	// DefaultParams().
	Params *Params
}

// Model is a simulated fleet: vendors' devices, their tenants, and the
// rollouts of a scenario, stepping one simulated minute at a time. Each
// vendor's devices report to that vendor's cell builder (sdk/cells), which
// turns them into the cells the vendor publishes; device and tenant ids do
// not leave the builder. A Model is not safe for concurrent use.
type Model struct {
	cfg      Config
	p        Params
	start    time.Time
	minutes  int
	next     int // the next minute to simulate
	clock    atomic.Int64
	fleets   []*fleet
	rollouts []*plan
	windows  *plan // the Windows update
	truth    Truth
	tag      string
}

// A plan is a rollout: its schedule and where it stands.
type plan struct {
	Rollout  *phxv1.Rollout // as last announced or updated
	org      string
	vendor   int   // index into fleets, -1 for the Windows update
	starts   []int // minute each stage starts
	release  [4]int
	complete int // minute it is completed
	stage    int // current stage, -1 before the first
	done     bool
	lastPct  float64
	lastUpd  int
}

// never is a release minute that does not come.
const never = math.MaxInt32

// released reports whether a device of ring r with adoption delay d takes
// the rollout in minute m.
func (p *plan) released(r uint8, m int, d uint8) bool {
	return p != nil && p.release[r] != never && m >= p.release[r]+int(d)
}

// fleet is one vendor's devices and builder.
type fleet struct {
	v        Vendor
	idx      int
	devs     []device
	tenants  []string
	rng      *rand.Rand
	b        *cells.Builder
	roll     *plan
	adopted  int // devices on the new content version
	moved    int // devices the Windows update moved
	onFrom   int // devices on UpdateFrom at the start
	observed uint64
	errs     uint64
	lastErr  error
	noiseHr  int
	noise    [5]float64
	// Ground truth seen in the current step.
	faultAt  time.Time // first device the fault reached
	effectAt int       // minute of the first faulty effect, -1 if none
	hit      int       // devices the fault reached
}

type device struct {
	id       string
	tenant   int32
	offUntil int32 // minute the device is on again
	region   uint8
	build    uint8
	arm      bool
	ring     uint8
	osRing   uint8
	delay    uint8 // minutes after its ring's release it takes the content
	osDelay  uint8
	sec      uint8 // second of the minute it reports at
	adopted  bool
	dead     bool // in a boot loop: silent for good
}

// New makes the model of cfg: it draws the fleet and plans the rollouts.
func New(cfg Config) (*Model, error) {
	if !slices.Contains(Scenarios(), cfg.Scenario) {
		return nil, fmt.Errorf("unknown scenario %q (one of: %s)", cfg.Scenario, strings.Join(Scenarios(), ", "))
	}
	if cfg.Duration < time.Minute {
		return nil, fmt.Errorf("duration %v is under a minute", cfg.Duration)
	}
	if cfg.Start.IsZero() {
		return nil, errors.New("no start time")
	}
	p := DefaultParams()
	if cfg.Params != nil {
		p = *cfg.Params
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	m := &Model{
		cfg:     cfg,
		p:       p,
		start:   cfg.Start.UTC().Truncate(time.Minute),
		minutes: int(cfg.Duration / time.Minute),
	}
	m.tag = strconv.FormatUint(mix(cfg.Seed, uint64(m.start.Unix()/60)), 36)
	m.clock.Store(m.start.UnixNano())
	source := "sim-" + strconv.FormatUint(cfg.Seed, 36) + "-" + cfg.Scenario
	for i, v := range Vendors() {
		b, err := cells.New(
			cells.WithClock(m.now),
			cells.WithThresholds(p.MinDevices, p.MinTenants),
			cells.WithLateness(0),
			cells.WithSource(source),
		)
		if err != nil {
			return nil, err
		}
		f := &fleet{v: v, idx: i, b: b, noiseHr: -1, effectAt: -1,
			rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed0000+uint64(i)))}
		f.populate(rand.New(rand.NewPCG(cfg.Seed, 0xf1ee7000+uint64(i))), &p)
		m.fleets = append(m.fleets, f)
	}
	m.plan()
	m.truth = m.plannedTruth()
	return m, nil
}

// mix is a 64-bit finalizer (splitmix64) of two values.
func mix(a, b uint64) uint64 {
	z := a ^ (b * 0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (m *Model) now() time.Time { return time.Unix(0, m.clock.Load()).UTC() }

// pick returns an index drawn with the given weights (summing to about 1).
func pick(r *rand.Rand, n int, weight func(int) float64) int {
	u := r.Float64()
	for i := range n - 1 {
		if u -= weight(i); u < 0 {
			return i
		}
	}
	return n - 1
}

// populate draws the vendor's tenants and devices.
func (f *fleet) populate(r *rand.Rand, p *Params) {
	n := p.devicesOf(f.v.Org)
	f.devs = make([]device, 0, n)
	spread := int(p.AdoptSpread / time.Minute)
	ringOf := func() uint8 {
		u := r.Float64()
		for i, s := range p.RingShares {
			if u -= s; u < 0 {
				return uint8(i)
			}
		}
		return 3
	}
	for len(f.devs) < n {
		size := int(math.Round(math.Exp(math.Log(p.TenantMedian) + p.TenantSigma*r.NormFloat64())))
		size = min(max(size, p.TenantMin), p.TenantMax, n-len(f.devs))
		home := pick(r, len(regions), func(i int) float64 { return regions[i].Share })
		t := int32(len(f.tenants))
		f.tenants = append(f.tenants, fmt.Sprintf("%s-tenant-%05d", f.v.Org, t))
		for range size {
			reg := home
			if r.Float64() < p.AwayShare {
				reg = pick(r, len(regions), func(i int) float64 { return regions[i].Share })
			}
			f.devs = append(f.devs, device{
				id:      fmt.Sprintf("%s-device-%07d", f.v.Org, len(f.devs)),
				tenant:  t,
				region:  uint8(reg),
				build:   uint8(pick(r, build4169, func(i int) float64 { return builds[i].Share })),
				arm:     r.Float64() < p.ArmShare,
				ring:    ringOf(),
				osRing:  ringOf(),
				delay:   uint8(r.IntN(spread)),
				osDelay: uint8(r.IntN(spread)),
				sec:     uint8(r.IntN(60)),
			})
			if f.devs[len(f.devs)-1].build == build3880 {
				f.onFrom++
			}
		}
	}
}

// rolloutID names a rollout of product to version, unique per seed and
// start.
func (m *Model) rolloutID(product, version string) string {
	return product + "-" + strings.NewReplacer(".", "-", "_", "-").Replace(version) + "-" + m.tag
}

// plan schedules the vendors' content rollouts and the Windows update.
func (m *Model) plan() {
	p := &m.p
	min := func(d time.Duration) int { return int(d / time.Minute) }
	mk := func(org, product, channel, version, previous string, vendor int, at time.Duration, stages []phxv1.Ring) *plan {
		pl := &plan{org: org, vendor: vendor, stage: -1, lastUpd: -1}
		r := &phxv1.Rollout{
			RolloutId: m.rolloutID(product, version), Product: product, ContentChannel: channel,
			ContentVersion: version, PreviousVersion: previous, State: phxv1.RolloutState_ROLLOUT_ACTIVE,
			CurrentRing: stages[0], Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER},
		}
		t := min(at)
		for _, ring := range stages {
			bake := p.Bake[ring-phxv1.Ring_RING_INTERNAL]
			r.Schedule = append(r.Schedule, &phxv1.RolloutStage{Ring: ring, TargetPercent: 100, BakeTime: durationpb.New(bake)})
			pl.starts = append(pl.starts, t)
			t += min(bake)
		}
		pl.complete = t
		for i := range pl.release {
			pl.release[i] = never
			for s, ring := range stages {
				if int(ring-phxv1.Ring_RING_INTERNAL) >= i {
					pl.release[i] = pl.starts[s]
					break
				}
			}
		}
		pl.Rollout = r
		return pl
	}
	for i, f := range m.fleets {
		stages := rings
		if m.cfg.Scenario == ChannelFile291 && f.v.Org == "contoso" {
			stages = rings[1:] // released to canary (and internal) first
		}
		f.roll = mk(f.v.Org, f.v.Product, f.v.Channel, f.v.Next, f.v.Previous, i,
			p.RolloutStart+time.Duration(i)*p.Stagger, stages)
		m.rollouts = append(m.rollouts, f.roll)
	}
	m.windows = mk(PlatformOrg, PlatformProduct, "", UpdateTo, UpdateFrom, -1,
		p.RolloutStart+time.Duration(len(m.fleets))*p.Stagger, rings)
	m.rollouts = append(m.rollouts, m.windows)
}

// Truth is the ground truth of a run: which rollout is faulty, where the
// fault shows, when it started and when its first effect happened. A
// detector is right if it flags RolloutID from cells of AffectedProduct on
// AffectedBuilds, after FirstFaultyWindow.
type Truth struct {
	// Scenario is the scenario's name.
	Scenario string
	// Faulty is false for Normal: no rollout is faulty.
	Faulty bool
	// RolloutID is the faulty rollout; Org announced it.
	RolloutID, Org string
	// Product and Version are what the faulty rollout rolls out.
	Product, Version string
	// AffectedProduct is the product whose cells show the fault (for
	// PlatformConflict, fabrikam's, not the rollout's product).
	AffectedProduct string
	// AffectedBuilds are the OS builds on which the fault shows.
	AffectedBuilds []string
	// Effect says what the fault does.
	Effect string
	// Release is when the faulty rollout's first stage starts.
	Release time.Time
	// FaultStart is when the fault first reached a device it affects (the
	// device took the faulty version); zero until then.
	FaultStart time.Time
	// FirstFaultyWindow is the start of the first one-minute window with
	// an effect of the fault (a device silent in a boot loop, a crash the
	// fault added): the window of the first faulty cell, before any
	// roll-up; zero until then.
	FirstFaultyWindow time.Time
	// Devices is how many devices the fault affects as of the latest
	// minute: the devices in a boot loop, or the devices on the faulty
	// version and build that were on in that minute.
	Devices int
}

func (m *Model) plannedTruth() Truth {
	t := Truth{Scenario: m.cfg.Scenario}
	var pl *plan
	switch m.cfg.Scenario {
	case ChannelFile291:
		pl, t.AffectedProduct, t.AffectedBuilds = m.fleets[0].roll, "contoso-av", slices.Clone(BootLoopBuilds)
		t.Effect = "boot loop: devices that take the version go silent"
	case SlowRegression:
		pl, t.AffectedProduct, t.AffectedBuilds = m.fleets[2].roll, "northwind-sensor", []string{RegressionBuild}
		t.Effect = fmt.Sprintf("kernel crashes ×%g on %s", m.p.RegressionFactor, RegressionBuild)
	case PlatformConflict:
		pl, t.AffectedProduct, t.AffectedBuilds = m.windows, "fabrikam-edr", []string{ConflictBuild}
		t.Effect = fmt.Sprintf("fabrikam-edr devices crash (+%g per device-hour) on %s", m.p.ConflictCrash, ConflictBuild)
	default:
		return t
	}
	r := pl.Rollout
	t.Faulty, t.RolloutID, t.Org, t.Product, t.Version = true, r.RolloutId, pl.org, r.Product, r.ContentVersion
	t.Release = m.minuteTime(pl.starts[0])
	return t
}

func (m *Model) minuteTime(i int) time.Time { return m.start.Add(time.Duration(i) * time.Minute) }

// Start returns the start of the simulated time.
func (m *Model) Start() time.Time { return m.start }

// End returns the end of the simulated time.
func (m *Model) End() time.Time { return m.minuteTime(m.minutes) }

// Now returns the simulated time: the end of the last minute simulated.
func (m *Model) Now() time.Time { return m.minuteTime(m.next) }

// Done reports whether every minute has been simulated.
func (m *Model) Done() bool { return m.next >= m.minutes }

// Truth returns the ground truth as it stands.
func (m *Model) Truth() Truth {
	t := m.truth
	t.AffectedBuilds = slices.Clone(t.AffectedBuilds)
	return t
}

// Rollouts returns the rollouts as last announced or updated; rollouts
// not announced yet have revision 0 and are in their planned first stage.
func (m *Model) Rollouts() []*phxv1.Rollout {
	out := make([]*phxv1.Rollout, len(m.rollouts))
	for i, pl := range m.rollouts {
		out[i] = pl.Rollout
	}
	return out
}

// Orgs returns the orgs that publish during a run: the vendors, then the
// platform.
func (m *Model) Orgs() []string {
	var out []string
	for _, f := range m.fleets {
		out = append(out, f.v.Org)
	}
	return append(out, PlatformOrg)
}

// Minute is what one simulated minute produced.
type Minute struct {
	// Window is the start of the minute; its cells are in Cells.
	Window time.Time
	// Cells are the cells each vendor's builder emitted when the window
	// closed (one entry per vendor, in Orgs order; rolled-up cells of
	// longer windows come when those close).
	Cells []OrgCells
	// Changes are the rollout announcements and updates of the minute, to
	// be applied in order.
	Changes []Change
	// Events are what happened, for progress reports.
	Events []Event
}

// OrgCells are the cells of one org.
type OrgCells struct {
	// Org publishes the cells.
	Org string
	// Cells are the org's cells.
	Cells []*phxv1.HealthSignal
}

// Change is a rollout announcement or update.
type Change struct {
	// Org announces or updates the rollout.
	Org string
	// Announce: a new rollout; else an update of Paths.
	Announce bool
	// Rollout carries the values (a snapshot; its revision is not kept).
	Rollout *phxv1.Rollout
	// Paths are the fields an update changes.
	Paths []string
}

// Event kinds.
const (
	// EventRollout: a rollout was announced, moved to a ring, or completed.
	EventRollout = "rollout"
	// EventFaultStart: the fault reached its first device.
	EventFaultStart = "fault-start"
	// EventFirstFaulty: the first window with an effect of the fault.
	EventFirstFaulty = "first-faulty-window"
)

// Event is something that happened in a minute.
type Event struct {
	// Time it happened (simulated).
	Time time.Time
	// Kind is one of the Event constants.
	Kind string
	// RolloutID concerned.
	RolloutID string
	// Text describes it in a few words.
	Text string
}

// Step simulates the next minute: rollouts move, every device that is on
// reports (a check-in, or a failure) to its vendor's builder, and the
// window is closed and its cells returned. It fails once the run is Done.
func (m *Model) Step() (*Minute, error) {
	if m.Done() {
		return nil, errors.New("the run is over")
	}
	i := m.next
	t := m.minuteTime(i)
	out := &Minute{Window: t}
	m.clock.Store(t.UnixNano())
	for _, pl := range m.rollouts {
		m.advance(pl, i, out)
	}
	rates := m.rates(t)
	var wg sync.WaitGroup
	for _, f := range m.fleets {
		wg.Go(func() { f.step(m, i, t, rates[f.idx]) })
	}
	wg.Wait()
	for _, f := range m.fleets {
		if f.lastErr != nil {
			return nil, fmt.Errorf("%s: %w", f.v.Org, f.lastErr)
		}
	}
	m.observeTruth(out)
	m.progress(i, out)
	end := t.Add(time.Minute)
	m.clock.Store(end.UnixNano())
	for _, f := range m.fleets {
		cs, _ := f.b.Flush(end)
		out.Cells = append(out.Cells, OrgCells{Org: f.v.Org, Cells: cs})
	}
	m.next++
	return out, nil
}

func ringLabel(r phxv1.Ring) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "RING_"))
}

// advance moves pl to the stage of minute i.
func (m *Model) advance(pl *plan, i int, out *Minute) {
	if pl.done {
		return
	}
	r := pl.Rollout
	t := m.minuteTime(i)
	for s := pl.stage + 1; s < len(pl.starts) && pl.starts[s] <= i; s++ {
		pl.stage = s
		r.CurrentRing = r.Schedule[s].Ring
		if s == 0 {
			r.PercentDeployed = 0
			out.Changes = append(out.Changes, Change{Org: pl.org, Announce: true, Rollout: cloneRollout(r)})
			out.Events = append(out.Events, Event{Time: t, Kind: EventRollout, RolloutID: r.RolloutId,
				Text: fmt.Sprintf("%s announces %s %s → %s, %s first", pl.org, r.Product, r.PreviousVersion, r.ContentVersion, ringLabel(r.CurrentRing))})
			continue
		}
		out.Changes = append(out.Changes, Change{Org: pl.org, Rollout: cloneRollout(r), Paths: []string{"current_ring", "percent_deployed"}})
		out.Events = append(out.Events, Event{Time: t, Kind: EventRollout, RolloutID: r.RolloutId,
			Text: fmt.Sprintf("%s %s reaches %s (%.1f %% deployed)", r.Product, r.ContentVersion, ringLabel(r.CurrentRing), r.PercentDeployed)})
	}
	if pl.stage >= 0 && i >= pl.complete {
		pl.done = true
		r.State = phxv1.RolloutState_ROLLOUT_COMPLETED
		out.Changes = append(out.Changes, Change{Org: pl.org, Rollout: cloneRollout(r), Paths: []string{"state", "percent_deployed"}})
		out.Events = append(out.Events, Event{Time: t, Kind: EventRollout, RolloutID: r.RolloutId,
			Text: fmt.Sprintf("%s %s completed (%.1f %% deployed)", r.Product, r.ContentVersion, r.PercentDeployed)})
	}
}

// progress updates percent_deployed from the devices, and reports it every
// ten minutes while a rollout is active.
func (m *Model) progress(i int, out *Minute) {
	for _, pl := range m.rollouts {
		if pl.stage < 0 || pl.done {
			continue
		}
		var n, of int
		for _, f := range m.fleets {
			if pl.vendor < 0 {
				n += f.moved
				of += f.onFrom
			} else if pl.vendor == f.idx {
				n, of = f.adopted, len(f.devs)
			}
		}
		pct := 0.0
		if of > 0 {
			pct = math.Round(1000*float64(n)/float64(of)) / 10
		}
		pl.Rollout.PercentDeployed = pct
		if pct != pl.lastPct && i-pl.lastUpd >= 10 {
			pl.lastPct, pl.lastUpd = pct, i
			out.Changes = append(out.Changes, Change{Org: pl.org, Rollout: cloneRollout(pl.Rollout), Paths: []string{"percent_deployed"}})
		}
	}
}

func cloneRollout(r *phxv1.Rollout) *phxv1.Rollout {
	c := &phxv1.Rollout{}
	*c = phxv1.Rollout{
		RolloutId: r.RolloutId, Product: r.Product, ContentChannel: r.ContentChannel,
		ContentVersion: r.ContentVersion, PreviousVersion: r.PreviousVersion, State: r.State,
		CurrentRing: r.CurrentRing, PercentDeployed: r.PercentDeployed, Schedule: r.Schedule,
		Audience: r.Audience, Reason: r.Reason,
	}
	return c
}

// observeTruth merges what the fleets saw of the fault this minute.
func (m *Model) observeTruth(out *Minute) {
	if !m.truth.Faulty {
		return
	}
	n := 0
	for _, f := range m.fleets {
		n += f.hit
		if !f.faultAt.IsZero() && (m.truth.FaultStart.IsZero() || f.faultAt.Before(m.truth.FaultStart)) {
			if m.truth.FaultStart.IsZero() {
				out.Events = append(out.Events, Event{Time: f.faultAt, Kind: EventFaultStart, RolloutID: m.truth.RolloutID,
					Text: fmt.Sprintf("fault reaches its first device (%s, %s)", m.truth.AffectedProduct, m.truth.Effect)})
			}
			m.truth.FaultStart = f.faultAt
		}
		if f.effectAt >= 0 {
			w := m.minuteTime(f.effectAt)
			if m.truth.FirstFaultyWindow.IsZero() || w.Before(m.truth.FirstFaultyWindow) {
				if m.truth.FirstFaultyWindow.IsZero() {
					out.Events = append(out.Events, Event{Time: w, Kind: EventFirstFaulty, RolloutID: m.truth.RolloutID,
						Text: "first window with an effect of the fault"})
				}
				m.truth.FirstFaultyWindow = w
			}
		}
	}
	m.truth.Devices = n
}

// Stats counts what a vendor's builder took and emitted.
type Stats struct {
	// Org is the vendor.
	Org string
	// Observations fed to the builder, and refused by it.
	Observations, Refused uint64
	// Cells emitted, rolled up on the way, and suppressed as too small
	// (with their devices).
	Cells, SuppressedCells, SuppressedDevices int
	// Adopted is how many devices run the vendor's new content version.
	Adopted int
}

// Stats returns per-vendor counts, in Orgs order.
func (m *Model) Stats() []Stats {
	out := make([]Stats, len(m.fleets))
	for i, f := range m.fleets {
		st := f.b.Stats()
		s := Stats{Org: f.v.Org, Observations: f.observed, Refused: f.errs, Cells: st.Totals.Cells(), Adopted: f.adopted}
		for _, t := range st.Totals.Suppressed {
			s.SuppressedCells += t.Cells
			s.SuppressedDevices += t.Devices
		}
		out[i] = s
	}
	return out
}
