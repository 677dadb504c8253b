package guard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Defaults of a Guard's options.
const (
	// DefaultMaxSilence is how long the guard goes without hearing from the
	// hub before it denies every rollout (see WithMaxSilence).
	DefaultMaxSilence = 45 * time.Second
	// DefaultHeartbeat is the heartbeat interval the guard asks of the hub
	// (see WithHeartbeat).
	DefaultHeartbeat = 10 * time.Second
)

// An Option configures a Guard.
type Option func(*options) error

type options struct {
	maxSilence time.Duration
	heartbeat  time.Duration
	now        func() time.Time
	log        *slog.Logger
	cursor     string
}

func defaultOptions() *options {
	return &options{
		maxSilence: DefaultMaxSilence,
		heartbeat:  DefaultHeartbeat,
		now:        time.Now,
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// WithMaxSilence sets how long the guard may go without hearing from the
// hub, an item or a heartbeat, before Allowed denies every rollout with
// CauseSilent ("no word from the hub for …"). It must be longer than the
// heartbeat interval; the default is 45 seconds.
func WithMaxSilence(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithMaxSilence: %v is not positive", d)
		}
		o.maxSilence = d
		return nil
	}
}

// WithHeartbeat sets the interval at which the hub sends heartbeats to the
// guard while no item flows, in whole seconds from 1 to 300 (rounded up).
// The default is 10 seconds. A shorter interval lets a shorter maximum
// silence work, and the first catch-up end sooner when the last items the
// hub holds are not visible to the member.
func WithHeartbeat(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 || d > 300*time.Second {
			return fmt.Errorf("WithHeartbeat: %v is not within 1s..300s", d)
		}
		o.heartbeat = ((d + time.Second - 1) / time.Second) * time.Second
		return nil
	}
}

// WithClock makes the guard read the time from now instead of time.Now: it
// stamps what it hears from the hub with it and measures the silence since.
// It is meant for tests.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("WithClock: nil clock")
		}
		o.now = now
		return nil
	}
}

// WithLogger makes the guard log its catch-up, feed failures and restarts
// to l. By default it logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		o.log = l
		return nil
	}
}

// WithCursor starts the guard's feed after cursor (from an envelope, or
// from Guard.Cursor of an earlier guard) instead of from the beginning of
// what the hub retains. The guard then knows only the rollouts, incidents
// and advisories published after the cursor: a rollout whose last change
// came before it is unknown, and denied. If the hub no longer retains the
// cursor, the guard reads everything from the beginning instead.
func WithCursor(cursor string) Option {
	return func(o *options) error {
		if cursor == "" {
			return errors.New("WithCursor: empty cursor")
		}
		o.cursor = cursor
		return nil
	}
}
