// Package detectrun runs the hub's detector: it follows the health cells
// and rollouts stored in JetStream, feeds them to a detection engine, stores
// the advisories the engine raises on PHX_ADVISORIES, and keeps the
// engine's state with its stream positions in a KV bucket, so that a restart
// neither loses state nor repeats an advisory.
//
// Crash safety: advisories are stored before the state that raised them,
// and each carries a message id derived from its content. After a crash the
// engine replays from the last saved positions, raises the same advisories
// again, and JetStream's de-duplication stores them once. Several hub
// replicas may run the detector side by side for the same reason: their
// advisories are identical and stored once.
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
	Bus      *bus.Bus
	Engine   Engine
	Registry *members.Store
	// Interval between evaluations (default 2s).
	Interval time.Duration
	// Lag, if set, is told how far behind the stored items the detector is.
	Lag    func(time.Duration)
	Logger *slog.Logger
}

type saved struct {
	Cursor bus.Cursor `json:"cursor"`
	Engine []byte     `json:"engine"`
	// Now is the end of the latest window seen.
	Now time.Time `json:"now"`
}

// Run runs the detector until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Lag == nil {
		cfg.Lag = func(time.Duration) {}
	}
	kv, err := cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, Description: "phx detector state"})
	if err != nil {
		return fmt.Errorf("detector state bucket: %w", err)
	}
	st, err := load(ctx, kv)
	if err != nil {
		return err
	}
	if len(st.Engine) > 0 {
		if err := cfg.Engine.Restore(st.Engine); err != nil {
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
		observe(cfg.Engine, m, &st)
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
			if err := step(ctx, cfg, kv, &st); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				cfg.Logger.Warn("detector step", "err", err)
				continue
			}
			dirty = false
		}
	}
}

func load(ctx context.Context, kv jetstream.KeyValue) (saved, error) {
	var st saved
	e, err := kv.Get(ctx, stateKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, fmt.Errorf("detector state: %w", err)
	}
	return st, nil
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

// step evaluates, stores the new advisories, then the state.
func step(ctx context.Context, cfg Config, kv jetstream.KeyValue, st *saved) error {
	found := cfg.Engine.Step(st.Now)
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
	data, err := cfg.Engine.MarshalState()
	if err != nil {
		return err
	}
	st.Engine = data
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, stateKey, b)
	return err
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
