// Package jsread reads the stored messages of a JetStream stream in order,
// through one ephemeral pull consumer that is created again when it is lost.
//
// nats.go's ordered consumer is not used for this: its Fetch creates a new
// consumer for every batch, and on a cluster the first pull to a consumer
// just created can find no responders, before the consumer's interest has
// reached the server the hub is connected to. Its re-created consumers also
// read every message after the last one delivered, which breaks a
// last-per-subject listing longer than one batch.
package jsread

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options say what to read.
type Options struct {
	// Filter limits the read to these subjects (wildcards allowed); empty
	// reads all of the stream.
	Filter []string
	// From is the stream sequence to start at; 0 starts at the first.
	From uint64
	// LastPerSubject reads only the last message of each subject, in stream
	// order, as stored when the read starts. From and Follow are then not
	// allowed.
	LastPerSubject bool
	// Until is the last stream sequence to read (0: the last one stored
	// when the read starts). Without Follow the read ends there.
	Until uint64
	// Follow keeps reading new messages after the last one stored when the
	// read started, until ctx ends.
	Follow bool
	// Wait is how long one pull waits for messages (default 1 s).
	Wait time.Duration
	// Stall bounds how long the read may make no progress because JetStream
	// does not answer or the consumer keeps being lost (default 20 s). It
	// then returns ErrStalled.
	Stall time.Duration
	// Request bounds each JetStream API request (default 5 s).
	Request time.Duration
}

// Batch is how many messages one pull asks for.
const Batch = 256

// ErrStalled is returned when the read could not go on within Options.Stall.
var ErrStalled = errors.New("jsread: the stream could not be read")

// Read calls fn with the messages of s in stream order, up to the last one
// stored when Read started, or Options.Until (with Follow, on until ctx
// ends). Each message is passed once: a consumer that is lost is created again after the last
// message passed, and a gap in the consumer's sequence (a message lost in
// transit) makes it do the same. An error from fn stops the read and is
// returned as is.
func Read(ctx context.Context, s jetstream.Stream, o Options, fn func(jetstream.Msg, *jetstream.MsgMetadata) error) error {
	if o.Wait <= 0 {
		o.Wait = time.Second
	}
	if o.Stall <= 0 {
		o.Stall = 20 * time.Second
	}
	if o.Request <= 0 {
		o.Request = 5 * time.Second
	}
	if o.LastPerSubject && (o.From != 0 || o.Follow) {
		return errors.New("jsread: LastPerSubject reads neither from a sequence nor follows")
	}
	r := &reader{s: s, o: o, fn: fn}
	if o.LastPerSubject {
		r.seen = map[string]bool{}
	}
	info, err := r.info(ctx)
	if err != nil {
		return err
	}
	r.end = info.State.LastSeq
	if o.Until != 0 {
		r.end = min(r.end, o.Until)
	}
	r.next = max(o.From, 1)
	if !o.Follow && (info.State.Msgs == 0 || r.next > r.end) {
		return nil
	}
	defer r.drop(ctx)
	return r.run(ctx)
}

type reader struct {
	s  jetstream.Stream
	o  Options
	fn func(jetstream.Msg, *jetstream.MsgMetadata) error

	end  uint64          // last stream sequence when the read started
	next uint64          // the stream sequence to start a new consumer at
	seen map[string]bool // subjects passed, for last-per-subject

	cons      jetstream.Consumer
	delivered uint64 // the consumer sequence of the last message received
}

// info reads the stream's info, trying again while JetStream does not answer.
func (r *reader) info(ctx context.Context) (*jetstream.StreamInfo, error) {
	var info *jetstream.StreamInfo
	err := r.retry(ctx, func(ctx context.Context) (err error) {
		info, err = r.s.Info(ctx)
		return err
	})
	return info, err
}

// retry calls f, each call bounded, until it succeeds, fails for good, or
// the stall bound passes.
func (r *reader) retry(ctx context.Context, f func(context.Context) error) error {
	deadline := time.Now().Add(r.o.Stall)
	wait := 50 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, r.o.Request)
		err := f(rctx)
		cancel()
		if err == nil || ctx.Err() != nil || !transient(err) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w within %s: %v", ErrStalled, r.o.Stall, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// transient reports whether err may go away when tried again: JetStream not
// answering (yet), or answering that it cannot serve now.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 || apiErr.Code == 408 || apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled
	}
	return false
}

// open creates the consumer, starting after the last message passed.
func (r *reader) open(ctx context.Context) error {
	r.drop(ctx)
	cfg := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		FilterSubjects:    r.o.Filter,
	}
	if r.o.LastPerSubject {
		// A new consumer takes a new snapshot; the subjects already passed
		// are skipped in it.
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverLastPerSubjectPolicy, 0
		if len(cfg.FilterSubjects) == 0 {
			cfg.FilterSubjects = []string{">"}
		}
	}
	return r.retry(ctx, func(ctx context.Context) error {
		c, err := r.s.CreateConsumer(ctx, cfg)
		if err != nil {
			return err
		}
		r.cons, r.delivered = c, 0
		return nil
	})
}

// drop deletes the consumer, if any, without waiting long: it is ephemeral
// and goes by itself when idle.
func (r *reader) drop(ctx context.Context) {
	if r.cons == nil {
		return
	}
	name := r.cons.CachedInfo().Name
	r.cons = nil
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = r.s.DeleteConsumer(dctx, name)
}

func (r *reader) run(ctx context.Context) error {
	answered := time.Now() // when JetStream last answered a pull usefully
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.cons == nil {
			if err := r.open(ctx); err != nil {
				return err
			}
			if !r.o.Follow && r.cons.CachedInfo().NumPending == 0 {
				return nil // nothing (left) to read
			}
		}
		batch, err := r.cons.Fetch(Batch, jetstream.FetchMaxWait(r.o.Wait))
		n := 0
		if err == nil {
			var done bool
			n, done, err = r.take(batch)
			if done {
				return err
			}
			if err == nil {
				err = batch.Error()
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		empty := err == nil || errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout)
		switch {
		case n > 0 && (empty || errors.Is(err, errGap)):
			answered = time.Now()
			if err != nil {
				r.cons = nil // a message was lost: start again after the last passed
			}
			continue
		case empty && r.o.Follow:
			answered = time.Now()
			continue
		case !empty && !errors.Is(err, errGap) && !transient(err):
			return err
		}
		// Nothing came although the end was not reached, or the pull
		// failed: done if the messages up to the end were removed
		// meanwhile; else start again if the consumer is gone or lost a
		// message; else pull again.
		done, cerr := r.check(ctx)
		if done || cerr != nil {
			return cerr
		}
		if time.Since(answered) > r.o.Stall {
			if err == nil {
				err = errors.New("no messages came")
			}
			return fmt.Errorf("%w within %s: %v", ErrStalled, r.o.Stall, err)
		}
		if !empty {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// check asks JetStream about the consumer after a pull that brought nothing.
// It drops the consumer, to be created again, when JetStream no longer has it
// or it delivered messages that never came. done is true when, reading up to
// the end, nothing is left to read.
func (r *reader) check(ctx context.Context) (done bool, err error) {
	var ci *jetstream.ConsumerInfo
	err = r.retry(ctx, func(ctx context.Context) (err error) {
		ci, err = r.cons.Info(ctx)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return errGone
		}
		return err
	})
	switch {
	case errors.Is(err, errGone), err == nil && ci.Delivered.Consumer != r.delivered:
		r.cons = nil
		return false, nil
	case err != nil:
		return false, err
	}
	return !r.o.Follow && ci.NumPending == 0, nil
}

var (
	// errGap is a gap in the consumer's sequence: a message lost in transit.
	errGap = errors.New("jsread: a message was lost in transit")
	// errGone is a consumer JetStream no longer has.
	errGone = errors.New("jsread: the consumer is gone")
)

// take passes the messages of batch to fn and returns how many came. done
// is true when the read is over: the end was reached (without Follow) or fn
// failed. A gap in the consumer's sequence ends the batch with errGap.
func (r *reader) take(batch jetstream.MessageBatch) (n int, done bool, err error) {
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			return n, true, err
		}
		if md.Sequence.Consumer != r.delivered+1 {
			for range batch.Messages() { // let the fetch end
			}
			return n, false, errGap
		}
		n++
		r.delivered = md.Sequence.Consumer
		if !r.o.Follow && md.Sequence.Stream > r.end {
			return n, true, nil // the end itself was removed
		}
		if r.seen != nil {
			if r.seen[m.Subject()] {
				continue
			}
			r.seen[m.Subject()] = true
		} else {
			r.next = md.Sequence.Stream + 1
		}
		if err := r.fn(m, md); err != nil {
			return n, true, err
		}
		if !r.o.Follow && (md.Sequence.Stream >= r.end || md.NumPending == 0) {
			return n, true, nil
		}
	}
	return n, false, nil
}
