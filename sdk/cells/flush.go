package cells

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// row is one device in a unit: reported (with its events) or silent.
type row struct {
	dev, tenant uint64
	flags       uint8
}

// frow is one device with one failure bucket in a unit.
type frow struct {
	dev    uint64
	bucket bucketKey
}

// unit is the rows of one interned cell key in one window: within a unit
// every device has one row. Units move through the levels whole.
type unit struct {
	key   *cellKey
	win   int64
	rows  []row
	frows []frow
}

// windowUnits collects the units of one closed window from every shard.
type windowUnits struct {
	byCell map[*cellEntry]*unit
	list   []*unit
}

func (wu *windowUnits) unit(c *cellEntry, w int64) *unit {
	u := wu.byCell[c]
	if u == nil {
		u = &unit{key: &c.key, win: w}
		wu.byCell[c] = u
		wu.list = append(wu.list, u)
	}
	return u
}

// gkey is a cell key at a level, with its window.
type gkey struct {
	k           cellKey
	start, secs int64
}

// group is the units of one gkey.
type group struct {
	key   gkey
	units []*unit
}

// counts of one group.
type counts struct {
	devices, silent, tenants         int
	kernel, boot, hang, agentCrashes int
}

// emitted is a group that met the thresholds.
type emitted struct {
	level Level
	key   gkey
	c     counts
	top   []*phxv1.TopFailure
}

// Flush closes every window that ended at least the lateness before now
// and returns its cells, and the cells of longer windows (LevelWindow) that
// closed with it, together with a report of what was emitted, rolled up and
// suppressed. Each window is closed once: a later Flush does not return its
// cells again. Cells are ordered by window, then level, then key. Flush may
// run while other goroutines call Observe; observations of a window it
// closed are refused from then on (ErrLate).
func (b *Builder) Flush(now time.Time) ([]*phxv1.HealthSignal, Report) {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	return b.flushLocked(now)
}

func (b *Builder) flushLocked(now time.Time) ([]*phxv1.HealthSignal, Report) {
	var rep Report
	target := floorDiv(now.Add(-b.cfg.lateness).Unix(), b.winSec) - 1
	if b.closed != noWindow && target <= b.closed {
		return nil, rep
	}
	byWin := make(map[int64]*windowUnits)
	first := int64(noWindow)
	for i := range b.shards {
		if f := b.closeShard(&b.shards[i], target, byWin); f != noWindow && (first == noWindow || f < first) {
			first = f
		}
	}
	switch {
	case b.closed != noWindow:
		rep.Windows = int(target - b.closed)
	case first != noWindow:
		rep.Windows = int(target - first + 1)
	}
	b.closed = target
	b.sweepCells(target)

	var out []emitted
	for _, w := range slices.Sorted(maps.Keys(byWin)) {
		rest := b.cascade(byWin[w].list, 0, b.baseLast, &out, &rep)
		if len(rest) > 0 && b.coarseSec != 0 {
			start := floorDiv(w*b.winSec, b.coarseSec) * b.coarseSec
			b.waiting[start] = append(b.waiting[start], rest...)
			for _, u := range rest {
				b.nWaiting += len(u.rows)
			}
		}
		b.flushWaiting((w+1)*b.winSec, &out, &rep)
	}
	b.flushWaiting((target+1)*b.winSec, &out, &rep)

	slices.SortStableFunc(out, func(x, y emitted) int {
		return cmp.Or(cmp.Compare(x.key.start, y.key.start), cmp.Compare(x.key.secs, y.key.secs))
	})
	cells := make([]*phxv1.HealthSignal, len(out))
	for i := range out {
		cells[i] = b.signal(&out[i])
	}
	b.totals.add(rep)
	return cells, rep
}

// closeShard closes the windows of sh up to target, adding their rows to
// byWin, and returns the first window it closed.
func (b *Builder) closeShard(sh *shard, target int64, byWin map[int64]*windowUnits) int64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	start := sh.closed + 1
	if sh.closed == noWindow {
		start = sh.minOpen
	}
	first := int64(noWindow)
	if start != noWindow && start <= target {
		first = start
		for w := start; w <= target; w++ {
			if len(sh.index) == 0 && len(sh.fails) == 0 {
				// Nothing is left to close: no cache is needed either.
				clear(sh.tenants)
				clear(sh.buckets)
				break
			}
			wu := byWin[w]
			if wu == nil {
				wu = &windowUnits{byCell: make(map[*cellEntry]*unit)}
				byWin[w] = wu
			}
			b.extract(sh, w, wu)
		}
	}
	sh.closed = max(sh.closed, target)
	return first
}

// extract moves the marks of window w out of sh into rows, adds a row for
// every silent device, and forgets what no open window or later silence
// needs: devices last seen more than the horizon ago, failure buckets and
// tenant pseudonyms no longer used.
func (b *Builder) extract(sh *shard, w int64, wu *windowUnits) {
	h := b.cfg.horizon
	for i := range sh.devs {
		d := &sh.devs[i]
		if !d.live {
			continue
		}
		reported := false
		keep := d.marks[:0]
		for _, m := range d.marks[:d.nm] {
			if m.win == w {
				u := wu.unit(m.cell, w)
				u.rows = append(u.rows, row{dev: d.id, tenant: d.tenant, flags: m.flags})
				reported = true
			} else {
				keep = append(keep, m)
			}
		}
		if len(d.more) > 0 {
			more := d.more[:0]
			for _, m := range d.more {
				switch {
				case m.win == w:
					u := wu.unit(m.cell, w)
					u.rows = append(u.rows, row{dev: d.id, tenant: d.tenant, flags: m.flags})
					reported = true
				case len(keep) < len(d.marks):
					keep = append(keep, m)
				default:
					more = append(more, m)
				}
			}
			clear(d.more[len(more):])
			d.more = more
		}
		clear(d.marks[len(keep):])
		d.nm = uint8(len(keep))
		if !reported && d.cell != nil && d.expected(w, h) {
			u := wu.unit(d.cell, w)
			u.rows = append(u.rows, row{dev: d.id, tenant: d.tenant, flags: flagSilent})
		}
		if d.last <= w-int64(h) && d.nm == 0 && len(d.more) == 0 {
			sh.dropDevice(i)
			b.nDevices.Add(-1)
		}
	}
	for k := range sh.fails {
		if k.win == w {
			u := wu.unit(k.cell, w)
			u.frows = append(u.frows, frow{dev: k.dev, bucket: k.bucket.key})
			delete(sh.fails, k)
		}
	}
	for k, e := range sh.buckets {
		if e.used <= w {
			delete(sh.buckets, k)
		}
	}
	for k, e := range sh.tenants {
		if e.used <= w-int64(h) {
			delete(sh.tenants, k)
		}
	}
}

// sweepCells forgets the cell keys no device needs after window target.
func (b *Builder) sweepCells(target int64) {
	b.cellsMu.Lock()
	defer b.cellsMu.Unlock()
	for k, c := range b.cells {
		if c.used.Load() <= target-int64(b.cfg.horizon) {
			delete(b.cells, k)
		}
	}
}

// flushWaiting runs the levels of the longer window over the units held
// for every longer window that ends at or before end.
func (b *Builder) flushWaiting(end int64, out *[]emitted, rep *Report) {
	for _, start := range slices.Sorted(maps.Keys(b.waiting)) {
		if start+b.coarseSec > end {
			break
		}
		units := b.waiting[start]
		delete(b.waiting, start)
		for _, u := range units {
			b.nWaiting -= len(u.rows)
		}
		b.cascade(units, b.baseLast+1, len(b.levels)-1, out, rep)
	}
}

// project returns the key of a cell and window at level l.
func (b *Builder) project(k *cellKey, win int64, l Level) gkey {
	g := gkey{k: *k, start: win * b.winSec, secs: b.winSec}
	g.k.region = regionAt(k.region, l)
	if l >= LevelWindow && b.coarseSec != 0 {
		g.secs = b.coarseSec
		g.start = floorDiv(g.start, b.coarseSec) * b.coarseSec
	}
	if l >= LevelOSVersion {
		g.k.osBuild = OSVersion(k.osFamily, k.osBuild)
	}
	return g
}

// cascade runs the levels from..to (indices into b.levels) over units: at
// each level the units are grouped by their key at that level; a group that
// meets the thresholds is emitted, one that does not moves on to the next
// level, and at the last level of all it is suppressed. A unit whose key
// does not change from this level to the next (a region that is already a
// continent, a build that is already a version) waits for the next level,
// so that no two emitted cells of a window share a key. cascade returns the
// units left after level to.
func (b *Builder) cascade(units []*unit, from, to int, out *[]emitted, rep *Report) []*unit {
	cur := units
	for i := from; i <= to; i++ {
		l := b.levels[i]
		final := i == len(b.levels)-1
		var next []*unit
		groups := make(map[gkey]*group)
		for _, u := range cur {
			g := b.project(u.key, u.win, l)
			if !final && g == b.project(u.key, u.win, b.levels[i+1]) {
				next = append(next, u)
				continue
			}
			gr := groups[g]
			if gr == nil {
				gr = &group{key: g}
				groups[g] = gr
			}
			gr.units = append(gr.units, u)
		}
		for _, gr := range sortedGroups(groups) {
			c := countUnits(gr.units)
			t := Tally{Cells: 1, Devices: c.devices}
			switch {
			case c.devices >= b.cfg.minDevices && c.tenants >= b.cfg.minTenants:
				rep.Emitted[l].add(t)
				*out = append(*out, emitted{level: l, key: gr.key, c: c, top: b.topFailures(gr.units, &rep.Buckets)})
			case final && c.devices < b.cfg.minDevices:
				rep.Suppressed[TooFewDevices].add(t)
			case final:
				rep.Suppressed[TooFewTenants].add(t)
			default:
				rep.RolledUp[l].add(t)
				next = append(next, gr.units...)
			}
		}
		cur = next
	}
	return cur
}

func sortedGroups(groups map[gkey]*group) []*group {
	gs := slices.Collect(maps.Values(groups))
	slices.SortFunc(gs, func(x, y *group) int { return compareKeys(&x.key, &y.key) })
	return gs
}

func compareKeys(x, y *gkey) int {
	a, b := &x.k, &y.k
	return cmp.Or(
		cmp.Compare(x.start, y.start), cmp.Compare(x.secs, y.secs),
		cmp.Compare(a.product, b.product), cmp.Compare(a.productVersion, b.productVersion),
		cmp.Compare(a.contentChannel, b.contentChannel), cmp.Compare(a.contentVersion, b.contentVersion),
		cmp.Compare(a.rolloutID, b.rolloutID), cmp.Compare(a.ring, b.ring),
		cmp.Compare(a.osFamily, b.osFamily), cmp.Compare(a.osBuild, b.osBuild),
		cmp.Compare(a.arch, b.arch), cmp.Compare(a.region, b.region),
	)
}

// countUnits counts distinct devices, their flags and distinct tenants. A
// device with rows in several units (several windows of a longer window,
// several builds of a version) is silent only if it reported in none.
func countUnits(units []*unit) counts {
	tenants := make(map[uint64]struct{})
	var c counts
	add := func(f uint8) {
		c.devices++
		if f&flagReported == 0 {
			c.silent++
			return
		}
		if f&flagKernelCrash != 0 {
			c.kernel++
		}
		if f&flagBootFailure != 0 {
			c.boot++
		}
		if f&flagHang != 0 {
			c.hang++
		}
		if f&flagAgentCrash != 0 {
			c.agentCrashes++
		}
	}
	if len(units) == 1 { // one row a device
		for _, r := range units[0].rows {
			tenants[r.tenant] = struct{}{}
			add(r.flags)
		}
	} else {
		n := 0
		for _, u := range units {
			n += len(u.rows)
		}
		devs := make(map[uint64]uint8, n)
		for _, u := range units {
			for _, r := range u.rows {
				devs[r.dev] |= r.flags
				tenants[r.tenant] = struct{}{}
			}
		}
		for _, f := range devs {
			add(f)
		}
	}
	c.tenants = len(tenants)
	return c
}

// bucketAt returns a failure bucket at merge step s: 0 as it is, 1 without
// module version, 2 the bugcheck code alone (or the module alone when
// there is no code).
func bucketAt(k bucketKey, s int) bucketKey {
	switch s {
	case 0:
		return k
	case 1:
		return bucketKey{code: k.code, module: k.module}
	}
	if k.code != "" {
		return bucketKey{code: k.code}
	}
	return bucketKey{module: k.module}
}

// topFailures returns the failure buckets of a cell with at least
// k_devices distinct devices each. Buckets under it are merged step by step
// (bucketAt); a merged bucket counts only the devices of the buckets that
// were too small on their own. What is still too small at the last step,
// and what does not fit in MaxTopFailures, is counted as suppressed.
func (b *Builder) topFailures(units []*unit, rep *BucketReport) []*phxv1.TopFailure {
	var frows []frow
	for _, u := range units {
		frows = append(frows, u.frows...)
	}
	if len(frows) == 0 {
		return nil
	}
	type bgroup struct {
		key   bucketKey
		devs  map[uint64]struct{}
		frows []frow
	}
	var top []*phxv1.TopFailure
	cur := frows
	const steps = 3
	for s := range steps {
		final := s == steps-1
		var next []frow
		groups := make(map[bucketKey]*bgroup)
		for _, f := range cur {
			k := bucketAt(f.bucket, s)
			if !final && k == bucketAt(f.bucket, s+1) {
				next = append(next, f)
				continue
			}
			g := groups[k]
			if g == nil {
				g = &bgroup{key: k, devs: make(map[uint64]struct{})}
				groups[k] = g
			}
			g.devs[f.dev] = struct{}{}
			g.frows = append(g.frows, f)
		}
		keys := slices.SortedFunc(maps.Keys(groups), func(x, y bucketKey) int {
			return cmp.Or(cmp.Compare(x.code, y.code), cmp.Compare(x.module, y.module), cmp.Compare(x.version, y.version))
		})
		for _, k := range keys {
			g := groups[k]
			t := Tally{Cells: 1, Devices: len(g.devs)}
			switch {
			case len(g.devs) >= b.cfg.minDevices:
				top = append(top, &phxv1.TopFailure{BugcheckCode: k.code, Module: k.module, ModuleVersion: k.version, Devices: uint32(len(g.devs))})
			case final:
				rep.Suppressed[TooFewDevices].add(t)
			default:
				rep.Merged.add(t)
				next = append(next, g.frows...)
			}
		}
		cur = next
	}
	slices.SortStableFunc(top, func(x, y *phxv1.TopFailure) int { return cmp.Compare(y.Devices, x.Devices) })
	if len(top) > MaxTopFailures {
		for _, tf := range top[MaxTopFailures:] {
			rep.Suppressed[OverBucketLimit].add(Tally{Cells: 1, Devices: int(tf.Devices)})
		}
		top = top[:MaxTopFailures]
	}
	for _, tf := range top {
		rep.Emitted.add(Tally{Cells: 1, Devices: int(tf.Devices)})
	}
	return top
}

// signal returns the health cell of an emitted group.
func (b *Builder) signal(e *emitted) *phxv1.HealthSignal {
	k := &e.key.k
	n := uint32(e.c.devices)
	return &phxv1.HealthSignal{
		SignalId:           b.signalID(&e.key),
		Product:            k.product,
		ProductVersion:     k.productVersion,
		ContentChannel:     k.contentChannel,
		ContentVersion:     k.contentVersion,
		RolloutId:          k.rolloutID,
		Ring:               k.ring,
		OsFamily:           k.osFamily,
		OsBuild:            k.osBuild,
		Arch:               k.arch,
		Region:             k.region,
		WindowStart:        timestamppb.New(time.Unix(e.key.start, 0)),
		WindowSeconds:      uint32(e.key.secs),
		DevicesActive:      n,
		DevicesExposed:     n,
		DevicesSilent:      uint32(e.c.silent),
		DistinctTenants:    uint32(e.c.tenants),
		KernelCrashDevices: uint32(e.c.kernel),
		BootFailureDevices: uint32(e.c.boot),
		HangDevices:        uint32(e.c.hang),
		AgentCrashDevices:  uint32(e.c.agentCrashes),
		TopFailures:        e.top,
		Audience:           proto.Clone(b.cfg.audience).(*phxv1.Audience),
	}
}

// signalID derives a cell's signal_id from the builder's source, the cell
// key and the window: "c1-" and 32 hex digits of a SHA-256 over them. The
// same cell of the same window gets the same id in every process.
func (b *Builder) signalID(g *gkey) string {
	h := sha256.New()
	var buf []byte
	str := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	str("phx-cell-v1")
	str(b.cfg.source)
	k := &g.k
	for _, s := range []string{k.product, k.productVersion, k.contentChannel, k.contentVersion, k.rolloutID, k.osFamily, k.osBuild, k.arch, k.region} {
		str(s)
	}
	buf = binary.AppendVarint(buf, int64(k.ring))
	buf = binary.AppendVarint(buf, g.start)
	buf = binary.AppendVarint(buf, g.secs)
	h.Write(buf)
	return "c1-" + hex.EncodeToString(h.Sum(nil)[:16])
}
