// Package bus is the hub's use of NATS JetStream: the streams and subjects of
// DESIGN.md section 7, batched asynchronous publishing with idempotency keys,
// compare-and-set publishing of versioned items, and the merged feed that
// Subscribe reads with its cursors.
//
// Subjects:
//
//	phx.v1.health.<publisher>.<product>      PHX_HEALTH     (short retention)
//	phx.v1.rollout.<publisher>.<rollout-id>  PHX_ROLLOUTS   (every revision)
//	phx.v1.incident.<reporter>.<incident-id> PHX_INCIDENTS  (every revision)
//	phx.v1.advisory.<publisher>.<id>         PHX_ADVISORIES
//	phx.v1.receipt.>                         PHX_RECEIPTS
//	phx.v1.audit.>                           PHX_AUDIT
//
// The current state of a rollout or incident is the last message on its
// subject; an update is published with the expected last subject sequence, so
// the compare-and-set and the fan-out are one atomic write.
package bus

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phx-exchange/phx/server/internal/jsread"
)

// Stream names.
const (
	StreamHealth     = "PHX_HEALTH"
	StreamRollouts   = "PHX_ROLLOUTS"
	StreamIncidents  = "PHX_INCIDENTS"
	StreamAdvisories = "PHX_ADVISORIES"
	StreamReceipts   = "PHX_RECEIPTS"
	StreamAudit      = "PHX_AUDIT"
)

// Header names the hub sets on stored items.
const (
	HeaderRequestID = "Phx-Request-Id"
	HeaderPublisher = "Phx-Publisher"
)

// Errors.
var (
	// ErrNotFound: no item with that key.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the compare-and-set expectation did not hold.
	ErrConflict = errors.New("conflict: the item changed since it was read")
	// ErrDuplicateInProcess: a message with the same idempotency key is
	// being stored at this moment (a clustered JetStream says so instead of
	// acknowledging a duplicate).
	ErrDuplicateInProcess = errors.New("a write with the same idempotency key is in progress; retry")
	// ErrNoAnswer: JetStream did not answer a request within RequestTimeout
	// (a cluster electing a new leader drops what it cannot serve); retry.
	ErrNoAnswer = errors.New("JetStream did not answer in time")
)

// RequestTimeout bounds each JetStream request made for a call — a read, a
// stream's state, a publish's acknowledgement — whatever the call's own
// deadline. A cluster that loses a node drops the requests its lost stream
// leaders would have answered: they are never answered, even once a new
// leader is elected. Without the bound such a request waits as long as the
// call allows, which for a Subscribe stream is hours; with it the call fails
// with ErrNoAnswer and the client retries, reaching the new leader.
var RequestTimeout = 5 * time.Second

// bounded returns ctx limited to RequestTimeout for one request.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, RequestTimeout)
}

// unanswered turns err into ErrNoAnswer when the request's bound rctx ran
// out while the caller's ctx did not.
func unanswered(ctx, rctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && rctx.Err() != nil {
		return fmt.Errorf("%w (%v): %v", ErrNoAnswer, RequestTimeout, err)
	}
	return err
}

// errCodeDuplicateInProcess is JetStream's "duplicate message id is in
// process" (JSStreamDuplicateMessageConflictErr).
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// Config sets retention and replication.
type Config struct {
	// Replicas per stream: 1 embedded, 3 on an external cluster.
	Replicas int
	// HealthMaxAge is how long health cells are kept (default 7 days).
	HealthMaxAge time.Duration
	// HealthDuplicateWindow is how long a signal_id is remembered for
	// de-duplication (default 10 minutes).
	HealthDuplicateWindow time.Duration
	// ItemDuplicateWindow is how long request ids of rollouts and incidents
	// are remembered (default 24 hours).
	ItemDuplicateWindow time.Duration
	// MaxPending bounds in-flight asynchronous publishes (default 4096).
	MaxPending int
	// Logger receives what the bus recovers from on its own (default:
	// discarded).
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.HealthMaxAge <= 0 {
		c.HealthMaxAge = 7 * 24 * time.Hour
	}
	if c.HealthDuplicateWindow <= 0 {
		c.HealthDuplicateWindow = 10 * time.Minute
	}
	if c.HealthDuplicateWindow > c.HealthMaxAge {
		// JetStream refuses a duplicate window longer than the stream's
		// max age; a cell cannot be a duplicate of one no longer kept.
		c.HealthDuplicateWindow = c.HealthMaxAge
	}
	if c.ItemDuplicateWindow <= 0 {
		c.ItemDuplicateWindow = 24 * time.Hour
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Bus is the hub's handle on JetStream.
type Bus struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     Config
	streams map[string]jetstream.Stream

	// Feed consumer recoveries (see streamReader).
	feedRecovered, feedRecoverNanos, feedGaveUp atomic.Uint64
}

// New ensures the streams exist with the configured settings (created or
// updated idempotently) and returns a Bus.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Bus, error) {
	cfg.defaults()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxPending))
	if err != nil {
		return nil, err
	}
	b := &Bus{nc: nc, js: js, cfg: cfg, streams: map[string]jetstream.Stream{}}
	for _, sc := range b.streamConfigs() {
		s, err := createStream(ctx, js, sc)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", sc.Name, err)
		}
		b.streams[sc.Name] = s
	}
	return b, nil
}

func (b *Bus) streamConfigs() []jetstream.StreamConfig {
	base := func(name, subj, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subj},
			Storage:     jetstream.FileStorage,
			Replicas:    b.cfg.Replicas,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Duplicates:  b.cfg.ItemDuplicateWindow,
			// No direct get: current state is read with wildcard last_by_subj
			// requests, which only the JSON API form supports.
		}
	}
	health := base(StreamHealth, "phx.v1.health.>", "phx health cells")
	health.MaxAge = b.cfg.HealthMaxAge
	health.Duplicates = b.cfg.HealthDuplicateWindow
	// The audit log stores its hash-chained records in atomic batches on a
	// replicated stream (package audit).
	audit := base(StreamAudit, "phx.v1.audit.>", "phx audit log")
	audit.AllowAtomicPublish = true
	return []jetstream.StreamConfig{
		health,
		base(StreamRollouts, "phx.v1.rollout.>", "phx rollout revisions"),
		base(StreamIncidents, "phx.v1.incident.>", "phx incident revisions"),
		base(StreamAdvisories, "phx.v1.advisory.>", "phx hub advisories"),
		base(StreamReceipts, "phx.v1.receipt.>", "phx delivery receipts"),
		audit,
	}
}

// JetStream exposes the JetStream context (for tests and tools).
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Stream returns a stream handle by name.
func (b *Bus) Stream(name string) jetstream.Stream { return b.streams[name] }

// Message is one item to publish.
type Message struct {
	Subject string
	// MsgID is the idempotency key (Nats-Msg-Id).
	MsgID  string
	Data   []byte
	Header nats.Header
}

// PubResult is the outcome of publishing one Message.
type PubResult struct {
	// Seq is the stream sequence of the stored item (of the original one for
	// a duplicate).
	Seq       uint64
	Duplicate bool
	Err       error
}

// PublishBatch publishes messages asynchronously with a bounded window and
// waits for every acknowledgement, so every accepted item is stored when it
// returns. Results are in input order.
func (b *Bus) PublishBatch(ctx context.Context, msgs []Message) []PubResult {
	p := b.NewBatch(len(msgs))
	for _, m := range msgs {
		p.Add(m)
	}
	return p.Wait(ctx)
}

// Batch publishes messages asynchronously as they are added, so JetStream
// stores the first while the caller prepares the next, and then waits for
// every acknowledgement. It is not safe for concurrent use.
type Batch struct {
	b    *Bus
	futs []jetstream.PubAckFuture
	res  []PubResult
}

// NewBatch starts a batch of about n messages.
func (b *Bus) NewBatch(n int) *Batch {
	return &Batch{b: b, futs: make([]jetstream.PubAckFuture, 0, n), res: make([]PubResult, 0, n)}
}

// Add publishes m; its result is at the index of the Add call in Wait's
// results.
func (p *Batch) Add(m Message) {
	nm := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header}
	opts := make([]jetstream.PublishOpt, 0, 2)
	if m.MsgID != "" {
		opts = append(opts, jetstream.WithMsgID(m.MsgID))
	}
	opts = append(opts, jetstream.WithStallWait(5*time.Second))
	f, err := p.b.js.PublishMsgAsync(nm, opts...)
	p.futs = append(p.futs, f)
	p.res = append(p.res, PubResult{Err: err})
}

// Wait waits for the acknowledgement of every message added, at most
// RequestTimeout, and returns the results in the order they were added.
func (p *Batch) Wait(ctx context.Context) []PubResult {
	rctx, cancel := bounded(ctx)
	defer cancel()
	for i, f := range p.futs {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			p.res[i] = PubResult{Seq: ack.Sequence, Duplicate: ack.Duplicate}
		case err := <-f.Err():
			p.res[i].Err = err
		case <-rctx.Done():
			// An answer that came in meanwhile still counts.
			select {
			case ack := <-f.Ok():
				p.res[i] = PubResult{Seq: ack.Sequence, Duplicate: ack.Duplicate}
			case err := <-f.Err():
				p.res[i].Err = err
			default:
				p.res[i].Err = unanswered(ctx, rctx, rctx.Err())
			}
		}
	}
	return p.res
}

// PublishExpect publishes one message with a compare-and-set expectation:
// the last message on expectSubject (which may hold wildcards) must have
// stream sequence expectSeq (0: no message yet). It returns ErrConflict when
// the expectation fails. Note that a clustered JetStream checks the message
// id first: a duplicate id is acknowledged as a duplicate (or refused with
// ErrDuplicateInProcess) whatever the expectation.
func (b *Bus) PublishExpect(ctx context.Context, m Message, expectSubject string, expectSeq uint64) (PubResult, error) {
	nm := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header}
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequenceForSubject(expectSeq, expectSubject)}
	if m.MsgID != "" {
		opts = append(opts, jetstream.WithMsgID(m.MsgID))
	}
	rctx, cancel := bounded(ctx)
	defer cancel()
	ack, err := b.js.PublishMsg(rctx, nm, opts...)
	if err != nil {
		err = unanswered(ctx, rctx, err)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return PubResult{}, ErrConflict
		}
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeDuplicateInProcess {
			return PubResult{}, ErrDuplicateInProcess
		}
		return PubResult{}, err
	}
	return PubResult{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// StoredMsg is a message read back from a stream.
type StoredMsg struct {
	Subject string
	Seq     uint64
	Time    time.Time
	Header  nats.Header
	Data    []byte
}

// Last returns the last message on subject (wildcards allowed) of a stream.
func (b *Bus) Last(ctx context.Context, stream, subject string) (*StoredMsg, error) {
	rctx, cancel := bounded(ctx)
	defer cancel()
	m, err := b.streams[stream].GetLastMsgForSubject(rctx, subject)
	if err != nil {
		err = unanswered(ctx, rctx, err)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	return &StoredMsg{Subject: m.Subject, Seq: m.Sequence, Time: m.Time, Header: m.Header, Data: m.Data}, nil
}

// Get returns the message with stream sequence seq.
func (b *Bus) Get(ctx context.Context, stream string, seq uint64) (*StoredMsg, error) {
	rctx, cancel := bounded(ctx)
	defer cancel()
	m, err := b.streams[stream].GetMsg(rctx, seq)
	if err != nil {
		err = unanswered(ctx, rctx, err)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	return &StoredMsg{Subject: m.Subject, Seq: m.Sequence, Time: m.Time, Header: m.Header, Data: m.Data}, nil
}

// NextForSubject returns the first message at or after seq on subject
// (wildcards allowed), or ErrNotFound.
func (b *Bus) NextForSubject(ctx context.Context, stream, subject string, seq uint64) (*StoredMsg, error) {
	rctx, cancel := bounded(ctx)
	defer cancel()
	m, err := b.streams[stream].GetMsg(rctx, seq, jetstream.WithGetMsgSubject(subject))
	if err != nil {
		err = unanswered(ctx, rctx, err)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	return &StoredMsg{Subject: m.Subject, Seq: m.Sequence, Time: m.Time, Header: m.Header, Data: m.Data}, nil
}

// LastPerSubject calls fn with the last message of every subject matching
// filter, in stream order, from a snapshot taken at the start. Should the
// read have to start again (its consumer lost with a NATS node), a subject
// already passed is not passed again.
func (b *Bus) LastPerSubject(ctx context.Context, stream, filter string, fn func(*StoredMsg) error) error {
	err := jsread.Read(ctx, b.streams[stream], jsread.Options{Filter: []string{filter}, LastPerSubject: true, Stall: RequestTimeout, Request: RequestTimeout},
		func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
			return fn(&StoredMsg{Subject: m.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp, Header: m.Headers(), Data: m.Data()})
		})
	if errors.Is(err, jsread.ErrStalled) {
		return fmt.Errorf("%w: %v", ErrNoAnswer, err)
	}
	return err
}

// SecretsBucket is the KV bucket of the hub's shared secrets, so every hub
// replica derives the same pseudonyms.
const SecretsBucket = "phx_secrets"

// Secret returns the hub-wide secret called name, creating a random 32-byte
// one on first use. Concurrent first uses across replicas agree on one value.
func (b *Bus) Secret(ctx context.Context, name string) ([]byte, error) {
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: SecretsBucket, Description: "phx hub secrets"})
	if err != nil {
		return nil, fmt.Errorf("secrets bucket: %w", err)
	}
	// A bucket just created on a cluster may not have a leader yet.
	return whileStarting(ctx, func() ([]byte, error) { return secret(ctx, kv, name) })
}

func secret(ctx context.Context, kv jetstream.KeyValue, name string) ([]byte, error) {
	if e, err := kv.Get(ctx, name); err == nil {
		return e.Value(), nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, err
	}
	v := make([]byte, 32)
	if _, err := rand.Read(v); err != nil {
		return nil, err
	}
	if _, err := kv.Create(ctx, name, v); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			e, err := kv.Get(ctx, name)
			if err != nil {
				return nil, err
			}
			return e.Value(), nil
		}
		return nil, err
	}
	return v, nil
}

// createStream creates or updates a stream, waiting for JetStream while a
// cluster that has just started has no meta leader yet (no responders,
// time-outs), for at most StartupWait or until ctx ends.
func createStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	return whileStarting(ctx, func() (jetstream.Stream, error) { return js.CreateOrUpdateStream(ctx, sc) })
}

// KeyValue creates or updates a KV bucket with the hub's replicas, waiting
// like New while a new cluster elects its leaders.
func (b *Bus) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas, cfg.Storage = b.cfg.Replicas, jetstream.FileStorage
	return whileStarting(ctx, func() (jetstream.KeyValue, error) { return b.js.CreateOrUpdateKeyValue(ctx, cfg) })
}

// whileStarting retries op while JetStream answers as a cluster that has
// just started does (no responders, time-outs), for at most StartupWait or
// until ctx ends.
func whileStarting[T any](ctx context.Context, op func() (T, error)) (T, error) {
	deadline := time.Now().Add(StartupWait)
	backoff := 100 * time.Millisecond
	for {
		s, err := op()
		transient := errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
			errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
		if err == nil || !transient || time.Now().After(deadline) || ctx.Err() != nil {
			return s, err
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// StartupWait bounds how long New waits for JetStream to become available.
var StartupWait = 30 * time.Second
