package guard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// ErrClosed is returned by the methods of a Guard that was closed, or
// whose context given to New ended.
var ErrClosed = errors.New("guard closed")

// Backoff between attempts to subscribe again after the hub refused the
// guard's feed.
const (
	minFeedBackoff = time.Second
	maxFeedBackoff = 30 * time.Second
)

// kinds are what the guard subscribes to, and the letters that stand for
// their streams in a hub cursor ("h12.r3.i4.a0").
var kinds = []phxv1.Kind{phxv1.Kind_KIND_ROLLOUT, phxv1.Kind_KIND_INCIDENT, phxv1.Kind_KIND_ADVISORY}

const cursorLetters = "ria"

// Guard follows the hub's rollouts, incidents and advisories visible to the
// member and answers, from memory, whether a rollout may go on. It is safe
// for concurrent use. It owns one goroutine, which ends with Close or with
// the context given to New.
type Guard struct {
	c    *sdk.Client
	o    *options
	stop context.CancelFunc
	done chan struct{}

	mu    sync.RWMutex
	st    *state
	heard time.Time // by o.now; zero until the hub answers
	// cursor is the hub cursor of the last envelope applied.
	cursor string
	// head is the position the feed must reach for the first catch-up to
	// be complete, per stream letter; nil if the hub's cursor could not be
	// read, in which case two heartbeats in a row end it (see caughtUp).
	head  map[byte]uint64
	ready bool
	// beats counts the heartbeats heard in a row, without an item between
	// them, on the current subscription.
	beats   int
	feedErr error
	closed  bool
	// changed is closed, and replaced, whenever anything was heard.
	changed chan struct{}
}

// New starts a guard that reads, through client, every rollout, incident
// and advisory the hub retains and the member may see, then follows them
// live; the subscription resumes by itself after broken connections and hub
// restarts. New returns at once: until the guard has caught up with what
// the hub held when it subscribed, Allowed denies with CauseCatchingUp (see
// Ready). The guard stops when ctx ends or Close is called. New fails only
// on invalid options.
func New(ctx context.Context, client *sdk.Client, opts ...Option) (*Guard, error) {
	if client == nil {
		return nil, errors.New("phx guard: nil client")
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, fmt.Errorf("phx guard: %w", err)
		}
	}
	if o.maxSilence <= o.heartbeat {
		return nil, fmt.Errorf("phx guard: the maximum silence (%v) must be longer than the heartbeat interval (%v)", o.maxSilence, o.heartbeat)
	}
	ctx, stop := context.WithCancel(ctx)
	g := &Guard{
		c:       client,
		o:       o,
		stop:    stop,
		done:    make(chan struct{}),
		st:      newState(),
		cursor:  o.cursor,
		changed: make(chan struct{}),
	}
	go g.run(ctx)
	return g, nil
}

// Close stops the guard and waits for its goroutine to end. Allowed then
// denies every rollout with CauseClosed and returns ErrClosed. Close always
// returns nil.
func (g *Guard) Close() error {
	g.stop()
	<-g.done
	return nil
}

// Allowed answers whether rollout rolloutID may go on to its next ring,
// from what the guard has heard; it makes no call to the hub. It denies
// (Decision.Allowed false, with Cause and Reason) when
//
//   - the guard was closed (and returns ErrClosed) or ctx has ended (and
//     returns ctx's error);
//   - the hub refused the guard's subscription, until it accepts it again;
//   - nothing came from the hub, not even a heartbeat, for longer than the
//     maximum silence, or nothing came yet;
//   - the guard has not caught up yet with what the hub retained when it
//     subscribed;
//   - the rollout is unknown: never announced, not visible to the member,
//     or (with WithCursor) last changed before the cursor;
//   - the rollout's state is ROLLOUT_PAUSED or ROLLOUT_ROLLED_BACK (the
//     reason names who changed it, at which revision, and their reason
//     text), or ROLLOUT_COMPLETED (nothing is left to deploy);
//   - an incident visible to the member, not resolved, has a rollout_action
//     that asks to pause the rollout or roll it back (the reason names the
//     incident's id, severity, status, reporter and title);
//   - a hub advisory recommends pausing the rollout and the rollout's state
//     has not changed since the advisory was published (the reason names
//     the advisory's id and summary).
//
// Otherwise it allows, with Cause CauseActive and Reason "active".
func (g *Guard) Allowed(ctx context.Context, rolloutID string) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{RolloutID: rolloutID, Cause: CauseClosed, Reason: "the caller's context ended: " + err.Error()}, err
	}
	g.mu.RLock()
	d := g.decideLocked(rolloutID, g.o.now())
	closed := g.closed
	g.mu.RUnlock()
	if closed {
		return d, ErrClosed
	}
	return d, nil
}

// Wait blocks until cond accepts the decision about rolloutID, and returns
// that decision. It evaluates the decision at once, again whenever the
// guard hears from the hub (an item or a heartbeat), and when the maximum
// silence runs out. It returns the last decision with ctx's error when ctx
// ends first, or with ErrClosed when the guard is closed. A deployment
// controller can bake a ring with
//
//	bake, cancel := context.WithTimeout(ctx, bakeTime)
//	d, err := g.Wait(bake, id, func(d guard.Decision) bool { return !d.Allowed })
//	cancel()
//
// which returns as soon as the rollout is stopped, or with
// context.DeadlineExceeded once the bake time passed without a stop.
func (g *Guard) Wait(ctx context.Context, rolloutID string, cond func(Decision) bool) (Decision, error) {
	for {
		g.mu.RLock()
		now := g.o.now()
		d := g.decideLocked(rolloutID, now)
		changed, closed := g.changed, g.closed
		silentIn := time.Duration(-1)
		if !g.heard.IsZero() {
			silentIn = g.heard.Add(g.o.maxSilence).Sub(now)
		}
		g.mu.RUnlock()
		if cond(d) {
			return d, nil
		}
		if closed {
			return d, ErrClosed
		}
		var expire <-chan time.Time
		var timer *time.Timer
		if silentIn >= 0 {
			timer = time.NewTimer(silentIn + time.Millisecond)
			expire = timer.C
		}
		select {
		case <-changed:
		case <-expire:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if err := ctx.Err(); err != nil {
			return d, err
		}
	}
}

// Ready blocks until the guard has caught up with what the hub retained
// when it subscribed (from then on Allowed answers from the hub's state),
// ctx ends (its error is returned), or the guard is closed (ErrClosed, also
// when it had caught up before).
// The guard may fall behind again later: when the hub no longer retains
// its cursor it reads everything again, and denies meanwhile.
func (g *Guard) Ready(ctx context.Context) error {
	for {
		g.mu.RLock()
		ready, closed, changed := g.ready, g.closed, g.changed
		g.mu.RUnlock()
		switch {
		case closed:
			return ErrClosed
		case ready:
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Cursor returns the hub cursor of the last envelope the guard applied, or
// "" before the hub answered. WithCursor starts a later guard there.
func (g *Guard) Cursor() string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cursor
}

// decideLocked answers for one rollout; g.mu is held.
func (g *Guard) decideLocked(rolloutID string, now time.Time) Decision {
	d := g.st.decide(rolloutID)
	d.HeardAt = g.heard
	deny := func(c Cause, reason string) Decision {
		if g.ready && d.Cause != CauseUnknown {
			reason += " (last heard: " + d.Reason + ")"
		}
		d.Allowed, d.Cause, d.Reason = false, c, reason
		return d
	}
	switch {
	case g.closed:
		return deny(CauseClosed, "the guard is closed")
	case g.feedErr != nil:
		return deny(CauseFeedFailed, "the hub refused the guard's feed: "+g.feedErr.Error())
	case g.heard.IsZero():
		return deny(CauseSilent, "no word from the hub yet")
	case now.Sub(g.heard) > g.o.maxSilence:
		return deny(CauseSilent, fmt.Sprintf("no word from the hub for %v (at most %v allowed)",
			now.Sub(g.heard).Truncate(100*time.Millisecond), g.o.maxSilence))
	case !g.ready:
		return deny(CauseCatchingUp, "catching up with what the hub retains")
	}
	return d
}

// broadcastLocked wakes every Wait and Ready; g.mu is held for writing.
func (g *Guard) broadcastLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// run follows the hub until ctx ends, subscribing again after the hub
// refused the feed.
func (g *Guard) run(ctx context.Context) {
	defer close(g.done)
	defer func() {
		g.mu.Lock()
		g.closed = true
		g.broadcastLocked()
		g.mu.Unlock()
	}()
	failures := 0
	for {
		subscribed, err := g.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			failures = 0
		}
		if errors.Is(err, sdk.ErrOutOfRange) && g.Cursor() != "" {
			// The hub no longer holds the cursor: what came before it is
			// lost to this guard, so it starts again from scratch. (Out of
			// range from the beginning is a refusal like any other.)
			g.o.log.Warn("phx guard: the hub no longer retains the guard's cursor; reading everything again", "cursor", g.Cursor(), "err", err)
			g.mu.Lock()
			g.st, g.cursor, g.head, g.ready = newState(), "", nil, false
			g.broadcastLocked()
			g.mu.Unlock()
			continue
		}
		failures++
		wait := min(maxFeedBackoff, minFeedBackoff<<min(failures-1, 10))
		g.o.log.Warn("phx guard: the hub refused the feed; retrying", "err", err, "in", wait)
		g.mu.Lock()
		g.feedErr = err
		g.broadcastLocked()
		g.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// follow runs one subscription until it fails for good; it reports whether
// the hub accepted it.
func (g *Guard) follow(ctx context.Context) (subscribed bool, err error) {
	g.mu.RLock()
	cursor, ready := g.cursor, g.ready
	g.mu.RUnlock()
	req := &phxv1.SubscribeRequest{Kinds: kinds, HeartbeatSeconds: uint32(g.o.heartbeat / time.Second)}
	var head map[byte]uint64
	if !ready {
		// Where the hub stands now: the first catch-up ends there.
		sub, err := g.c.Subscribe(ctx, req)
		if err != nil {
			return false, err
		}
		head = parseCursor(sub.Cursor())
		sub.Close()
	}
	if cursor != "" {
		req.Start = &phxv1.SubscribeRequest_Cursor{Cursor: cursor}
	} else {
		req.Start = &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}
	}
	sub, err := g.c.Subscribe(ctx, req)
	if err != nil {
		return false, err
	}
	defer sub.Close()

	g.mu.Lock()
	if !ready {
		g.head = head
	}
	g.feedErr = nil
	g.beats = 0
	g.hearLocked(sub.Cursor(), true) // Subscribe waited for the hub's first heartbeat
	g.mu.Unlock()

	for {
		env, err := sub.RecvAny()
		if err != nil {
			return true, err
		}
		g.mu.Lock()
		g.st.apply(env)
		g.hearLocked(env.GetCursor(), env.GetKind() == phxv1.Kind_KIND_HEARTBEAT)
		g.mu.Unlock()
	}
}

// hearLocked records that the hub spoke, at cursor, and ends the first
// catch-up once the feed has reached the head; g.mu is held for writing.
func (g *Guard) hearLocked(cursor string, heartbeat bool) {
	g.heard = g.o.now()
	if cursor != "" {
		g.cursor = cursor
	}
	if heartbeat {
		g.beats++
	} else {
		g.beats = 0
	}
	if !g.ready && caughtUp(parseCursor(g.cursor), g.head, g.beats) {
		g.ready = true
		g.o.log.Info("phx guard: caught up with the hub", "cursor", g.cursor, "rollouts", len(g.st.rollouts), "incidents", len(g.st.incidents))
	}
	g.broadcastLocked()
}

// caughtUp reports whether the feed at cursor has read every stream the
// guard follows up to head. Without a head to compare with, two heartbeats
// in a row end the catch-up: the hub sends a heartbeat when a stream opens
// and then only when it had nothing to send for a whole interval.
func caughtUp(cursor, head map[byte]uint64, beats int) bool {
	if head == nil || cursor == nil {
		return beats >= 2
	}
	for i := range len(cursorLetters) {
		if cursor[cursorLetters[i]] < head[cursorLetters[i]] {
			return false
		}
	}
	return true
}

// parseCursor reads a hub cursor such as "h12.r3.i4.a0" into its positions
// per stream letter. It returns nil when the cursor is not of that form or
// lacks a stream the guard follows.
func parseCursor(s string) map[byte]uint64 {
	if s == "" {
		return nil
	}
	m := make(map[byte]uint64)
	for part := range strings.SplitSeq(s, ".") {
		if len(part) < 2 {
			return nil
		}
		n, err := strconv.ParseUint(part[1:], 10, 64)
		if err != nil {
			return nil
		}
		m[part[0]] = n
	}
	for i := range len(cursorLetters) {
		if _, ok := m[cursorLetters[i]]; !ok {
			return nil
		}
	}
	return m
}
