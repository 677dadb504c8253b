package cells

import (
	"context"
	"errors"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// A PublishFunc sends cells to the hub, typically with
// sdk.Client.PublishSignals. It returns an error to have the same cells
// published again at the next window (their signal ids make that safe),
// and nil once the hub has answered every cell, accepted, duplicate or
// rejected: a rejected cell would be rejected again.
type PublishFunc func(ctx context.Context, cells []*phxv1.HealthSignal) error

// Run closes each window when it ends (plus the lateness), publishes its
// cells with publish, and repeats until ctx ends; it then returns
// ctx.Err(). Cells that publish failed on are kept and published again,
// before newer ones, at the next window, also by a later Run. Each window's
// Report goes to the function of WithReportFunc. Only one Run may be active
// on a builder at a time; cells of a Flush called meanwhile are returned to
// its caller, not published by Run.
func (b *Builder) Run(ctx context.Context, publish PublishFunc) error {
	if publish == nil {
		return errors.New("phx cells: Run: nil publish function")
	}
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("phx cells: Run is already running on this builder")
	}
	defer b.running.Store(false)
	for {
		now := b.cfg.clock()
		t := time.NewTimer(b.nextClose(now).Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		rep := b.flushAndPublish(ctx, publish)
		if b.cfg.onFlush != nil {
			b.cfg.onFlush(rep)
		}
	}
}

// nextClose returns the first time after now at which a window may close.
func (b *Builder) nextClose(now time.Time) time.Time {
	k := floorDiv(now.Add(-b.cfg.lateness).Unix(), b.winSec) + 1
	return time.Unix(k*b.winSec, 0).Add(b.cfg.lateness)
}

// flushAndPublish flushes at the clock's time and publishes what is
// waiting.
func (b *Builder) flushAndPublish(ctx context.Context, publish PublishFunc) Report {
	b.flushMu.Lock()
	cells, rep := b.flushLocked(b.cfg.clock())
	b.unpublished = append(b.unpublished, cells...)
	if over := len(b.unpublished) - b.cfg.maxUnpublished; over > 0 {
		b.unpublished = append(b.unpublished[:0:0], b.unpublished[over:]...)
		rep.Unpublished = over
		b.totals.Unpublished += over
	}
	pending := b.unpublished
	b.flushMu.Unlock()
	if len(pending) == 0 {
		return rep
	}
	if err := publish(ctx, pending); err != nil {
		rep.PublishErr = err
		return rep
	}
	b.flushMu.Lock()
	// Only Run appends to unpublished, so pending is still its prefix.
	b.unpublished = append(b.unpublished[:0:0], b.unpublished[len(pending):]...)
	b.flushMu.Unlock()
	return rep
}
