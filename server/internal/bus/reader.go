package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A feed reads each stream through an ephemeral consumer: in memory, one
// replica, no acks. On a cluster that consumer lives on one node, and it
// is lost with that node. nats.go's ordered consumer re-creates it, but it
// notices the loss only after 10 s without heartbeats and then waits up to
// 10 s for each creation request while the cluster elects new leaders, with
// back-off between attempts; a feed then stalled for tens of seconds. The
// reader below does the same job with tighter bounds: heartbeats every
// feedHeartbeat, a missed one confirmed with a consumer info request, each
// creation request bounded by feedCreateTimeout and
// retried at short intervals, for up to FeedRecoverWithin before the feed
// ends (the subscriber then resumes from its cursor elsewhere).

// feedHeartbeat is how often an idle consumer sends a heartbeat; after two
// missed ones the reader asks JetStream whether the consumer is still
// there, and re-creates it if it is not or JetStream does not answer.
const feedHeartbeat = 2 * time.Second

// feedCheck is how long a reader waits for a message before it checks
// whether the connection reconnected meanwhile.
const feedCheck = 5 * time.Second

// feedCreateTimeout bounds one request to create a feed's consumer.
const feedCreateTimeout = 2 * time.Second

// feedInactive is how long a consumer nobody pulls from is kept. A reader
// whose subscriber is slow stops pulling; if its consumer expires meanwhile
// it is simply created again.
const feedInactive = 2 * time.Minute

// FeedRecoverWithin bounds how long a feed tries to re-create a lost
// consumer before it ends with ErrNoAnswer.
var FeedRecoverWithin = 30 * time.Second

// streamReader reads one stream in order from a start sequence, and
// re-creates its consumer from the next sequence when the consumer is lost
// or skips a message.
type streamReader struct {
	b       *Bus
	stream  string
	filters []string
	next    uint64 // the next stream sequence to deliver
	prefix  string
	serial  int

	cons jetstream.Consumer
	it   jetstream.MessagesContext
	dseq uint64 // the last consumer sequence received from cons
	lost error  // why the last consumer was given up
	// reconnects is the NATS connection's reconnect count when the
	// consumer was created or last checked.
	reconnects uint64
	// names of every consumer created, deleted when the feed ends.
	names []string
}

func newStreamReader(b *Bus, stream string, filters []string, start uint64) *streamReader {
	var rb [8]byte
	_, _ = rand.Read(rb[:])
	return &streamReader{b: b, stream: stream, filters: filters, next: start, prefix: "phx_feed_" + hex.EncodeToString(rb[:])}
}

// open creates the consumer (the first time, or again after a loss),
// retrying until it works, ctx ends, or FeedRecoverWithin passes.
func (r *streamReader) open(ctx context.Context) error {
	if r.it != nil {
		r.it.Stop()
		r.it = nil
	}
	deadline := time.Now().Add(FeedRecoverWithin)
	wait := 100 * time.Millisecond
	for {
		err := r.create(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%w: could not read %s for %v: %v", ErrNoAnswer, r.stream, FeedRecoverWithin, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

func (r *streamReader) create(ctx context.Context) error {
	r.serial++
	name := fmt.Sprintf("%s_%d", r.prefix, r.serial)
	cfg := jetstream.ConsumerConfig{
		Name:              name,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: feedInactive,
		Replicas:          1,
		MemoryStorage:     true,
	}
	if len(r.filters) == 1 {
		cfg.FilterSubject = r.filters[0]
	} else {
		cfg.FilterSubjects = r.filters
	}
	// The name is recorded before the request: a creation whose answer is
	// lost may still have happened.
	r.names = append(r.names, name)
	cctx, cancel := context.WithTimeout(ctx, feedCreateTimeout)
	cons, err := r.b.js.CreateOrUpdateConsumer(cctx, r.stream, cfg)
	cancel()
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(feedPull), jetstream.PullHeartbeat(feedHeartbeat), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return err
	}
	r.cons, r.it, r.dseq = cons, it, 0
	r.reconnects = r.b.nc.Stats().Reconnects
	return nil
}

// nextMsg returns the stream's next message, re-creating the consumer as
// often as needed.
func (r *streamReader) nextMsg(ctx context.Context) (jetstream.Msg, *jetstream.MsgMetadata, error) {
	for {
		if r.it == nil {
			start := time.Now()
			if err := r.open(ctx); err != nil {
				if ctx.Err() == nil {
					r.b.feedGaveUp.Add(1)
					r.b.cfg.Logger.Warn("feed gave up re-creating its consumer", "stream", r.stream, "after", time.Since(start), "err", err)
				}
				return nil, nil, err
			}
			took := time.Since(start)
			r.b.feedRecovered.Add(1)
			r.b.feedRecoverNanos.Add(uint64(took))
			r.b.cfg.Logger.Info("feed consumer re-created", "stream", r.stream, "from_seq", r.next, "took", took, "cause", r.lost)
		}
		// Wait at most feedCheck at a time, to look after a reconnect for
		// messages lost on the way at the end of a burst (a gap in the
		// consumer sequence shows only when a later message arrives).
		wctx, cancel := context.WithTimeout(ctx, feedCheck)
		m, err := r.it.Next(jetstream.NextContext(wctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				if rc := r.b.nc.Stats().Reconnects; rc != r.reconnects {
					r.reconnects = rc
					if err := r.caughtUp(ctx); err != nil {
						r.drop(fmt.Errorf("after a reconnect: %w", err))
					}
				}
				continue
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				// Missing heartbeats may only mean a busy hub or server:
				// keep the consumer if JetStream still has it and has
				// sent nothing more than was received.
				if err := r.caughtUp(ctx); err != nil {
					r.drop(fmt.Errorf("no heartbeat: %w", err))
				}
				continue
			}
			// A deleted consumer, a closed iterator: read on from a new
			// consumer.
			r.drop(err)
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, nil, err
		}
		if md.Sequence.Consumer != r.dseq+1 {
			// A message was lost on the way (a reconnect): start over
			// from the last one delivered.
			r.drop(fmt.Errorf("consumer sequence %d after %d", md.Sequence.Consumer, r.dseq))
			continue
		}
		r.dseq = md.Sequence.Consumer
		if md.Sequence.Stream < r.next {
			continue // delivered already, by an earlier consumer
		}
		r.next = md.Sequence.Stream + 1
		return m, md, nil
	}
}

// caughtUp asks JetStream about the current consumer: an error if it does
// not answer, or has delivered messages that never arrived.
func (r *streamReader) caughtUp(ctx context.Context) error {
	ictx, cancel := context.WithTimeout(ctx, feedCreateTimeout)
	defer cancel()
	ci, err := r.cons.Info(ictx)
	if err != nil {
		return err
	}
	if ci.Delivered.Consumer > r.dseq {
		return fmt.Errorf("%d messages delivered, %d received", ci.Delivered.Consumer, r.dseq)
	}
	return nil
}

// drop stops reading from the current consumer, lost for cause.
func (r *streamReader) drop(cause error) {
	r.it.Stop()
	r.it, r.lost = nil, cause
}

// close stops reading and deletes every consumer the reader created.
func (r *streamReader) close(ctx context.Context) {
	if r.it != nil {
		r.it.Stop()
		r.it = nil
	}
	for _, name := range r.names {
		_ = r.b.js.DeleteConsumer(ctx, r.stream, name)
		if ctx.Err() != nil {
			return // out of time: the rest expire by themselves
		}
	}
}

// FeedRecoveries reports how often feeds re-created a lost consumer, the
// time that took in total, and how often a feed gave up.
func (b *Bus) FeedRecoveries() (recovered uint64, took time.Duration, gaveUp uint64) {
	return b.feedRecovered.Load(), time.Duration(b.feedRecoverNanos.Load()), b.feedGaveUp.Load()
}
