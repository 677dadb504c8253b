package grpcapi

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/authz"
)

// RateLimits are the hub's token buckets, one of each class per org. A
// zero Rate takes the default; a negative PerSecond turns the class's limit
// off. An org's entry in the member registry may override each.
type RateLimits struct {
	// Signals: health signals published per second (one token per signal).
	Signals members.Rate
	// Writes: other calls that change something or administer the hub.
	Writes members.Rate
	// Reads: reads and Subscribe calls.
	Reads members.Rate
}

// Default rate limits per org: far above what one member's backend sends
// (a whole fleet's cells each minute), low enough that a runaway client
// cannot take the hub from the others.
var (
	DefaultRateSignals = members.Rate{PerSecond: 250_000, Burst: 500_000}
	DefaultRateWrites  = members.Rate{PerSecond: 2_000, Burst: 4_000}
	DefaultRateReads   = members.Rate{PerSecond: 5_000, Burst: 10_000}
)

func (l *RateLimits) defaults() {
	def := func(r *members.Rate, d members.Rate) {
		if r.PerSecond == 0 && r.Burst == 0 {
			*r = d
		}
	}
	def(&l.Signals, DefaultRateSignals)
	def(&l.Writes, DefaultRateWrites)
	def(&l.Reads, DefaultRateReads)
}

// rateClass is what a call spends tokens of.
type rateClass int

const (
	classSignals rateClass = iota
	classWrites
	classReads
	numClasses
)

var classNames = [numClasses]string{"signals", "writes", "reads"}

// unit names what one token of a class stands for.
var classUnits = [numClasses]string{"signals/s", "calls/s", "calls/s"}

// classOf returns the class of a method, by its scope class in the
// authorization table.
func classOf(method string) rateClass {
	switch {
	case method == phxv1.HealthService_PublishSignals_FullMethodName:
		return classSignals
	case authz.Scopes[method] == authz.ScopeRead:
		return classReads
	}
	return classWrites
}

// limiter holds a token bucket per org and class.
type limiter struct {
	def     [numClasses]members.Rate
	mu      sync.Mutex
	buckets map[bucketKey]*rate.Limiter
	now     func() time.Time
}

type bucketKey struct {
	org   string
	class rateClass
}

func newLimiter(l RateLimits, now func() time.Time) *limiter {
	l.defaults()
	return &limiter{
		def:     [numClasses]members.Rate{l.Signals, l.Writes, l.Reads},
		buckets: map[bucketKey]*rate.Limiter{},
		now:     now,
	}
}

// effective returns the rate of class c for a member: its override in the
// registry, else the hub's; with the burst filled in.
func (lm *limiter) effective(m members.Member, c rateClass) members.Rate {
	r := lm.def[c]
	if l := m.Limits; l != nil {
		if o := [numClasses]*members.Rate{l.Signals, l.Writes, l.Reads}[c]; o != nil {
			r = *o
		}
	}
	if r.Burst <= 0 {
		r.Burst = int(math.Min(2*r.PerSecond, math.MaxInt32))
		if c == classSignals {
			r.Burst = max(r.Burst, MaxBatch)
		}
		r.Burst = max(r.Burst, 1)
	}
	return r
}

// errRateLimited is a call refused by a rate limit.
type errRateLimited struct {
	org   string
	class rateClass
	limit members.Rate
	n     int
	// retry is how long until the call would pass; 0 when it never can
	// (more tokens than the burst).
	retry time.Duration
}

func (e *errRateLimited) Error() string {
	lim := fmt.Sprintf("org %s is limited to %s %s (burst %d)", e.org, strconv.FormatFloat(e.limit.PerSecond, 'f', -1, 64), classUnits[e.class], e.limit.Burst)
	if e.retry == 0 {
		return fmt.Sprintf("%s: %d %s in one call is more than the burst; split it", lim, e.n, classNames[e.class])
	}
	return fmt.Sprintf("%s: over the %s limit; retry in %v", lim, classNames[e.class], e.retry.Round(time.Millisecond))
}

// allow takes n tokens of class c from org's bucket, or returns an
// *errRateLimited saying when to retry. It never waits.
func (lm *limiter) allow(id *authn.Identity, c rateClass, n int) error {
	r := lm.effective(id.Member, c)
	if r.PerSecond < 0 {
		return nil
	}
	k := bucketKey{id.Org, c}
	lm.mu.Lock()
	b := lm.buckets[k]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst)
		lm.buckets[k] = b
	} else if b.Limit() != rate.Limit(r.PerSecond) || b.Burst() != r.Burst {
		// The registry changed the org's limit.
		now := lm.now()
		b.SetLimitAt(now, rate.Limit(r.PerSecond))
		b.SetBurstAt(now, r.Burst)
	}
	lm.mu.Unlock()
	now := lm.now()
	res := b.ReserveN(now, n)
	if !res.OK() {
		return &errRateLimited{org: id.Org, class: c, limit: r, n: n}
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return &errRateLimited{org: id.Org, class: c, limit: r, n: n, retry: d}
	}
	return nil
}

// cost is how many tokens a unary call spends.
func cost(c rateClass, req any) int {
	if c == classSignals {
		if r, ok := req.(*phxv1.PublishSignalsRequest); ok {
			// An oversized batch is refused by the handler, saying so.
			return min(max(1, len(r.GetSignals())), MaxBatch)
		}
	}
	return 1
}
