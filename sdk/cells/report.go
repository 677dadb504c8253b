package cells

import "fmt"

// A Level is one step of the roll-up. A cell is first formed at
// LevelCountry; what stays under the thresholds moves on to the next level.
type Level uint8

// The roll-up levels, finest first. Each coarsens one more dimension of the
// cell key and keeps what the levels before it coarsened.
const (
	// LevelCountry: the region as observed, the builder's window, the OS build.
	LevelCountry Level = iota
	// LevelContinent: the country's continent.
	LevelContinent
	// LevelGlobal: region "global".
	LevelGlobal
	// LevelWindow: the next longer window the hub accepts (60 s → 300 s,
	// 300 s → 3600 s). Skipped when the window is already 3600 s.
	LevelWindow
	// LevelOSVersion: the OS version instead of the OS build (see OSVersion).
	LevelOSVersion

	// NumLevels is the number of levels.
	NumLevels = int(LevelOSVersion) + 1
)

var levelNames = [NumLevels]string{"country", "continent", "global", "window", "os-version"}

// String returns the level's name: "country", "continent", "global",
// "window" or "os-version".
func (l Level) String() string {
	if int(l) < NumLevels {
		return levelNames[l]
	}
	return fmt.Sprintf("Level(%d)", l)
}

// A Reason says why a cell or a failure bucket was not shared.
type Reason uint8

// Reasons for suppression.
const (
	// TooFewDevices: under the minimum of exposed devices (k_devices) at the
	// last level.
	TooFewDevices Reason = iota
	// TooFewTenants: enough devices but under the minimum of distinct
	// tenants (k_tenants) at the last level.
	TooFewTenants
	// OverBucketLimit: a failure bucket that met the threshold but did not
	// fit in the hub's limit of MaxTopFailures buckets per cell.
	OverBucketLimit

	// NumReasons is the number of reasons.
	NumReasons = int(OverBucketLimit) + 1
)

var reasonNames = [NumReasons]string{"too-few-devices", "too-few-tenants", "over-bucket-limit"}

// String returns the reason's name.
func (r Reason) String() string {
	if int(r) < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", r)
}

// A Tally counts cells (or failure buckets) and the devices in them.
type Tally struct {
	// Cells is the number of cells, or of failure buckets.
	Cells int
	// Devices is the number of distinct devices in them, summed over cells.
	Devices int
}

func (t *Tally) add(o Tally) {
	t.Cells += o.Cells
	t.Devices += o.Devices
}

// Report says what one Flush did. Every device of a closed window is in
// exactly one of Emitted, RolledUp (until a later level takes it) or
// Suppressed: nothing is dropped without being counted.
type Report struct {
	// Windows is the number of windows of the builder's length closed.
	Windows int
	// Emitted counts the cells emitted at each level.
	Emitted [NumLevels]Tally
	// RolledUp counts the cells that were under the thresholds at a level
	// and moved on to the next one. Their devices are counted again at the
	// level that emits or suppresses them. Cells moved on to LevelWindow are
	// emitted when the longer window closes, by a later Flush.
	RolledUp [NumLevels]Tally
	// Suppressed counts the cells still under the thresholds at the last
	// level (TooFewDevices, TooFewTenants). They are not emitted.
	Suppressed [NumReasons]Tally
	// Buckets counts failure buckets of emitted cells.
	Buckets BucketReport
	// Unpublished is set by Run: cells dropped because more than the
	// maximum (WithMaxUnpublished) were waiting to be published.
	Unpublished int
	// PublishErr is set by Run: the error of the publish call, if it failed.
	// The cells are published again at the next window.
	PublishErr error
}

// BucketReport counts the top_failures buckets of emitted cells. A bucket
// is one (bugcheck code, module, module version); Devices are distinct
// devices per bucket.
type BucketReport struct {
	// Emitted buckets, in top_failures.
	Emitted Tally
	// Merged buckets: under k_devices devices, merged into a coarser bucket
	// (without module version, then bugcheck code or module alone).
	Merged Tally
	// Suppressed buckets by reason: TooFewDevices after the last merge, or
	// OverBucketLimit.
	Suppressed [NumReasons]Tally
}

func (r *Report) add(o Report) {
	r.Windows += o.Windows
	for i := range r.Emitted {
		r.Emitted[i].add(o.Emitted[i])
		r.RolledUp[i].add(o.RolledUp[i])
	}
	for i := range r.Suppressed {
		r.Suppressed[i].add(o.Suppressed[i])
		r.Buckets.Suppressed[i].add(o.Buckets.Suppressed[i])
	}
	r.Buckets.Emitted.add(o.Buckets.Emitted)
	r.Buckets.Merged.add(o.Buckets.Merged)
	r.Unpublished += o.Unpublished
}

// Cells returns the number of cells emitted at all levels.
func (r Report) Cells() int {
	n := 0
	for _, t := range r.Emitted {
		n += t.Cells
	}
	return n
}

// String summarizes the report on one line, leaving out zero counts.
func (r Report) String() string {
	s := fmt.Sprintf("windows=%d emitted=%d", r.Windows, r.Cells())
	for l, t := range r.Emitted {
		if t.Cells > 0 {
			s += fmt.Sprintf(" emitted[%s]=%d/%d", Level(l), t.Cells, t.Devices)
		}
	}
	for l, t := range r.RolledUp {
		if t.Cells > 0 {
			s += fmt.Sprintf(" rolled-up[%s]=%d/%d", Level(l), t.Cells, t.Devices)
		}
	}
	for re, t := range r.Suppressed {
		if t.Cells > 0 {
			s += fmt.Sprintf(" suppressed[%s]=%d/%d", Reason(re), t.Cells, t.Devices)
		}
	}
	b := r.Buckets
	if b.Emitted.Cells > 0 {
		s += fmt.Sprintf(" buckets=%d", b.Emitted.Cells)
	}
	if b.Merged.Cells > 0 {
		s += fmt.Sprintf(" buckets-merged=%d", b.Merged.Cells)
	}
	for re, t := range b.Suppressed {
		if t.Cells > 0 {
			s += fmt.Sprintf(" buckets-suppressed[%s]=%d", Reason(re), t.Cells)
		}
	}
	if r.Unpublished > 0 {
		s += fmt.Sprintf(" unpublished=%d", r.Unpublished)
	}
	if r.PublishErr != nil {
		s += fmt.Sprintf(" publish-error=%q", r.PublishErr)
	}
	return s
}

// Stats are the builder's counters since New.
type Stats struct {
	// Accepted observations.
	Accepted uint64
	// Refused observations, by cause; Observe returned an error for each.
	Late, Future, Invalid, OverLimit uint64
	// Totals sums the reports of every Flush (and Run).
	Totals Report
	// Tracked is the state the builder holds now.
	Tracked Tracked
}

// Tracked is the state a builder holds. It is bounded by the devices of
// the open windows and the silent-device horizon, never by the number of
// observations or of windows seen.
type Tracked struct {
	// Devices remembered: seen in an open window or within the horizon.
	Devices int
	// Cells: distinct cell keys those devices are in.
	Cells int
	// Tenants: cached tenant pseudonyms, per shard (a tenant whose devices
	// fall into several shards is cached in each).
	Tenants int
	// Buckets: failure buckets of the open windows.
	Buckets int
	// Failures: (device, bucket) pairs of the open windows.
	Failures int
	// Waiting: device rows under the thresholds held for the longer window
	// of LevelWindow.
	Waiting int
	// Unpublished cells held by Run until the hub takes them.
	Unpublished int
}
