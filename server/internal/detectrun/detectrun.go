// Package detectrun runs the hub's detector: it follows the health cells
// and rollouts stored in JetStream, feeds them to a detection engine, stores
// the advisories the engine raises on PHX_ADVISORIES, and keeps the
// engine's state with its stream positions in a KV bucket, so that a restart
// neither loses state nor repeats an advisory.
//
// Crash safety: advisories are stored before the state that raised them,
// and each carries a message id derived from its content. After a crash the
// engine replays from the last saved positions, raises the same advisories
// again, and JetStream's de-duplication stores them once.
//
// One replica at a time: every hub replica that runs the detector is a
// candidate for a lease kept in the same bucket (lease.go), and only its
// holder runs the detector. A replica that takes the lease loads the state
// its predecessor stored and continues from there; it first writes that
// state back at the revision it read, and writes it only at the revision it
// wrote last, so a deposed holder's late write is refused.
package detectrun

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/detect"
)

// Engine is the detection logic (detect.Detector): fed cells and rollouts,
// it raises findings, deterministically given its inputs.
type Engine interface {
	ObserveCell(publisher string, c *phxv1.HealthSignal)
	ObserveRollout(publisher string, r *phxv1.Rollout, at time.Time)
	// Step evaluates every window that ended before now (the end of the
	// latest window seen) and returns new findings.
	Step(now time.Time) []detect.Finding
	MarshalState() ([]byte, error)
	Restore(state []byte) error
}

// Bucket is the KV bucket of the detector's state.
const Bucket = "phx_detector"

const stateKey = "state"

// Publisher is the publisher of the hub's own advisories.
const Publisher = "phx"

// Config wires the detector.
type Config struct {
	Bus *bus.Bus
	// NewEngine returns a fresh engine; each time this replica takes the
	// lease, one is made and given the stored state.
	NewEngine func() Engine
	Registry  *members.Store
	// Interval between evaluations (default 2s).
	Interval time.Duration
	// LeaseTTL is how long the lease holds without a renewal (default
	// 15s): when its holder dies, another replica takes over within about
	// this time.
	LeaseTTL time.Duration
	// RenewInterval is how often the holder renews the lease (default
	// LeaseTTL/3, and less than LeaseTTL/2). A holder that has not renewed
	// for LeaseTTL-RenewInterval stops its detector.
	RenewInterval time.Duration
	// Sole says that no other hub can reach the bus (embedded NATS): a
	// lease found held was left by an earlier run and is taken at once.
	Sole bool
	// Holder names this replica in the lease (default: host name,
	// process id and a random part).
	Holder string
	// Lag, if set, is told how far behind the stored items the detector is.
	Lag func(time.Duration)
	// Leader, if set, is told when this replica starts and stops running
	// the detector.
	Leader func(bool)
	Logger *slog.Logger
}

type saved struct {
	Cursor bus.Cursor `json:"cursor"`
	Engine []byte     `json:"engine"`
	// Now is the end of the latest window seen.
	Now time.Time `json:"now"`
}

// errDeposed: the stored state was written by someone else since this
// replica last wrote it.
var errDeposed = errors.New("detector state written by another replica")

// Run takes part in the lease until ctx ends, and runs the detector while
// it holds it. On return the lease is released if it was held.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	if cfg.RenewInterval <= 0 || 2*cfg.RenewInterval >= cfg.LeaseTTL {
		cfg.RenewInterval = cfg.LeaseTTL / 3
	}
	if cfg.Holder == "" {
		cfg.Holder = holderID()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Lag == nil {
		cfg.Lag = func(time.Duration) {}
	}
	if cfg.Leader == nil {
		cfg.Leader = func(bool) {}
	}
	kv, err := cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, Description: "phx detector state"})
	if err != nil {
		return fmt.Errorf("detector state bucket: %w", err)
	}
	l := &lease{kv: kv, id: cfg.Holder, ttl: cfg.LeaseTTL, renew: cfg.RenewInterval, sole: cfg.Sole}
	for {
		if !campaign(ctx, cfg, l) {
			return nil
		}
		err := hold(ctx, cfg, kv, l)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// The detector failed: give the other replicas a turn.
			cfg.Logger.Error("detector stopped", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(cfg.LeaseTTL):
			}
		}
	}
}

// campaign waits until l is held, or ctx ends (false). It looks again
// every RenewInterval, when the holder's lease time has passed, and at
// once when the lease key changes (a holder released it).
func campaign(ctx context.Context, cfg Config, l *lease) bool {
	var w jetstream.KeyWatcher
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
	}()
	waiting := false
	for {
		before := l.seenHolder
		ok, wait, err := l.acquire(ctx)
		if ctx.Err() != nil {
			return false
		}
		if err != nil {
			cfg.Logger.Warn("detector lease", "err", err)
		}
		if ok {
			cfg.Logger.Info("detector lease acquired", "holder", l.id, "previous", before, "revision", l.rev)
			return true
		}
		if !waiting && l.seenHolder != "" {
			cfg.Logger.Info("detector lease held by another replica", "holder", l.seenHolder)
			waiting = true
		}
		if w == nil && err == nil {
			// Watch the key while NATS answers (again, after an
			// outage), and look once more: a release in between is
			// not missed.
			if w, err = l.kv.Watch(ctx, leaseKey, jetstream.UpdatesOnly()); err == nil {
				cfg.Logger.Debug("detector lease watched", "holder", l.seenHolder)
				continue
			}
			w = nil
		}
		var changed <-chan jetstream.KeyValueEntry
		if w != nil {
			changed = w.Updates()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case _, open := <-changed:
			if !open {
				_ = w.Stop()
				w = nil // the watch ended: made again on the next look that works
			}
		case <-t.C:
		}
		t.Stop()
	}
}

// hold runs the detector while l is held. It returns nil when ctx ends
// (after releasing the lease) or the lease is lost, and the detector's
// error if it stopped by itself.
func hold(ctx context.Context, cfg Config, kv jetstream.KeyValue, l *lease) error {
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	cfg.Leader(true)
	go func() { done <- runDetector(dctx, cfg, kv) }()
	// ended stops the detector and waits for it.
	ended := func() {
		stop()
		<-done
		cfg.Leader(false)
		cfg.Lag(0)
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := l.release(rctx); err != nil {
			cfg.Logger.Warn("detector lease not released", "err", err)
			return
		}
		cfg.Logger.Info("detector lease released", "holder", l.id)
	}
	t := time.NewTimer(l.renew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			ended()
			release()
			return nil
		case err := <-done:
			done <- err
			ended()
			release()
			return err
		case <-t.C:
		}
		err := l.extend(ctx)
		switch {
		case err == nil:
			t.Reset(l.renew)
			continue
		case ctx.Err() != nil:
			ended()
			release()
			return nil
		case errors.Is(err, errLeaseLost):
			cfg.Logger.Warn("detector lease lost: another replica holds it", "holder", l.id)
		case !time.Now().Before(l.deadline()):
			cfg.Logger.Error("detector lease lost: not renewed in time", "holder", l.id, "err", err)
		default:
			cfg.Logger.Warn("detector lease not renewed, retrying", "err", err)
			t.Reset(min(l.renew/4, time.Until(l.deadline())))
			continue
		}
		ended()
		l.rev = 0
		return nil
	}
}

// runDetector runs the detector until ctx ends.
func runDetector(ctx context.Context, cfg Config, kv jetstream.KeyValue) error {
	st, rev, err := claim(ctx, kv)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	engine := cfg.NewEngine()
	if len(st.Engine) > 0 {
		if err := engine.Restore(st.Engine); err != nil {
			return fmt.Errorf("detector state: %w", err)
		}
	}
	cfg.Logger.Info("detector started", "cursor", st.Cursor.String())

	fctx, stop := context.WithCancel(ctx)
	defer stop()
	out := make(chan bus.FeedMsg, 4096)
	errc := make(chan error, 1)
	req := bus.FeedRequest{}
	req.Read[bus.FeedHealth], req.Read[bus.FeedRollouts] = true, true
	go func() { errc <- cfg.Bus.Feed(fctx, req, st.Cursor, out) }()
	defer func() {
		stop()
		<-errc // the feed goroutine is owned here
	}()

	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	dirty := false
	// The feed reads each stream apart, so rollouts (few) can arrive far
	// ahead of the health cells (many) stored before them. A rollout is
	// applied once the cells stored before it have been seen, or the
	// health stream has nothing more to give: the engine sees both in the
	// order they were stored, as it does when it keeps up.
	var held []bus.FeedMsg
	var healthAt time.Time // stored time of the latest cell read
	healthIdle := false    // the latest cell read had nothing pending after it
	healthRead := false    // a cell arrived since the last tick
	apply := func(m bus.FeedMsg) {
		observe(engine, m, &st)
		st.Cursor[m.Stream] = m.Seq
		dirty = true
	}
	release := func(all bool) {
		n := 0
		for _, m := range held {
			if !all && m.Time.After(healthAt) {
				break
			}
			apply(m)
			n++
		}
		held = held[n:]
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			errc <- err
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("detector feed: %w", err)
		case m := <-out:
			switch {
			case m.Stream == bus.FeedHealth:
				apply(m)
				healthAt, healthIdle, healthRead = m.Time, m.Pending == 0, true
				release(healthIdle)
			case len(held) > 0 || (!healthIdle && m.Time.After(healthAt)):
				held = append(held, m)
			default:
				apply(m)
			}
			if len(out) == 0 {
				cfg.Lag(0)
			} else {
				cfg.Lag(time.Since(m.Time))
			}
		case <-tick.C:
			if !healthRead {
				// No cell for a whole interval: the health stream is
				// caught up (or empty).
				healthIdle = true
				release(true)
			}
			healthRead = false
			if !dirty || st.Now.IsZero() {
				continue
			}
			if err := step(ctx, cfg, engine, kv, &st, &rev); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, errDeposed) {
					return err
				}
				cfg.Logger.Warn("detector step", "err", err)
				continue
			}
			dirty = false
		}
	}
}

// claim loads the stored state and writes it back at the revision it was
// read at: from then on, a write by an earlier holder, made at the
// revision that holder knew, is refused. It returns the state and the
// revision to write the next state at.
func claim(ctx context.Context, kv jetstream.KeyValue) (saved, uint64, error) {
	for {
		var st saved
		var rev uint64
		e, err := kv.Get(ctx, stateKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			b, err := json.Marshal(st)
			if err != nil {
				return st, 0, err
			}
			rev, err = kv.Create(ctx, stateKey, b)
			if err == nil {
				return st, rev, nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return st, 0, fmt.Errorf("detector state: %w", err)
			}
		case err != nil:
			return st, 0, fmt.Errorf("detector state: %w", err)
		default:
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return st, 0, fmt.Errorf("detector state: %w", err)
			}
			rev, err = kv.Update(ctx, stateKey, e.Value(), e.Revision())
			if err == nil {
				return st, rev, nil
			}
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return st, 0, fmt.Errorf("detector state: %w", err)
			}
		}
		// Written meanwhile (by a holder that has not stopped yet): read
		// it again.
		select {
		case <-ctx.Done():
			return st, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// store writes the state at the revision written last (*rev), and
// advances it.
func store(ctx context.Context, kv jetstream.KeyValue, st *saved, rev *uint64) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	r, err := kv.Update(ctx, stateKey, b, *rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return errDeposed
	}
	if err != nil {
		return err
	}
	*rev = r
	return nil
}

// observe feeds one stored item to the engine and advances the event time.
func observe(e Engine, m bus.FeedMsg, st *saved) {
	env := &phxv1.Envelope{}
	if err := proto.Unmarshal(m.Data, env); err != nil {
		return
	}
	switch it := env.Item.(type) {
	case *phxv1.Envelope_HealthSignal:
		c := it.HealthSignal
		e.ObserveCell(env.Publisher, c)
		if end := c.GetWindowStart().AsTime().Add(time.Duration(c.GetWindowSeconds()) * time.Second); end.After(st.Now) {
			st.Now = end
		}
	case *phxv1.Envelope_Rollout:
		// The detector works in event time, the windows of the cells. A
		// rollout change is placed at the event time it arrives at: the
		// end of the latest window seen, or when it was stored if that is
		// earlier (no cells yet, or cells late). Publishers that replay
		// past windows quickly (a backfill, the simulator at --speed 0)
		// then see their rollouts where their cells put them.
		at := env.GetPublishedAt().AsTime()
		if !st.Now.IsZero() && st.Now.Before(at) {
			at = st.Now
		}
		e.ObserveRollout(env.Publisher, it.Rollout, at)
	}
}

// step evaluates, stores the new advisories, then the state (refused with
// errDeposed if another replica wrote it since).
func step(ctx context.Context, cfg Config, engine Engine, kv jetstream.KeyValue, st *saved, rev *uint64) error {
	found := engine.Step(st.Now)
	if len(found) > 0 {
		msgs := make([]bus.Message, 0, len(found))
		advs := make([]*phxv1.Advisory, 0, len(found))
		reg := cfg.Registry.Get()
		for _, f := range found {
			a := f.Advisory
			advs = append(advs, a)
			env := Envelope(a, reg)
			if f.Audience != nil {
				env.Audience = f.Audience
			}
			data, err := proto.Marshal(env)
			if err != nil {
				return err
			}
			msgs = append(msgs, bus.Message{Subject: "phx.v1.advisory." + Publisher + "." + a.Id, MsgID: "advisory/" + a.Id, Data: data})
		}
		for i, r := range cfg.Bus.PublishBatch(ctx, msgs) {
			if r.Err != nil {
				return fmt.Errorf("advisory %s: %w", advs[i].Id, r.Err)
			}
			if !r.Duplicate {
				cfg.Logger.Info("advisory", "id", advs[i].Id, "kind", advs[i].Kind, "rollout", advs[i].RolloutId, "summary", advs[i].Summary)
			}
		}
	}
	data, err := engine.MarshalState()
	if err != nil {
		return err
	}
	st.Engine = data
	return store(ctx, kv, st, rev)
}

// Envelope wraps an advisory for its audience: the vendor that owns the
// product and the platform, TLP:AMBER. Its id, when the engine left it
// empty, is derived from its content, so the same finding is the same
// advisory.
func Envelope(a *phxv1.Advisory, reg *members.Registry) *phxv1.Envelope {
	if a.Id == "" {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s|%s|%s|%d", a.Kind, a.RolloutId, a.Product, a.GetEvidence().GetFirstDataAt().AsTime().Unix())))
		a.Id = "ADV-" + hex.EncodeToString(sum[:6])
	}
	var orgs []string
	if owner, ok := reg.Owner(a.Product); ok {
		orgs = append(orgs, owner)
	}
	for _, o := range reg.Orgs() {
		if m, _ := reg.Lookup(o); m.Role == members.RolePlatform && !slices.Contains(orgs, o) {
			orgs = append(orgs, o)
		}
	}
	return &phxv1.Envelope{
		MessageId:   "advisory/" + a.Id,
		Kind:        phxv1.Kind_KIND_ADVISORY,
		Publisher:   Publisher,
		PublishedAt: timestamppb.Now(),
		Audience:    &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: orgs},
		Product:     a.Product,
		Item:        &phxv1.Envelope_Advisory{Advisory: a},
	}
}
