package sdk

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// DefaultHeartbeat is the hub's heartbeat interval when the request leaves
// heartbeat_seconds unset.
const DefaultHeartbeat = 15 * time.Second

// Subscription is a live feed of envelopes that survives broken connections
// and hub restarts: when the stream breaks it subscribes again with the same
// filters, starting after the last cursor it saw, so nothing is missed and
// nothing is repeated. Recv must be called from one goroutine at a time;
// Cursor, LastHeard and Close may be called from any goroutine.
type Subscription struct {
	c    *Client
	req  *phxv1.SubscribeRequest
	ctx  context.Context
	stop context.CancelFunc
	idle time.Duration

	// Owned by the goroutine calling Recv.
	stream   grpc.ServerStreamingClient[phxv1.Envelope]
	streamMu sync.Mutex // guards cancel and watchdog, which Close also uses
	cancel   context.CancelFunc
	watchdog *time.Timer
	stalled  *atomic.Bool
	failures int
	// limited is the delay a rate limit asked for before the next attempt.
	limited time.Duration
	pending *phxv1.Envelope // an item that arrived while Subscribe waited

	mu        sync.Mutex
	cursor    string
	lastHeard time.Time
	closed    bool
}

// Subscribe starts a feed of the items the caller may see that match req's
// filters, from req's start position (unset: new items only). It returns
// once the hub has accepted the subscription and sent its first envelope
// (the hub sends a heartbeat at once), so an item published after Subscribe
// returns is delivered even when starting with new items only.
//
// The Subscription resumes by itself after Unavailable errors and broken
// connections, with backoff and without limit, until ctx ends or Close is
// called; while the hub cannot be reached, Subscribe itself keeps trying.
// It gives up on errors that a new attempt cannot fix, such as
// ErrOutOfRange (the cursor is older than the hub retains),
// ErrPermissionDenied, ErrInvalidArgument or ErrUnauthenticated; those are
// returned by Subscribe or by Recv.
//
// The hub sends a heartbeat every req.HeartbeatSeconds (default 15) while
// no item flows; a stream that stays silent for more than twice that plus
// ten seconds is taken for dead and resumed.
func (c *Client) Subscribe(ctx context.Context, req *phxv1.SubscribeRequest) (*Subscription, error) {
	if req == nil {
		req = &phxv1.SubscribeRequest{}
	}
	req = proto.Clone(req).(*phxv1.SubscribeRequest)
	hb := DefaultHeartbeat
	if req.GetHeartbeatSeconds() > 0 {
		hb = time.Duration(req.GetHeartbeatSeconds()) * time.Second
	}
	sctx, stop := context.WithCancel(ctx)
	s := &Subscription{
		c:      c,
		req:    req,
		ctx:    sctx,
		stop:   stop,
		idle:   2*hb + 10*time.Second,
		cursor: req.GetCursor(),
	}
	first, err := s.recvAny()
	if err != nil {
		s.Close()
		return nil, err
	}
	if first.GetKind() != phxv1.Kind_KIND_HEARTBEAT {
		s.pending = first
	}
	return s, nil
}

// open starts a stream from the last cursor seen, or from the request's own
// start position when no cursor has been seen yet.
func (s *Subscription) open() error {
	req := proto.Clone(s.req).(*phxv1.SubscribeRequest)
	if cur := s.Cursor(); cur != "" {
		req.Start = &phxv1.SubscribeRequest_Cursor{Cursor: cur}
	}
	ctx, cancel := context.WithCancel(s.ctx)
	stream, err := s.c.feed.Subscribe(ctx, req)
	if err != nil {
		cancel()
		return err
	}
	stalled := new(atomic.Bool)
	s.streamMu.Lock()
	s.stream, s.cancel, s.stalled = stream, cancel, stalled
	s.watchdog = time.AfterFunc(s.idle, func() {
		stalled.Store(true)
		cancel()
	})
	s.streamMu.Unlock()
	return nil
}

func (s *Subscription) closeStream() {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.stream, s.cancel, s.watchdog = nil, nil, nil
}

// resumable reports whether a broken stream should be opened again.
func (s *Subscription) resumable(err error) bool {
	if s.ctx.Err() != nil {
		return false
	}
	if errors.Is(err, io.EOF) || (s.stalled != nil && s.stalled.Load()) {
		return true
	}
	if _, ok := retryDelay(err); ok {
		return true // a rate limit: come back later
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted:
		return true
	case codes.Canceled:
		// Our own context is alive, so the hub or the transport canceled
		// the stream (for example while the hub shuts down).
		return true
	}
	return false
}

// Recv returns the next item. It never returns heartbeats; it records their
// cursor and time (see Cursor and LastHeard). It blocks, resuming the feed
// as needed, until an item arrives, an error that resuming cannot fix
// occurs, the context given to Subscribe ends, or Close is called.
func (s *Subscription) Recv() (*phxv1.Envelope, error) {
	if p := s.pending; p != nil {
		s.pending = nil
		return p, nil
	}
	for {
		env, err := s.recvAny()
		if err != nil {
			return nil, err
		}
		if env.GetKind() != phxv1.Kind_KIND_HEARTBEAT {
			return env, nil
		}
	}
}

// RecvAny is Recv that also returns the hub's heartbeats: envelopes of
// KIND_HEARTBEAT carrying only a cursor and the hub's time. It suits callers
// that act on the hub's liveness as well as on its items, such as a guard
// that fails closed when the hub falls silent. The heartbeat that Subscribe
// waited for is not returned again; Cursor and LastHeard reflect it. The
// same rules as for Recv apply: one goroutine at a time, and Recv and
// RecvAny may be mixed.
func (s *Subscription) RecvAny() (*phxv1.Envelope, error) {
	if p := s.pending; p != nil {
		s.pending = nil
		return p, nil
	}
	return s.recvAny()
}

// recvAny returns the next envelope, heartbeats included, opening the
// stream again as long as the error allows.
func (s *Subscription) recvAny() (*phxv1.Envelope, error) {
	for {
		if s.ctx.Err() != nil {
			return nil, s.doneErr()
		}
		if s.stream == nil {
			if err := s.backoff(); err != nil {
				return nil, err
			}
			if err := s.open(); err != nil {
				if !s.resumable(err) {
					return nil, s.failErr(err)
				}
				if d, ok := retryDelay(err); ok {
					s.limited = d
				}
				s.failures++
				// Say it once per outage; the rest is detail.
				level := slog.LevelWarn
				if s.failures > 1 {
					level = slog.LevelDebug
				}
				s.c.log.Log(s.ctx, level, "phx: subscribe failed; retrying", "hub", s.c.target, "cursor", s.Cursor(), "err", err)
				continue
			}
		}
		env, err := s.stream.Recv()
		if err == nil {
			if s.failures > 0 {
				s.c.log.Info("phx: feed resumed", "hub", s.c.target, "cursor", s.Cursor())
			}
			s.failures = 0
			s.streamMu.Lock()
			s.watchdog.Reset(s.idle)
			s.streamMu.Unlock()
			s.mu.Lock()
			if env.GetCursor() != "" {
				s.cursor = env.GetCursor()
			}
			s.lastHeard = time.Now()
			s.mu.Unlock()
			return env, nil
		}
		resume := s.resumable(err)
		s.closeStream()
		if !resume {
			return nil, s.failErr(err)
		}
		s.failures++
		s.c.log.Warn("phx: feed interrupted; resuming", "hub", s.c.target, "cursor", s.Cursor(), "err", err)
	}
}

// backoff waits before a new attempt after failures, if any: as long as a
// rate limit asked, else by the retry policy.
func (s *Subscription) backoff() error {
	if s.failures == 0 {
		return nil
	}
	wait := s.c.retry.backoff(s.failures)
	if s.limited > 0 {
		wait, s.limited = s.limited+rand.N(s.limited/10+1), 0
	}
	if err := sleep(s.ctx, wait); err != nil {
		return s.doneErr()
	}
	return nil
}

func (s *Subscription) failErr(err error) error {
	if s.ctx.Err() != nil {
		return s.doneErr()
	}
	return toError(err)
}

func (s *Subscription) doneErr() error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return &Error{Code: CodeCanceled, Message: "subscription closed"}
	}
	return toError(s.ctx.Err())
}

// Cursor returns the last cursor received, heartbeats included: subscribing
// again from it continues exactly after what this subscription delivered.
// Before anything arrives it is the request's start cursor, if any, else "".
func (s *Subscription) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

// LastHeard returns when the hub was last heard from (an item or a
// heartbeat), or the zero time if never.
func (s *Subscription) LastHeard() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHeard
}

// Close ends the subscription. A Recv in progress returns an *Error with
// CodeCanceled. Close always returns nil.
func (s *Subscription) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop() // cancels the stream too
	s.streamMu.Lock()
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
	s.streamMu.Unlock()
	return nil
}
