package cells

import (
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"time"

	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Defaults.
const (
	// DefaultWindow is the window length.
	DefaultWindow = 60 * time.Second
	// DefaultMinDevices is the hub's default k_devices: the fewest exposed
	// devices a cell, and a top_failures bucket, may count.
	DefaultMinDevices = 50
	// DefaultMinTenants is the hub's default k_tenants: the fewest distinct
	// tenants a cell may count.
	DefaultMinTenants = 5
	// DefaultSilentHorizon is how many previous windows define the devices
	// expected to check in.
	DefaultSilentHorizon = 5
	// MaxSilentHorizon is the longest silent-device horizon.
	MaxSilentHorizon = 32
	// DefaultLateness is how long after its end a window stays open for
	// observations that arrive late.
	DefaultLateness = 10 * time.Second
	// DefaultMaxDevices is the most devices a builder tracks.
	DefaultMaxDevices = 5_000_000
	// DefaultMaxCells is the most distinct cell keys a builder tracks.
	DefaultMaxCells = 200_000
	// DefaultMaxUnpublished is the most cells Run holds while the hub does
	// not take them.
	DefaultMaxUnpublished = 100_000
	// MaxTopFailures is the most top_failures buckets the hub takes per cell.
	MaxTopFailures = 20
)

// An Option configures a Builder. Options are applied in order, so a later
// option overrides what an earlier one set.
type Option func(*config) error

type config struct {
	window         time.Duration
	minDevices     int
	minTenants     int
	tenantKey      []byte
	horizon        int
	lateness       time.Duration
	audience       *phxv1.Audience
	clock          func() time.Time
	maxDevices     int
	maxCells       int
	maxUnpublished int
	shards         int
	source         string
	onFlush        func(Report)
}

func defaultConfig() (*config, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("tenant key: %w", err)
	}
	shards := 1
	for shards < 4*runtime.GOMAXPROCS(0) {
		shards <<= 1
	}
	return &config{
		window:         DefaultWindow,
		minDevices:     DefaultMinDevices,
		minTenants:     DefaultMinTenants,
		tenantKey:      key,
		horizon:        DefaultSilentHorizon,
		lateness:       DefaultLateness,
		audience:       &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER},
		clock:          time.Now,
		maxDevices:     DefaultMaxDevices,
		maxCells:       DefaultMaxCells,
		maxUnpublished: DefaultMaxUnpublished,
		shards:         shards,
	}, nil
}

// WithWindow sets the window length: 60 s (the default), 5 min or 1 h, the
// lengths the hub accepts. Windows are aligned to their length in Unix time.
func WithWindow(d time.Duration) Option {
	return func(c *config) error {
		switch d {
		case time.Minute, 5 * time.Minute, time.Hour:
			c.window = d
			return nil
		}
		return fmt.Errorf("WithWindow: %v is not 1m, 5m or 1h", d)
	}
}

// WithThresholds sets the minimum cohort: a cell is emitted only with at
// least minDevices exposed devices and minTenants distinct tenants, and a
// top_failures bucket only with at least minDevices devices. Pass the hub's
// k_devices and k_tenants; the defaults are the hub's defaults, 50 and 5.
func WithThresholds(minDevices, minTenants int) Option {
	return func(c *config) error {
		if minDevices < 1 || minTenants < 1 {
			return fmt.Errorf("WithThresholds: need minDevices ≥ 1 and minTenants ≥ 1, got %d and %d", minDevices, minTenants)
		}
		c.minDevices, c.minTenants = minDevices, minTenants
		return nil
	}
}

// WithHubPrivacy follows the minimum cohort a hub announces in WhoAmI:
//
//	who, err := client.WhoAmI(ctx)
//	b, err := cells.New(cells.WithHubPrivacy(who.GetPrivacy()))
//
// A nil or empty value (a hub that does not announce one) keeps the
// defaults.
func WithHubPrivacy(p *phxv1.Privacy) Option {
	return func(c *config) error {
		if p.GetKDevices() > 0 {
			c.minDevices = int(p.GetKDevices())
		}
		if p.GetKTenants() > 0 {
			c.minTenants = int(p.GetKTenants())
		}
		return nil
	}
}

// WithTenantKey sets the HMAC-SHA256 key of tenant pseudonyms (at least 16
// bytes; the slice is copied). By default each builder draws a random
// 32-byte key, so pseudonyms cannot be linked across processes.
func WithTenantKey(key []byte) Option {
	return func(c *config) error {
		if len(key) < 16 {
			return fmt.Errorf("WithTenantKey: the key has %d bytes; at least 16", len(key))
		}
		c.tenantKey = append([]byte(nil), key...)
		return nil
	}
}

// WithSilentHorizon sets how many previous windows define the devices
// expected to check in: a device seen in one of the last n windows and not
// in this one is silent. 0 to MaxSilentHorizon; the default is 5. 0 turns
// silence off (devices_silent is always 0), for backends whose devices do
// not report every window; devices are then forgotten as soon as their
// windows close.
func WithSilentHorizon(n int) Option {
	return func(c *config) error {
		if n < 0 || n > MaxSilentHorizon {
			return fmt.Errorf("WithSilentHorizon: %d is not within 0..%d", n, MaxSilentHorizon)
		}
		c.horizon = n
		return nil
	}
}

// WithLateness keeps a window open for d after its end, for observations
// that arrive late; Flush closes it then. 0 to the window length; the
// default is 10 s. Observations of a closed window are refused (ErrLate).
func WithLateness(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("WithLateness: %v is negative", d)
		}
		c.lateness = d
		return nil
	}
}

// WithAudience sets who may receive the emitted cells (cloned). The default
// is TLP_AMBER: members, not CERTs.
func WithAudience(a *phxv1.Audience) Option {
	return func(c *config) error {
		if a == nil || a.GetTlp() == phxv1.Tlp_TLP_UNSPECIFIED {
			return errors.New("WithAudience: an audience with a TLP label is required")
		}
		c.audience = proto.Clone(a).(*phxv1.Audience)
		return nil
	}
}

// WithClock sets the clock that dates observations without a time and that
// Run waits on. The default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return errors.New("WithClock: nil clock")
		}
		c.clock = now
		return nil
	}
}

// WithLimits bounds the builder's memory: at most maxDevices devices and
// maxCells distinct cell keys tracked at once. An observation that would
// need more is refused with ErrTooManyDevices or ErrTooManyCells. The
// defaults are DefaultMaxDevices and DefaultMaxCells.
func WithLimits(maxDevices, maxCells int) Option {
	return func(c *config) error {
		if maxDevices < 1 || maxCells < 1 {
			return fmt.Errorf("WithLimits: need positive limits, got %d and %d", maxDevices, maxCells)
		}
		c.maxDevices, c.maxCells = maxDevices, maxCells
		return nil
	}
}

// WithMaxUnpublished bounds the cells Run holds while publishing fails; the
// oldest beyond n are dropped and counted in Report.Unpublished. The default
// is DefaultMaxUnpublished.
func WithMaxUnpublished(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithMaxUnpublished: %d is not positive", n)
		}
		c.maxUnpublished = n
		return nil
	}
}

// WithShards sets how many independently locked parts the device state is
// split into (rounded up to a power of two). The default is four per
// GOMAXPROCS.
func WithShards(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 1<<16 {
			return fmt.Errorf("WithShards: %d is not within 1..65536", n)
		}
		s := 1
		for s < n {
			s <<= 1
		}
		c.shards = s
		return nil
	}
}

var reSource = regexp.MustCompile(`^[A-Za-z0-9._-]{0,64}$`)

// WithSource names this builder in its signal ids. Signal ids derive from
// the cell key and window alone, so a builder that restarts emits the same
// ids and the hub stores a cell once; processes that each build cells for
// part of the same product's devices must set different sources, or the hub
// keeps only the first of two cells with the same key. The source itself is
// not sent.
func WithSource(name string) Option {
	return func(c *config) error {
		if !reSource.MatchString(name) {
			return fmt.Errorf("WithSource: %q does not match %s", name, reSource)
		}
		c.source = name
		return nil
	}
}

// WithReportFunc makes Run call f with the report of every window it
// closes, including publish errors. f runs on Run's goroutine.
func WithReportFunc(f func(Report)) Option {
	return func(c *config) error {
		c.onFlush = f
		return nil
	}
}
