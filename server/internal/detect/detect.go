package detect

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Config holds the detector's settings. The zero value of a field means its
// default (see DefaultConfig).
type Config struct {
	// Grace is how long after a window's end the detector waits for late
	// cells before it evaluates the window. Default 30 s.
	Grace time.Duration
	// CatastropheRate is the excess of (boot failures + silent) / exposed
	// over the control that makes a catastrophe. Default 0.08.
	CatastropheRate float64
	// CatastropheMinExposed is the fewest exposed devices the catastrophe
	// rule judges. Default 50.
	CatastropheMinExposed uint64
	// CatastropheDelta is the per-check error of the significance guard of
	// the catastrophe rule (Chernoff bound). Default 1e-9.
	CatastropheDelta float64
	// DefaultSilentRate is the (boot failures + silent) / exposed rate
	// assumed for the control when there is none with enough exposed
	// devices. Default 0.05.
	DefaultSilentRate float64
	// Alpha is the false-alarm probability of the regression test per
	// rollout, over the rollout's whole life. Default 0.001.
	Alpha float64
	// StreamsPerRollout is how many (OS build x failure type) tests of a
	// rollout share half of Alpha equally; later ones share the other half
	// geometrically. Default 32.
	StreamsPerRollout int
	// RiseAlpha is the false-alarm probability of each OS-build rise test
	// (per publisher, product, build and failure type, over all time).
	// Default 1e-4.
	RiseAlpha float64
	// RiseNullRatio is the failure-rate ratio of a build against the
	// publisher's other builds that counts as normal. Default 1.5.
	RiseNullRatio float64
	// ClearAfter is how many consecutive evaluated windows without the
	// condition clear a held catastrophe or rise, so that it may fire
	// again. Default 10.
	ClearAfter int
	// TimingScale is the scale of the timing score of the cross-vendor
	// ranking: a rollout that started this long before the rise scores
	// 1/e of one that started just before it. Default 2 h.
	TimingScale time.Duration
	// CandidateHorizon is how long after its last change a completed or
	// paused rollout stays a cross-vendor candidate. Default 24 h.
	CandidateHorizon time.Duration
	// PlatformProducts are the products of the platform's OS updates. A
	// rollout of one of them deploys the OS build named by its
	// content_version. Default ["windows"].
	PlatformProducts []string
	// PlatformOrg is the platform's org id, added to every advisory's
	// audience when set.
	PlatformOrg string
	// Tlp is the label of advisories. Default TLP_AMBER.
	Tlp phxv1.Tlp
	// MaxCellRefs caps the cells named by one advisory. Default 20.
	MaxCellRefs int
}

// DefaultConfig returns the default settings.
func DefaultConfig() Config {
	return Config{
		Grace:                 30 * time.Second,
		CatastropheRate:       0.08,
		CatastropheMinExposed: 50,
		CatastropheDelta:      1e-9,
		DefaultSilentRate:     0.05,
		Alpha:                 0.001,
		StreamsPerRollout:     32,
		RiseAlpha:             1e-4,
		RiseNullRatio:         1.5,
		ClearAfter:            10,
		TimingScale:           2 * time.Hour,
		CandidateHorizon:      24 * time.Hour,
		PlatformProducts:      []string{"windows"},
		Tlp:                   phxv1.Tlp_TLP_AMBER,
		MaxCellRefs:           20,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Grace == 0 {
		c.Grace = d.Grace
	}
	if c.CatastropheRate == 0 {
		c.CatastropheRate = d.CatastropheRate
	}
	if c.CatastropheMinExposed == 0 {
		c.CatastropheMinExposed = d.CatastropheMinExposed
	}
	if c.CatastropheDelta == 0 {
		c.CatastropheDelta = d.CatastropheDelta
	}
	if c.DefaultSilentRate == 0 {
		c.DefaultSilentRate = d.DefaultSilentRate
	}
	if c.Alpha == 0 {
		c.Alpha = d.Alpha
	}
	if c.StreamsPerRollout == 0 {
		c.StreamsPerRollout = d.StreamsPerRollout
	}
	if c.RiseAlpha == 0 {
		c.RiseAlpha = d.RiseAlpha
	}
	if c.RiseNullRatio == 0 {
		c.RiseNullRatio = d.RiseNullRatio
	}
	if c.ClearAfter == 0 {
		c.ClearAfter = d.ClearAfter
	}
	if c.TimingScale == 0 {
		c.TimingScale = d.TimingScale
	}
	if c.CandidateHorizon == 0 {
		c.CandidateHorizon = d.CandidateHorizon
	}
	if c.PlatformProducts == nil {
		c.PlatformProducts = d.PlatformProducts
	}
	if c.Tlp == phxv1.Tlp_TLP_UNSPECIFIED {
		c.Tlp = d.Tlp
	}
	if c.MaxCellRefs == 0 {
		c.MaxCellRefs = d.MaxCellRefs
	}
	return c
}

// Finding is one advisory the detector raises, with who should get it.
type Finding struct {
	// Key is the de-duplication key: rule and subject.
	Key string
	// Publisher is the org the advisory concerns (the rollout's owner).
	Publisher string
	// Audience is who should receive it: the publisher and the platform,
	// under Config.Tlp.
	Audience *phxv1.Audience
	// WindowEnd is the end of the window whose evaluation raised it.
	WindowEnd time.Time
	// Advisory is the advisory to publish. Its id is derived from Key and
	// WindowEnd, so a replay after a restart yields the same id.
	Advisory *phxv1.Advisory
	// Ranking is, for a cross-vendor advisory, the live rollouts ranked
	// by how well they explain the rise, best first.
	Ranking []Candidate
}

// Stats are the detector's counters, for metrics.
type Stats struct {
	// CellsObserved counts the cells taken by ObserveCell.
	CellsObserved uint64
	// CellsLate counts the cells dropped because their window had already
	// been evaluated.
	CellsLate uint64
	// CellsInvalid counts the cells dropped for lacking a window or a
	// product.
	CellsInvalid uint64
	// WindowsEvaluated counts the window ends evaluated.
	WindowsEvaluated uint64
	// Findings counts the findings raised.
	Findings uint64
	// LastWindowEnd is the end of the last window evaluated (zero before
	// the first). The detector's lag is the time since.
	LastWindowEnd time.Time
	// PendingWindows counts the window ends waiting for evaluation.
	PendingWindows int
}

// failure types tested separately by the regression test.
const (
	ftKernel = iota
	ftBoot
	ftHang
	ftAgent
	numFailureTypes
)

var failureNames = [numFailureTypes]string{"kernel_crash", "boot_failure", "hang", "agent_crash"}

// agg is the sum of the cells of one window end and one
// (publisher, product, content version, rollout, OS build, ring).
type agg struct {
	Publisher      string   `json:"publisher"`
	Product        string   `json:"product"`
	ContentVersion string   `json:"content_version"`
	RolloutID      string   `json:"rollout_id,omitempty"`
	OSBuild        string   `json:"os_build"`
	Ring           int32    `json:"ring"`
	WindowStart    int64    `json:"window_start"`
	Regions        []string `json:"regions,omitempty"`
	Exposed        uint64   `json:"exposed"`
	Silent         uint64   `json:"silent"`
	Fail           [numFailureTypes]uint64

	rid string // resolved rollout, per evaluation
}

func (a *agg) failing() uint64 {
	return a.Fail[ftKernel] + a.Fail[ftBoot] + a.Fail[ftHang] + a.Fail[ftAgent]
}

// rollout is what the detector keeps of one rollout.
type rollout struct {
	ID             string `json:"id"`
	Publisher      string `json:"publisher"`
	Product        string `json:"product"`
	ContentVersion string `json:"content_version"`
	Previous       string `json:"previous,omitempty"`
	State          int32  `json:"state"`
	Start          int64  `json:"start"`
	Updated        int64  `json:"updated"`
	FirstData      int64  `json:"first_data,omitempty"`
	// Builds is where cells of the rollout were seen, with the exposed
	// devices summed over windows.
	Builds map[string]uint64 `json:"builds,omitempty"`
	// Streams counts the regression tests opened, to share Alpha.
	Streams int `json:"streams"`
}

// stream is one sequential test with its share of alpha.
type stream struct {
	Test  seqTest `json:"test"`
	Alpha float64 `json:"alpha"`
	Fired bool    `json:"fired,omitempty"`
}

// hold is a de-duplication entry: the advisory was raised and the condition
// has not cleared since.
type hold struct {
	Since int64 `json:"since"`
	Quiet int   `json:"quiet"`
}

// catPrev is the previous evaluated window of a catastrophe subject.
type catPrev struct {
	End     int64  `json:"end"`
	Exposed uint64 `json:"exposed"`
	Bad     uint64 `json:"bad"`
}

// state is everything the detector persists.
type state struct {
	Version  int                       `json:"version"`
	LastEnd  int64                     `json:"last_end"`
	Pending  map[int64]map[string]*agg `json:"pending"`
	Rollouts map[string]*rollout       `json:"rollouts"`
	Streams  map[string]*stream        `json:"streams"`
	Rises    map[string]*stream        `json:"rises"`
	CatPrev  map[string]catPrev        `json:"cat_prev"`
	Holds    map[string]*hold          `json:"holds"`
	Stats    statsState                `json:"stats"`
}

type statsState struct {
	CellsObserved    uint64 `json:"cells_observed"`
	CellsLate        uint64 `json:"cells_late"`
	CellsInvalid     uint64 `json:"cells_invalid"`
	WindowsEvaluated uint64 `json:"windows_evaluated"`
	Findings         uint64 `json:"findings"`
}

func newState() *state {
	return &state{
		Version:  1,
		Pending:  map[int64]map[string]*agg{},
		Rollouts: map[string]*rollout{},
		Streams:  map[string]*stream{},
		Rises:    map[string]*stream{},
		CatPrev:  map[string]catPrev{},
		Holds:    map[string]*hold{},
	}
}

// Detector turns health cells and rollout states into advisories. It is
// safe for concurrent use; its output depends only on its inputs and the
// times passed to it.
type Detector struct {
	cfg Config
	mu  sync.Mutex
	st  *state
}

// New returns a detector with cfg (zero fields take their defaults).
func New(cfg Config) *Detector {
	return &Detector{cfg: cfg.withDefaults(), st: newState()}
}

// Config returns the settings in use, defaults filled in.
func (d *Detector) Config() Config { return d.cfg }

// ObserveCell takes one stored health cell of publisher. Cells whose window
// was already evaluated are counted as late and dropped.
func (d *Detector) ObserveCell(publisher string, c *phxv1.HealthSignal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.st
	st.Stats.CellsObserved++
	if c == nil || c.GetWindowStart() == nil || c.GetWindowSeconds() == 0 || c.GetProduct() == "" {
		st.Stats.CellsInvalid++
		return
	}
	start := c.GetWindowStart().GetSeconds()
	end := start + int64(c.GetWindowSeconds())
	if end <= st.LastEnd {
		st.Stats.CellsLate++
		return
	}
	key := strings.Join([]string{publisher, c.GetProduct(), c.GetContentVersion(), c.GetRolloutId(),
		c.GetOsBuild(), fmt.Sprint(int32(c.GetRing())), fmt.Sprint(start)}, "\x1f")
	m := st.Pending[end]
	if m == nil {
		m = map[string]*agg{}
		st.Pending[end] = m
	}
	a := m[key]
	if a == nil {
		a = &agg{Publisher: publisher, Product: c.GetProduct(), ContentVersion: c.GetContentVersion(),
			RolloutID: c.GetRolloutId(), OSBuild: c.GetOsBuild(), Ring: int32(c.GetRing()), WindowStart: start}
		m[key] = a
	}
	if r := c.GetRegion(); r != "" && !slices.Contains(a.Regions, r) {
		a.Regions = append(a.Regions, r)
		slices.Sort(a.Regions)
	}
	a.Exposed += uint64(c.GetDevicesExposed())
	a.Silent += uint64(c.GetDevicesSilent())
	a.Fail[ftKernel] += uint64(c.GetKernelCrashDevices())
	a.Fail[ftBoot] += uint64(c.GetBootFailureDevices())
	a.Fail[ftHang] += uint64(c.GetHangDevices())
	a.Fail[ftAgent] += uint64(c.GetAgentCrashDevices())
}

// ObserveRollout takes one rollout state of publisher, stored at time at.
// A rollout that resumes (paused, then active again) starts its regression
// tests afresh and may raise a new regression advisory.
func (d *Detector) ObserveRollout(publisher string, r *phxv1.Rollout, at time.Time) {
	if r == nil || r.GetRolloutId() == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.st
	ro := st.Rollouts[r.GetRolloutId()]
	if ro == nil {
		// The start is the earlier of its creation and the event time
		// it was observed at: a rollout created on the wall clock while
		// its cells replay past windows starts where the cells put it.
		start := at.Unix()
		if ca := r.GetCreatedAt(); ca != nil && ca.GetSeconds() > 0 && ca.GetSeconds() < start {
			start = ca.GetSeconds()
		}
		ro = &rollout{ID: r.GetRolloutId(), Publisher: publisher, Start: start, Builds: map[string]uint64{}}
		st.Rollouts[ro.ID] = ro
	}
	prev := phxv1.RolloutState(ro.State)
	ro.Product = r.GetProduct()
	ro.ContentVersion = r.GetContentVersion()
	ro.Previous = r.GetPreviousVersion()
	ro.State = int32(r.GetState())
	ro.Updated = at.Unix()
	now := r.GetState()
	if prev == phxv1.RolloutState_ROLLOUT_PAUSED && now == phxv1.RolloutState_ROLLOUT_ACTIVE {
		d.resetRegression(ro)
	}
	if now == phxv1.RolloutState_ROLLOUT_ROLLED_BACK || now == phxv1.RolloutState_ROLLOUT_COMPLETED {
		d.dropStreams(ro)
	}
}

func (d *Detector) resetRegression(ro *rollout) {
	d.dropStreams(ro)
	delete(d.st.Holds, "regression|"+ro.ID)
}

func (d *Detector) dropStreams(ro *rollout) {
	for k := range d.st.Streams {
		if strings.HasPrefix(k, ro.ID+"|") {
			delete(d.st.Streams, k)
		}
	}
	ro.Streams = 0
}

// Stats returns the counters.
func (d *Detector) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Stats{
		CellsObserved:    d.st.Stats.CellsObserved,
		CellsLate:        d.st.Stats.CellsLate,
		CellsInvalid:     d.st.Stats.CellsInvalid,
		WindowsEvaluated: d.st.Stats.WindowsEvaluated,
		Findings:         d.st.Stats.Findings,
		PendingWindows:   len(d.st.Pending),
	}
	if d.st.LastEnd > 0 {
		s.LastWindowEnd = time.Unix(d.st.LastEnd, 0).UTC()
	}
	return s
}

// Step evaluates, in time order, every window that ended at least Grace
// before now, and returns the advisories raised. Findings carry now as their
// detection time.
func (d *Detector) Step(now time.Time) []Finding {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.st
	var ends []int64
	for e := range st.Pending {
		if time.Unix(e, 0).Add(d.cfg.Grace).After(now) {
			continue
		}
		ends = append(ends, e)
	}
	slices.Sort(ends)
	var out []Finding
	for _, e := range ends {
		m := st.Pending[e]
		delete(st.Pending, e)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		cells := make([]*agg, len(keys))
		for i, k := range keys {
			cells[i] = m[k]
		}
		out = append(out, d.evaluate(e, cells, now)...)
		st.LastEnd = max(st.LastEnd, e)
		st.Stats.WindowsEvaluated++
	}
	d.purge(now)
	st.Stats.Findings += uint64(len(out))
	return out
}

// purge forgets finished rollouts past the candidate horizon.
func (d *Detector) purge(now time.Time) {
	for id, ro := range d.st.Rollouts {
		s := phxv1.RolloutState(ro.State)
		if s == phxv1.RolloutState_ROLLOUT_ACTIVE {
			continue
		}
		if now.Unix()-ro.Updated > int64(d.cfg.CandidateHorizon/time.Second) {
			d.dropStreams(ro)
			delete(d.st.Rollouts, id)
		}
	}
}

// resolve names the rollout of a cell: its rollout_id, or else the active
// rollout of the same publisher, product and content version.
func (d *Detector) resolve(a *agg, byVersion map[string]string) string {
	if a.RolloutID != "" {
		return a.RolloutID
	}
	return byVersion[a.Publisher+"\x1f"+a.Product+"\x1f"+a.ContentVersion]
}

func (d *Detector) rolloutsByVersion() map[string]string {
	ids := make([]string, 0, len(d.st.Rollouts))
	for id := range d.st.Rollouts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	m := map[string]string{}
	for _, id := range ids {
		ro := d.st.Rollouts[id]
		k := ro.Publisher + "\x1f" + ro.Product + "\x1f" + ro.ContentVersion
		if _, ok := m[k]; !ok || phxv1.RolloutState(ro.State) == phxv1.RolloutState_ROLLOUT_ACTIVE {
			m[k] = id
		}
	}
	return m
}

// subject is what a cell is judged as: its rollout, or its product and
// content version when it belongs to none.
func subjectOf(a *agg) string {
	if a.rid != "" {
		return "rollout:" + a.rid
	}
	return "version:" + a.Publisher + "/" + a.Product + "@" + a.ContentVersion
}

// evaluate runs the rules on one window end.
func (d *Detector) evaluate(end int64, cells []*agg, now time.Time) []Finding {
	byVersion := d.rolloutsByVersion()
	for _, a := range cells {
		a.rid = d.resolve(a, byVersion)
		if ro := d.st.Rollouts[a.rid]; ro != nil {
			if ro.FirstData == 0 || a.WindowStart < ro.FirstData {
				ro.FirstData = a.WindowStart
			}
			ro.Builds[a.OSBuild] += a.Exposed
		}
	}
	var out []Finding
	out = append(out, d.catastrophe(end, cells, now)...)
	out = append(out, d.regression(end, cells, now)...)
	out = append(out, d.crossVendor(end, cells, now)...)
	return out
}

// fire records that the condition of key holds; it reports whether the
// advisory is new (the key was not held).
func (d *Detector) fire(key string, end int64) bool {
	if h := d.st.Holds[key]; h != nil {
		h.Quiet = 0
		return false
	}
	d.st.Holds[key] = &hold{Since: end}
	return true
}

// quiet records an evaluation of key without its condition; after
// ClearAfter in a row the key is released.
func (d *Detector) quiet(key string) {
	h := d.st.Holds[key]
	if h == nil {
		return
	}
	h.Quiet++
	if h.Quiet >= d.cfg.ClearAfter {
		delete(d.st.Holds, key)
	}
}

func (d *Detector) audience(publishers ...string) *phxv1.Audience {
	var orgs []string
	for _, p := range append(publishers, d.cfg.PlatformOrg) {
		if p != "" && !slices.Contains(orgs, p) {
			orgs = append(orgs, p)
		}
	}
	return &phxv1.Audience{Tlp: d.cfg.Tlp, Orgs: orgs}
}

func (d *Detector) finding(key, publisher string, end int64, now time.Time, adv *phxv1.Advisory, extra ...string) Finding {
	h := sha256.Sum256([]byte(key + "\x1f" + fmt.Sprint(end)))
	adv.Id = "det-" + hex.EncodeToString(h[:12])
	return Finding{
		Key:       key,
		Publisher: publisher,
		Audience:  d.audience(append([]string{publisher}, extra...)...),
		WindowEnd: time.Unix(end, 0).UTC(),
		Advisory:  adv,
	}
}

func (d *Detector) cellRefs(cells []*agg) []*phxv1.CellRef {
	var refs []*phxv1.CellRef
	for _, a := range cells {
		regions := a.Regions
		if len(regions) == 0 {
			regions = []string{""}
		}
		for _, r := range regions {
			if len(refs) >= d.cfg.MaxCellRefs {
				return refs
			}
			refs = append(refs, &phxv1.CellRef{Product: a.Product, ContentVersion: a.ContentVersion,
				OsBuild: a.OSBuild, Ring: phxv1.Ring(a.Ring), Region: r,
				WindowStart: timestamppb.New(time.Unix(a.WindowStart, 0).UTC())})
		}
	}
	return refs
}

func ts(unix int64) *timestamppb.Timestamp {
	if unix == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(unix, 0).UTC())
}

func ratioText(r float64) string {
	if math.IsInf(r, 1) {
		return "inf"
	}
	return fmt.Sprintf("%.2f", r)
}
