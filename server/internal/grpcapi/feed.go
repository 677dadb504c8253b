package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/policy"
)

type feedSvc struct {
	phxv1.UnimplementedFeedServiceServer
	a *API
}

var kindStream = map[phxv1.Kind]bus.FeedStream{
	phxv1.Kind_KIND_HEALTH_SIGNAL: bus.FeedHealth,
	phxv1.Kind_KIND_ROLLOUT:       bus.FeedRollouts,
	phxv1.Kind_KIND_INCIDENT:      bus.FeedIncidents,
	phxv1.Kind_KIND_ADVISORY:      bus.FeedAdvisories,
}

// feedFilter is what a subscriber asked to see.
type feedFilter struct {
	publishers  []string
	products    []string
	minSeverity phxv1.Severity
}

func (f feedFilter) match(env *phxv1.Envelope) bool {
	if len(f.publishers) > 0 && !slices.Contains(f.publishers, env.Publisher) {
		return false
	}
	if len(f.products) > 0 {
		switch it := env.Item.(type) {
		case *phxv1.Envelope_Incident:
			if !slices.ContainsFunc(it.Incident.Affected, func(a *phxv1.Affected) bool { return slices.Contains(f.products, a.Product) }) {
				return false
			}
		default:
			if !slices.Contains(f.products, env.Product) {
				return false
			}
		}
	}
	if f.minSeverity != phxv1.Severity_SEVERITY_UNSPECIFIED {
		switch it := env.Item.(type) {
		case *phxv1.Envelope_Incident:
			return it.Incident.Severity >= f.minSeverity
		case *phxv1.Envelope_Advisory:
			return it.Advisory.Severity >= f.minSeverity
		}
	}
	return true
}

// parseSubscribe validates the request and builds the bus request.
func parseSubscribe(req *phxv1.SubscribeRequest) (bus.FeedRequest, feedFilter, time.Duration, error) {
	var fr bus.FeedRequest
	ff := feedFilter{publishers: req.Publishers, products: req.Products, minSeverity: req.MinSeverity}
	for i, k := range req.Kinds {
		st, ok := kindStream[k]
		if !ok {
			return fr, ff, 0, invalid(fmt.Sprintf("kinds[%d]", i), "%s is not a kind of item to subscribe to", k)
		}
		fr.Read[st] = true
	}
	if len(req.Kinds) == 0 {
		for i := range bus.NumFeeds {
			fr.Read[i] = true
		}
	}
	if len(req.Publishers) > 100 {
		return fr, ff, 0, invalid("publishers", "%d publishers; at most 100", len(req.Publishers))
	}
	if len(req.Products) > 100 {
		return fr, ff, 0, invalid("products", "%d products; at most 100", len(req.Products))
	}
	for i, p := range req.Publishers {
		if err := match(fmt.Sprintf("publishers[%d]", i), reID, p); err != nil {
			return fr, ff, 0, err
		}
	}
	for i, p := range req.Products {
		if err := match(fmt.Sprintf("products[%d]", i), reID, p); err != nil {
			return fr, ff, 0, err
		}
		// Health is the heavy stream: let JetStream filter it by product.
		fr.Filters[bus.FeedHealth] = append(fr.Filters[bus.FeedHealth], "phx.v1.health.*."+p)
	}
	if _, ok := phxv1.Severity_name[int32(req.MinSeverity)]; !ok {
		return fr, ff, 0, invalid("min_severity", "%d is not a severity", req.MinSeverity)
	}
	hb := 15 * time.Second
	if req.HeartbeatSeconds != 0 {
		if req.HeartbeatSeconds > 300 {
			return fr, ff, 0, invalid("heartbeat_seconds", "%d is more than 300", req.HeartbeatSeconds)
		}
		hb = time.Duration(req.HeartbeatSeconds) * time.Second
	}
	switch st := req.Start.(type) {
	case nil:
		fr.Start = bus.StartNew
	case *phxv1.SubscribeRequest_Cursor:
		c, present, err := bus.ParseCursor(st.Cursor)
		if err != nil {
			return fr, ff, 0, invalid("cursor", "%q is not a cursor of this hub (e.g. h12.r3.i4.a0)", st.Cursor)
		}
		fr.Start, fr.Cursor, fr.Present = bus.StartCursor, c, present
	case *phxv1.SubscribeRequest_Since:
		if err := validTime("since", st.Since); err != nil {
			return fr, ff, 0, err
		}
		fr.Start, fr.Since = bus.StartTime, st.Since.AsTime()
	case *phxv1.SubscribeRequest_FromBeginning:
		fr.Start = bus.StartBeginning
		if !st.FromBeginning {
			fr.Start = bus.StartNew
		}
	}
	return fr, ff, hb, nil
}

func (s *feedSvc) Subscribe(req *phxv1.SubscribeRequest, stream grpc.ServerStreamingServer[phxv1.Envelope]) error {
	ctx := stream.Context()
	id := caller(ctx)
	r := recipient(id)
	fr, ff, hb, err := parseSubscribe(req)
	if err != nil {
		return err
	}
	cursor, err := s.a.cfg.Bus.ResolveStart(ctx, fr)
	if err != nil {
		return err
	}
	m := s.a.cfg.Metrics
	m.subscribers.Inc()
	defer m.subscribers.Dec()
	lag, untrack := m.lags.add()
	defer untrack()

	ctx, cancel := context.WithCancel(ctx)
	out := make(chan bus.FeedMsg, 64)
	errc := make(chan error, 1)
	go func() { errc <- s.a.cfg.Bus.Feed(ctx, fr, cursor, out) }()
	defer func() {
		cancel()
		<-errc // the feed goroutine is owned here: wait for it to stop
	}()

	// A stream lives for hours: it follows the member registry as it is
	// reloaded, so an org removed from it stops receiving at once and a
	// changed role changes what it sees.
	member := func() error {
		mem, ok := s.a.cfg.Registry.Get().Lookup(id.Org)
		if !ok {
			return fmt.Errorf("%w: org %q is no longer a member of this hub", authn.ErrNotMember, id.Org)
		}
		r.OrgRole = mem.Role
		return nil
	}
	heartbeatEnv := func() *phxv1.Envelope {
		return &phxv1.Envelope{Cursor: cursor.String(), Kind: phxv1.Kind_KIND_HEARTBEAT, PublishedAt: s.a.now()}
	}
	// The first heartbeat hands out the start position at once, so a client
	// that drops before any item arrives resumes from here.
	if err := member(); err != nil {
		return err
	}
	if err := stream.Send(heartbeatEnv()); err != nil {
		return err
	}

	// From here one goroutine sends, so that a subscriber that reads slowly
	// or not at all holds up only its own queue: this loop notices when the
	// queue stays full and cuts the subscriber off. Sending blocks once the
	// subscriber's HTTP/2 window is full; a send blocked on a subscriber that
	// stopped reading returns when the stream ends, which gRPC does as soon
	// as this handler returns (it writes the status and cancels the stream).
	// So the sender is waited for only when the stream has ended already;
	// when this handler ends a live stream, the sender stops right after it.
	q := make(chan *phxv1.Envelope, s.a.cfg.Feed.Queue)
	snd := &feedSender{s: s, stream: stream, q: q, stop: make(chan struct{}), done: make(chan struct{}), errc: make(chan error, 1), org: id.Org}
	snd.lastSent.Store(cursor.String())
	go snd.run(ctx)
	defer func() {
		close(snd.stop)
		if stream.Context().Err() != nil {
			<-snd.done
		}
	}()
	stall := time.NewTimer(s.a.cfg.Feed.Stall)
	stall.Stop()
	defer stall.Stop()
	// enqueue hands env to the sender, waiting at most Feed.Stall for room.
	enqueue := func(env *phxv1.Envelope) error {
		select {
		case q <- env:
			return nil
		default:
		}
		stall.Reset(s.a.cfg.Feed.Stall)
		defer stall.Stop()
		select {
		case q <- env:
			return nil
		case <-stall.C:
			m.cutOff.Inc()
			err := &errTooSlow{queued: len(q), stall: s.a.cfg.Feed.Stall, cursor: snd.lastSent.Load().(string)}
			s.a.log.Info("subscriber cut off", "org", id.Org, "err", err)
			return err
		case err := <-snd.errc:
			return err
		case <-s.a.cfg.Draining:
			return errShuttingDown
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	timer := time.NewTimer(hb)
	defer timer.Stop()
	for {
		select {
		case fm := <-out:
			cursor[fm.Stream] = fm.Seq
			lag.pending[fm.Stream].Store(fm.Pending)
			env, err := decodeEnvelope(fm.Data)
			if err != nil {
				s.a.log.Error("undecodable item in feed", "stream", fm.Stream.StreamName(), "seq", fm.Seq, "err", err)
				continue
			}
			if err := member(); err != nil {
				return err
			}
			if !policy.Visible(r, env.Publisher, env.Audience) {
				continue
			}
			ok, pseudo, err := s.currentVisible(ctx, fm, r)
			if err != nil {
				return err
			} else if !ok {
				continue
			}
			if pseudo && !env.Audience.GetPseudonymous() {
				// Shown under a pseudonym now: so are its older revisions,
				// or they would link the pseudonym to the org.
				env.Audience = proto.CloneOf(env.Audience)
				env.Audience.Pseudonymous = true
			}
			env = s.a.present(env, r)
			if !ff.match(env) {
				continue
			}
			env.Cursor = cursor.String()
			if err := enqueue(env); err != nil {
				return err
			}
			timer.Reset(hb)
		case <-timer.C:
			if err := member(); err != nil {
				return err
			}
			// A heartbeat only says the hub is alive: a subscriber with a
			// full queue has items to read and does without.
			select {
			case q <- heartbeatEnv():
			default:
			}
			timer.Reset(hb)
		case err := <-snd.errc:
			return err
		case err := <-errc:
			errc <- err // for the deferred wait
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil {
				err = errors.New("feed ended")
			}
			return err
		case <-s.a.cfg.Draining:
			return errShuttingDown
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// FeedLimits bound what one subscriber may leave unread in the hub.
type FeedLimits struct {
	// Queue is how many envelopes may wait to be sent to one subscriber
	// (default 256), on top of what its HTTP/2 flow-control window holds.
	Queue int
	// Stall is how long a subscriber's queue may stay full, the subscriber
	// taking nothing from it, before the hub ends the stream with Aborted
	// (default 30s). The subscriber resumes from its last cursor and loses
	// nothing: what was not sent stays in JetStream, not in the hub.
	Stall time.Duration
}

func (l *FeedLimits) defaults() {
	if l.Queue <= 0 {
		l.Queue = 256
	}
	if l.Stall <= 0 {
		l.Stall = 30 * time.Second
	}
}

// errTooSlow ends the stream of a subscriber that stopped reading.
type errTooSlow struct {
	queued int
	stall  time.Duration
	// cursor is the cursor of the last envelope handed to the transport.
	cursor string
}

func (e *errTooSlow) Error() string {
	return fmt.Sprintf("subscriber too slow: %d items waited %v unread; resume from cursor %s (the last one sent; or from the last one received, if later)", e.queued, e.stall, e.cursor)
}

// feedSender sends a subscriber's envelopes: the only goroutine that calls
// stream.Send once the first heartbeat is out.
type feedSender struct {
	s      *feedSvc
	stream grpc.ServerStreamingServer[phxv1.Envelope]
	q      <-chan *phxv1.Envelope
	stop   chan struct{} // closed when the handler returns
	done   chan struct{} // closed when run returns
	errc   chan error    // the send error that ended run, if any (buffered)
	org    string
	// lastSent is the cursor (string) of the last envelope sent.
	lastSent atomic.Value
}

func (f *feedSender) run(ctx context.Context) {
	defer close(f.done)
	m := f.s.a.cfg.Metrics
	// What the subscriber receives is audited in batches.
	sent := f.s.a.newDeliveries(ctx, f.org)
	defer sent.flush()
	for {
		select {
		case env := <-f.q:
			select {
			case <-f.stop:
				return // the handler has returned: the stream is over
			default:
			}
			if err := f.stream.Send(env); err != nil {
				f.errc <- err
				return
			}
			f.lastSent.Store(env.Cursor)
			if env.Kind == phxv1.Kind_KIND_HEARTBEAT {
				continue
			}
			if in := env.GetIncident(); in != nil {
				f.s.a.delivered(ctx, in.Id, f.org)
			}
			m.delivered.WithLabelValues(env.Kind.String()).Inc()
			sent.add(env)
		case <-sent.C:
			sent.flush()
		case <-f.stop:
			return
		}
	}
}

// sharedCtx is the context of a lookup shared by several callers: one
// caller going away must not fail it for the others.
func sharedCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// currentVisible reports whether r may see the current state of the rollout
// or incident that fm is a revision of. An update may narrow an audience:
// from then on an org narrowed out finds no revision of the item, not in a
// replay or a resumed stream either. Health cells are never updated. It
// also reports whether the current revision asks for a pseudonym.
func (s *feedSvc) currentVisible(ctx context.Context, fm bus.FeedMsg, r policy.Recipient) (visible, pseudonymous bool, err error) {
	if fm.Stream != bus.FeedRollouts && fm.Stream != bus.FeedIncidents {
		return true, false, nil
	}
	// Every stream an item is fanned out to asks at about the same time:
	// they share one lookup. An answer older than fm (a lookup that began
	// before fm was stored) makes fm the current revision.
	stream := fm.Stream.StreamName()
	v, err, _ := s.a.flight.Do("last "+stream+" "+fm.Subject, func() (any, error) {
		ctx, cancel := sharedCtx(ctx)
		defer cancel()
		return s.a.cfg.Bus.Last(ctx, stream, fm.Subject)
	})
	if errors.Is(err, bus.ErrNotFound) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	m := v.(*bus.StoredMsg)
	if m.Seq <= fm.Seq {
		return true, false, nil // fm is the current revision
	}
	cur, err := decodeEnvelope(m.Data)
	if err != nil {
		return false, false, err
	}
	return policy.Visible(r, cur.Publisher, cur.Audience), cur.Audience.GetPseudonymous(), nil
}
