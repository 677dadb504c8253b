package cells

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// An Event is what an observation reports.
type Event uint8

// Events. The zero Event is CheckIn.
const (
	// CheckIn: the device reported in and nothing failed.
	CheckIn Event = iota
	// KernelCrash: the OS crashed (a bugcheck).
	KernelCrash
	// BootFailure: the device failed to boot.
	BootFailure
	// Hang: the device hung.
	Hang
	// AgentCrash: the security agent crashed.
	AgentCrash
)

var eventNames = [...]string{"check-in", "kernel-crash", "boot-failure", "hang", "agent-crash"}

// String returns the event's name.
func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("Event(%d)", e)
}

// Flags of a device in a cell and window.
const (
	flagKernelCrash uint8 = 1 << iota
	flagBootFailure
	flagHang
	flagAgentCrash
	flagReported // reported in the window
	flagSilent   // expected, did not report
)

var eventFlags = [...]uint8{CheckIn: 0, KernelCrash: flagKernelCrash, BootFailure: flagBootFailure, Hang: flagHang, AgentCrash: flagAgentCrash}

// Observation is one report of one device, as a vendor backend receives it.
// Device and Tenant are hashed on arrival and never leave the process; the
// other fields (except Time and Event) form the cell key and must match the
// hub's patterns.
type Observation struct {
	// Time of the observation; the zero Time means the builder's clock now.
	Time time.Time
	// Device is the device's id in the vendor's backend. Required.
	Device string
	// Tenant is the id of the customer the device belongs to. Required.
	Tenant string

	// Product, e.g. "contoso-av". Required.
	Product string
	// ProductVersion, the agent version, e.g. "7.16.18". Required.
	ProductVersion string
	// ContentChannel, e.g. "channel-291". Optional.
	ContentChannel string
	// ContentVersion running on the device, e.g. "291.1". Required with a
	// ContentChannel.
	ContentVersion string
	// RolloutID of the rollout the device is in, if any.
	RolloutID string
	// Ring of the device. Required.
	Ring phxv1.Ring
	// OSFamily: "windows", "macos" or "linux". Required.
	OSFamily string
	// OSBuild, e.g. "10.0.22631.3880". Required.
	OSBuild string
	// Arch: "x64", "arm64" or "x86". Required.
	Arch string
	// Region: an ISO 3166-1 alpha-2 country code ("DE"), or a continent or
	// "global" when the country is not known; empty means "global".
	Region string

	// Event is what happened; the zero value is CheckIn. Any observation
	// counts as a check-in.
	Event Event
	// BugcheckCode of a failure, e.g. "0x50". Optional; not with CheckIn.
	BugcheckCode string
	// Module that faulted, e.g. "csagent.sys". Optional; not with CheckIn.
	Module string
	// ModuleVersion of the faulting module. Optional; needs BugcheckCode or
	// Module.
	ModuleVersion string
}

// cellKey is what a cell is keyed by, window aside.
type cellKey struct {
	product, productVersion, contentChannel, contentVersion, rolloutID string
	ring                                                               phxv1.Ring
	osFamily, osBuild, arch, region                                    string
}

func keyOf(o *Observation) cellKey {
	return cellKey{
		product: o.Product, productVersion: o.ProductVersion,
		contentChannel: o.ContentChannel, contentVersion: o.ContentVersion,
		rolloutID: o.RolloutID, ring: o.Ring,
		osFamily: o.OSFamily, osBuild: o.OSBuild, arch: o.Arch, region: o.Region,
	}
}

func (k *cellKey) matches(o *Observation) bool {
	return k.product == o.Product && k.productVersion == o.ProductVersion &&
		k.contentVersion == o.ContentVersion && k.osBuild == o.OSBuild &&
		k.region == o.Region && k.ring == o.Ring && k.contentChannel == o.ContentChannel &&
		k.rolloutID == o.RolloutID && k.osFamily == o.OSFamily && k.arch == o.Arch
}

func (k cellKey) clone() cellKey {
	return cellKey{
		product: strings.Clone(k.product), productVersion: strings.Clone(k.productVersion),
		contentChannel: strings.Clone(k.contentChannel), contentVersion: strings.Clone(k.contentVersion),
		rolloutID: strings.Clone(k.rolloutID), ring: k.ring,
		osFamily: strings.Clone(k.osFamily), osBuild: strings.Clone(k.osBuild),
		arch: strings.Clone(k.arch), region: strings.Clone(k.region),
	}
}

// cellEntry is an interned cell key. The key never changes.
type cellEntry struct {
	key  cellKey
	used atomic.Int64 // the latest window a device was seen in this cell
}

// touch raises used to w.
func (c *cellEntry) touch(w int64) {
	for {
		u := c.used.Load()
		if u >= w || c.used.CompareAndSwap(u, w) {
			return
		}
	}
}

// bucketKey is a failure bucket.
type bucketKey struct{ code, module, version string }

type bucketEntry struct {
	key  bucketKey
	used int64 // the latest window with a failure in this bucket
}

// mark is one device's presence in one cell and window.
type mark struct {
	cell  *cellEntry
	win   int64
	flags uint8
}

// device is what a builder remembers of one device: hashes only.
type device struct {
	id     uint64     // keyed hash of the device id
	tkey   uint64     // keyed hash of the tenant id, to notice a change
	tenant uint64     // tenant pseudonym: HMAC-SHA256(tenant key, tenant id), truncated
	last   int64      // latest window seen
	seen   uint64     // bit k: seen in window last-k
	cell   *cellEntry // cell of the latest observation
	live   bool
	nm     uint8   // marks in use
	marks  [2]mark // marks of open windows
	more   []mark  // beyond two marks
}

func (d *device) mark(w int64, c *cellEntry) *mark {
	for i := range d.nm {
		if m := &d.marks[i]; m.win == w && m.cell == c {
			return m
		}
	}
	for i := range d.more {
		if m := &d.more[i]; m.win == w && m.cell == c {
			return m
		}
	}
	if int(d.nm) < len(d.marks) {
		d.marks[d.nm] = mark{cell: c, win: w}
		d.nm++
		return &d.marks[d.nm-1]
	}
	d.more = append(d.more, mark{cell: c, win: w})
	return &d.more[len(d.more)-1]
}

func (d *device) see(w int64, c *cellEntry) {
	switch {
	case w > d.last:
		if s := w - d.last; s >= 64 {
			d.seen = 0
		} else {
			d.seen <<= uint(s)
		}
		d.seen |= 1
		d.last, d.cell = w, c
	case w == d.last:
		d.seen |= 1
		d.cell = c
	default:
		if k := d.last - w; k < 64 {
			d.seen |= 1 << uint(k)
		}
	}
}

// expected reports whether the device was seen in one of the h windows
// before w.
func (d *device) expected(w int64, h int) bool {
	for x := w - int64(h); x < w; x++ {
		if k := d.last - x; k >= 0 && k < 64 && d.seen&(1<<uint(k)) != 0 {
			return true
		}
	}
	return false
}

type failKey struct {
	win    int64
	cell   *cellEntry
	bucket *bucketEntry
	dev    uint64
}

type tenantEntry struct {
	mac  uint64
	used int64
}

// noWindow marks "no window yet".
const noWindow = math.MinInt64

// shard holds the devices whose hash falls into it, under one lock.
type shard struct {
	mu      sync.Mutex
	closed  int64 // latest closed window
	minOpen int64 // earliest window observed since the last close; noWindow if none
	index   map[uint64]int32
	devs    []device
	free    []int32
	tenants map[uint64]tenantEntry
	buckets map[bucketKey]*bucketEntry
	fails   map[failKey]struct{}
	mac     hash.Hash
	buf     []byte
	sum     [sha256.Size]byte

	accepted, late uint64
	_              [64]byte // keep shards off each other's cache lines
}

// Builder turns observations into health cells. It is safe for concurrent
// use: Observe may be called from many goroutines while another flushes.
type Builder struct {
	cfg       config
	seed      maphash.Seed
	winSec    int64
	coarseSec int64   // the longer window of LevelWindow; 0 if none
	levels    []Level // the roll-up levels in order
	baseLast  int     // index in levels of the last level of a base window

	shards []shard
	mask   uint64

	cellsMu sync.RWMutex
	cells   map[cellKey]*cellEntry

	nDevices atomic.Int64
	curWin   atomic.Int64

	invalid, future, overLimit atomic.Uint64
	running                    atomic.Bool

	flushMu     sync.Mutex
	closed      int64
	waiting     map[int64][]*unit // units held for the longer window, by its start
	nWaiting    int
	totals      Report
	unpublished []*phxv1.HealthSignal
}

// New returns a builder configured by opts.
func New(opts ...Option) (*Builder, error) {
	cfg, err := defaultConfig()
	if err != nil {
		return nil, fmt.Errorf("phx cells: %w", err)
	}
	for _, o := range opts {
		if err := o(cfg); err != nil {
			return nil, fmt.Errorf("phx cells: %w", err)
		}
	}
	if cfg.lateness > cfg.window {
		return nil, fmt.Errorf("phx cells: WithLateness: %v is longer than the window (%v)", cfg.lateness, cfg.window)
	}
	b := &Builder{
		cfg:     *cfg,
		seed:    maphash.MakeSeed(),
		winSec:  int64(cfg.window / time.Second),
		shards:  make([]shard, cfg.shards),
		mask:    uint64(cfg.shards - 1),
		cells:   make(map[cellKey]*cellEntry),
		closed:  noWindow,
		waiting: make(map[int64][]*unit),
	}
	switch b.winSec {
	case 60:
		b.coarseSec = 300
	case 300:
		b.coarseSec = 3600
	}
	if b.coarseSec != 0 {
		b.levels = []Level{LevelCountry, LevelContinent, LevelGlobal, LevelWindow, LevelOSVersion}
		b.baseLast = 2
	} else {
		b.levels = []Level{LevelCountry, LevelContinent, LevelGlobal, LevelOSVersion}
		b.baseLast = 3
	}
	b.curWin.Store(floorDiv(cfg.clock().Unix(), b.winSec))
	for i := range b.shards {
		sh := &b.shards[i]
		sh.closed, sh.minOpen = noWindow, noWindow
		sh.index = make(map[uint64]int32)
		sh.tenants = make(map[uint64]tenantEntry)
		sh.buckets = make(map[bucketKey]*bucketEntry)
		sh.fails = make(map[failKey]struct{})
		sh.mac = hmac.New(sha256.New, cfg.tenantKey)
	}
	return b, nil
}

// Window returns the builder's window length.
func (b *Builder) Window() time.Duration { return b.cfg.window }

// Lateness returns how long after its end a window stays open.
func (b *Builder) Lateness() time.Duration { return b.cfg.lateness }

// Thresholds returns the minimum exposed devices and distinct tenants of
// an emitted cell.
func (b *Builder) Thresholds() (minDevices, minTenants int) {
	return b.cfg.minDevices, b.cfg.minTenants
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Observe records one observation. It does not allocate once the device,
// its tenant and its cell are known, and returns an error (test with
// errors.Is: ErrInvalid, ErrLate, ErrFuture, ErrTooManyDevices,
// ErrTooManyCells) for an observation it did not record; every refusal is
// also counted in Stats.
func (b *Builder) Observe(obs Observation) error {
	if int(obs.Event) >= len(eventFlags) {
		b.invalid.Add(1)
		return invalid("Event", "%d is not an event", obs.Event)
	}
	if obs.Device == "" || obs.Tenant == "" {
		b.invalid.Add(1)
		if obs.Device == "" {
			return invalid("Device", "is required")
		}
		return invalid("Tenant", "is required")
	}
	failure := obs.BugcheckCode != "" || obs.Module != "" || obs.ModuleVersion != ""
	if failure && obs.Event == CheckIn {
		b.invalid.Add(1)
		return invalid("Event", "a check-in has no BugcheckCode, Module or ModuleVersion")
	}
	t := obs.Time
	if t.IsZero() {
		t = b.cfg.clock()
	}
	w := floorDiv(t.Unix(), b.winSec)
	if w > b.curWin.Load()+1 && !b.notFuture(w) {
		b.future.Add(1)
		return fmt.Errorf("%w: %s is more than one window ahead of %s", ErrFuture, t.UTC().Format(time.RFC3339), b.cfg.clock().UTC().Format(time.RFC3339))
	}
	dh := maphash.String(b.seed, obs.Device)
	th := maphash.String(b.seed, obs.Tenant)

	sh := &b.shards[dh&b.mask]
	sh.mu.Lock()
	if w <= sh.closed {
		sh.late++
		sh.mu.Unlock()
		return ErrLate
	}
	var d *device
	if i, ok := sh.index[dh]; ok {
		d = &sh.devs[i]
	}
	var c *cellEntry
	if d != nil && d.cell != nil && d.cell.key.matches(&obs) {
		c = d.cell
	} else {
		var err error
		if c, err = b.cell(&obs, w); err != nil {
			sh.mu.Unlock()
			return err
		}
	}
	c.touch(w)
	var be *bucketEntry
	if failure {
		var err error
		if be, err = sh.bucket(&obs, w); err != nil {
			sh.mu.Unlock()
			b.invalid.Add(1)
			return err
		}
	}
	fresh := d == nil
	if fresh {
		if b.nDevices.Add(1) > int64(b.cfg.maxDevices) {
			b.nDevices.Add(-1)
			sh.mu.Unlock()
			b.overLimit.Add(1)
			return fmt.Errorf("%w: %d (WithLimits)", ErrTooManyDevices, b.cfg.maxDevices)
		}
		d = sh.newDevice(dh, w)
	}
	if fresh || d.tkey != th {
		d.tkey, d.tenant = th, sh.pseudonym(th, obs.Tenant, w)
	}
	m := d.mark(w, c)
	m.flags |= flagReported | eventFlags[obs.Event]
	if be != nil {
		sh.fails[failKey{win: w, cell: c, bucket: be, dev: dh}] = struct{}{}
	}
	d.see(w, c)
	if sh.minOpen == noWindow || w < sh.minOpen {
		sh.minOpen = w
	}
	sh.accepted++
	sh.mu.Unlock()
	return nil
}

// notFuture reads the clock again and reports whether window w is at most
// one window ahead of it.
func (b *Builder) notFuture(w int64) bool {
	now := floorDiv(b.cfg.clock().Unix(), b.winSec)
	for {
		cur := b.curWin.Load()
		if now <= cur || b.curWin.CompareAndSwap(cur, now) {
			break
		}
	}
	return w <= b.curWin.Load()+1
}

// cell returns the interned cell of obs, interning it if it is new.
func (b *Builder) cell(obs *Observation, w int64) (*cellEntry, error) {
	k := keyOf(obs)
	b.cellsMu.RLock()
	c, ok := b.cells[k]
	if ok {
		c.touch(w) // under the lock, so that a flush does not drop it now
		b.cellsMu.RUnlock()
		return c, nil
	}
	b.cellsMu.RUnlock()
	if err := validateKey(&k); err != nil {
		b.invalid.Add(1)
		return nil, err
	}
	b.cellsMu.Lock()
	defer b.cellsMu.Unlock()
	if c, ok := b.cells[k]; ok {
		c.touch(w)
		return c, nil
	}
	if len(b.cells) >= b.cfg.maxCells {
		b.overLimit.Add(1)
		return nil, fmt.Errorf("%w: %d (WithLimits)", ErrTooManyCells, b.cfg.maxCells)
	}
	c = &cellEntry{key: k.clone()}
	c.used.Store(w)
	b.cells[c.key] = c
	return c, nil
}

func (sh *shard) newDevice(id uint64, w int64) *device {
	var i int32
	if n := len(sh.free); n > 0 {
		i = sh.free[n-1]
		sh.free = sh.free[:n-1]
	} else {
		sh.devs = append(sh.devs, device{})
		i = int32(len(sh.devs) - 1)
	}
	d := &sh.devs[i]
	*d = device{id: id, last: w, live: true, more: d.more[:0]}
	sh.index[id] = i
	return d
}

func (sh *shard) dropDevice(i int) {
	d := &sh.devs[i]
	delete(sh.index, d.id)
	clear(d.more)
	*d = device{more: d.more[:0]}
	sh.free = append(sh.free, int32(i))
}

// pseudonym returns the tenant's pseudonym: the first 8 bytes of
// HMAC-SHA256(tenant key, tenant id), cached by the tenant id's keyed hash.
func (sh *shard) pseudonym(th uint64, tenant string, w int64) uint64 {
	if e, ok := sh.tenants[th]; ok {
		if e.used < w {
			e.used = w
			sh.tenants[th] = e
		}
		return e.mac
	}
	sh.mac.Reset()
	sh.buf = append(sh.buf[:0], tenant...)
	sh.mac.Write(sh.buf)
	mac := binary.BigEndian.Uint64(sh.mac.Sum(sh.sum[:0]))
	clear(sh.buf)
	sh.tenants[th] = tenantEntry{mac: mac, used: w}
	return mac
}

// bucket returns the interned failure bucket of obs.
func (sh *shard) bucket(obs *Observation, w int64) (*bucketEntry, error) {
	k := bucketKey{obs.BugcheckCode, obs.Module, obs.ModuleVersion}
	if e, ok := sh.buckets[k]; ok {
		e.used = max(e.used, w)
		return e, nil
	}
	if err := validateBucket(&k); err != nil {
		return nil, err
	}
	e := &bucketEntry{key: bucketKey{strings.Clone(k.code), strings.Clone(k.module), strings.Clone(k.version)}, used: w}
	sh.buckets[e.key] = e
	return e, nil
}

// Tracked returns the state the builder holds now.
func (b *Builder) Tracked() Tracked {
	var t Tracked
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		t.Devices += len(sh.index)
		t.Tenants += len(sh.tenants)
		t.Buckets += len(sh.buckets)
		t.Failures += len(sh.fails)
		sh.mu.Unlock()
	}
	b.cellsMu.RLock()
	t.Cells = len(b.cells)
	b.cellsMu.RUnlock()
	b.flushMu.Lock()
	t.Waiting = b.nWaiting
	t.Unpublished = len(b.unpublished)
	b.flushMu.Unlock()
	return t
}

// Stats returns the builder's counters.
func (b *Builder) Stats() Stats {
	s := Stats{
		Invalid:   b.invalid.Load(),
		Future:    b.future.Load(),
		OverLimit: b.overLimit.Load(),
	}
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		s.Accepted += sh.accepted
		s.Late += sh.late
		sh.mu.Unlock()
	}
	b.flushMu.Lock()
	s.Totals = b.totals
	b.flushMu.Unlock()
	s.Tracked = b.Tracked()
	return s
}
