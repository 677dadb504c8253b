package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrClosed is returned by Append once the log has begun to shut down.
var ErrClosed = errors.New("audit log is closed")

// Batching is how a Log stores a batch of records in one round.
type Batching int

// Ways of storing a batch.
const (
	// BatchingAuto picks by the stream: pipelined on a stream of one
	// replica; atomic batches on a replicated one (sequential if the
	// stream does not allow atomic publishing).
	BatchingAuto Batching = iota
	// BatchingPipelined publishes the records of a batch asynchronously,
	// the first expecting the stream's last sequence and every later one
	// the message id of the record before it. A replicated stream checks a
	// message id expectation only once the message is replicated, and takes
	// a mismatch for a failed write (nats-server 2.15 stops the stream), so
	// this is for streams of one replica only.
	BatchingPipelined
	// BatchingAtomic publishes each batch as one JetStream atomic batch
	// (the stream must allow atomic publishing).
	BatchingAtomic
	// BatchingSequential publishes one record at a time, each expecting
	// the stream's last sequence.
	BatchingSequential
)

// Config configures a Log.
type Config struct {
	// Batching says how batches are stored (default BatchingAuto).
	Batching Batching
	// Hub identifies this hub instance in its records (default: host name
	// and a random suffix).
	Hub string
	// QueueSize bounds the records waiting to be stored (default 4096);
	// Append blocks while it is full.
	QueueSize int
	// MaxBatch bounds the records published in one pipelined batch
	// (default 256).
	MaxBatch int
	// AckTimeout bounds the wait for a batch's acknowledgements (default 10s).
	AckTimeout time.Duration
	// FlushTimeout bounds the final flush when Run's context ends
	// (default 5s).
	FlushTimeout time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Hub == "" {
		c.Hub = instanceID()
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 4096
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 256
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 10 * time.Second
	}
	if c.FlushTimeout <= 0 {
		c.FlushTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// instanceID is the host name and four random bytes.
func instanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "hub"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// Log appends events to the audit stream. Append may be called from any
// goroutine; one goroutine, Run, chains and stores the records in order.
//
// Run stores what is queued in batches, each in one round trip, and never
// lets a record be stored anywhere but right after the record its prev
// names, so several Logs (hub replicas) appending to one stream never
// interleave into a broken chain. The first record of a batch expects the
// stream's last sequence, that of the record it chains to. On a stream of
// one replica the batch is pipelined: every later record expects the
// message id (the hash) of the record before it. On a replicated stream the
// batch is one JetStream atomic batch instead, since a replicated stream
// takes a failed message id expectation for a failed write (see Batching).
// When another replica got in first, the batch (or its rest) is refused,
// and Run reads the stream's last record again and chains what was not
// stored after it.
//
// Safety comes before liveness: while JetStream cannot be reached records
// wait in the queue, and Append blocks once it is full. If an
// acknowledgement is lost, Run takes the records for stored only if the
// stream's last record is one of them; otherwise it chains them again,
// which may record an event twice but never breaks the chain.
type Log struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
	log    *slog.Logger

	q chan pending

	// mu makes sending to q and closing exclusive: Append holds it for
	// reading while it sends, shutdown takes it to set closed.
	mu      sync.RWMutex
	closed  bool
	closing chan struct{} // closed when shutdown begins
	once    sync.Once

	started atomic.Bool
	done    chan struct{} // closed when Run returns
	stored  atomic.Uint64

	// Owned by Run.
	mode   Batching // how batches are stored: never BatchingAuto
	tail   tail
	unsure []string // hashes of records of a failed batch that may be stored
}

// pending is an event waiting to be stored, with the time it was seen.
type pending struct {
	ev Event
	at time.Time
}

// tail is the last record of the stream, which the next record chains to.
type tail struct {
	known  bool
	seq    uint64 // stream sequence the next publish expects to be last
	n      uint64 // n of the last record (0: none)
	digest string // SHA-256 of the last record's stored bytes ("" for none)
	hash   string // the last record's hash, its Nats-Msg-Id
}

// New returns a Log appending to stream (which must hold Subject) through
// js. Run must be running for records to be stored.
func New(js jetstream.JetStream, stream jetstream.Stream, cfg Config) *Log {
	cfg.defaults()
	return &Log{
		js:      js,
		stream:  stream,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "audit"),
		q:       make(chan pending, cfg.QueueSize),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Hub returns the id this hub instance writes into its records.
func (l *Log) Hub() string { return l.cfg.Hub }

// Depth returns how many records wait to be stored.
func (l *Log) Depth() int { return len(l.q) }

// Stored returns how many records this Log has stored since it started.
func (l *Log) Stored() uint64 { return l.stored.Load() }

// Append queues ev to be stored, stamped with the current time. It blocks
// while the queue is full (the hub slows down rather than forget), and
// returns ErrClosed, without blocking, once shutdown has begun. It takes no
// context on purpose: the audit record of a call must not be lost because
// the caller went away.
func (l *Log) Append(ev Event) error {
	p := pending{ev: ev, at: l.cfg.Now().UTC()}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	select {
	case l.q <- p:
		return nil
	default:
	}
	select {
	case l.q <- p:
		return nil
	case <-l.closing:
		return ErrClosed
	}
}

// beginClose stops Append from taking records: after it returns nothing more
// is sent to the queue.
func (l *Log) beginClose() {
	l.once.Do(func() { close(l.closing) })
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// Close stops taking records and waits until Run has stored what was queued
// and returned, or until ctx ends. It is the flush of a graceful shutdown,
// made before the NATS connection closes.
func (l *Log) Close(ctx context.Context) error {
	l.beginClose()
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit: flush: %w (%d records waiting)", ctx.Err(), len(l.q))
	}
}

// Run stores queued records until ctx ends or Close is called, then stores
// what is still queued (for at most FlushTimeout) and returns.
func (l *Log) Run(ctx context.Context) error {
	if l.started.Swap(true) {
		return errors.New("audit: Run called twice")
	}
	defer close(l.done)
	var (
		batch    []pending
		failures int
	)
	for {
		if len(batch) == 0 {
			select {
			case p := <-l.q:
				batch = append(batch, p)
			case <-l.closing:
				return l.flush(ctx, batch)
			case <-ctx.Done():
				return l.flush(ctx, batch)
			}
		}
		batch = l.fill(batch)
		n, err := l.publish(ctx, batch)
		batch = batch[n:]
		if err == nil {
			failures = 0
			continue
		}
		if isConflict(err) {
			// Another hub appended first: chain after its records at once.
			l.log.Debug("audit chain moved on; chaining after the new last record", "err", err)
			continue
		}
		failures++
		l.log.Warn("audit records not stored yet; retrying", "waiting", len(batch)+len(l.q), "err", err)
		select {
		case <-time.After(backoff(failures)):
		case <-l.closing:
			return l.flush(ctx, batch)
		case <-ctx.Done():
			return l.flush(ctx, batch)
		}
	}
}

// fill tops batch up from the queue without waiting, to MaxBatch.
func (l *Log) fill(batch []pending) []pending {
	for len(batch) < l.cfg.MaxBatch {
		select {
		case p := <-l.q:
			batch = append(batch, p)
		default:
			return batch
		}
	}
	return batch
}

// flush stores batch and everything still queued, for at most FlushTimeout.
func (l *Log) flush(ctx context.Context, batch []pending) error {
	l.beginClose()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.FlushTimeout)
	defer cancel()
	failures := 0
	for {
		batch = l.fill(batch)
		if len(batch) == 0 {
			return nil
		}
		n, err := l.publish(ctx, batch)
		batch = batch[n:]
		if err == nil || isConflict(err) {
			continue
		}
		failures++
		select {
		case <-time.After(backoff(failures)):
		case <-ctx.Done():
			lost := len(batch) + len(l.q)
			l.log.Error("audit records lost at shutdown", "records", lost, "err", err)
			return fmt.Errorf("audit: %d records not stored at shutdown: %w", lost, err)
		}
	}
}

func backoff(failures int) time.Duration {
	d := 50 * time.Millisecond << min(failures-1, 6)
	return min(d, 2*time.Second)
}

// errUnknownOutcome: an acknowledgement did not come in time.
var errUnknownOutcome = errors.New("no acknowledgement in time")

// isConflict reports whether err says another writer appended first.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant ||
		apiErr.ErrorCode == errCodeWrongLastMsgID)
}

// errCodeWrongLastMsgID is JetStream's JSStreamWrongLastMsgIDErrF.
const errCodeWrongLastMsgID jetstream.ErrorCode = 10070

// publish chains batch after the stream's last record and stores it in one
// round. It returns how many records of batch, from the start, are now
// stored.
func (l *Log) publish(ctx context.Context, batch []pending) (int, error) {
	if !l.tail.known {
		if err := l.readTail(ctx); err != nil {
			return 0, fmt.Errorf("read the stream's last record: %w", err)
		}
		// Records of the last batch whose acknowledgements were lost may be
		// stored after all (batch starts with them): if the stream's last
		// record is one of them, it and the ones before it are stored.
		for i, h := range l.unsure {
			if h == l.tail.hash {
				l.unsure = nil
				l.stored.Add(uint64(i + 1))
				return i + 1, nil
			}
		}
		l.unsure = nil
	}
	if l.mode == BatchingSequential {
		batch = batch[:1]
	}
	recs, err := l.chain(batch)
	if err != nil {
		return 0, err
	}
	var n int
	if l.mode == BatchingAtomic {
		n, err = l.storeAtomic(ctx, recs)
	} else {
		n, err = l.storePipelined(ctx, recs)
	}
	if n > 0 {
		l.tail = recs[n-1].tail
		l.stored.Add(uint64(n))
	}
	if err == nil && n < len(recs) {
		err = errUnknownOutcome
	}
	if err != nil {
		// Read the stream's last record again before the next attempt, and
		// remember the records sent whose outcome is unknown.
		l.tail.known = false
		l.unsure = nil
		if !isConflict(err) {
			for _, r := range recs[n:] {
				l.unsure = append(l.unsure, r.hash)
			}
		}
	}
	return n, err
}

// sealed is a record ready to store: its bytes, and the chain's tail once
// it is stored.
type sealed struct {
	data []byte
	tail
}

// chain seals batch as the records that follow the stream's last one.
func (l *Log) chain(batch []pending) ([]sealed, error) {
	recs := make([]sealed, len(batch))
	prev := l.tail
	for i, p := range batch {
		r := &Record{N: prev.n + 1, Time: p.at, Hub: l.cfg.Hub, Event: p.ev, Prev: prev.digest}
		data, err := seal(r)
		if err != nil {
			return nil, fmt.Errorf("encode: %w", err)
		}
		prev = tail{known: true, n: r.N, digest: digest(data), hash: r.Hash}
		recs[i] = sealed{data: data, tail: prev}
	}
	return recs, nil
}

// storePipelined publishes recs asynchronously, pipelined: the first
// expects the stream's last sequence, every later one the previous record's
// message id. JetStream stores a record only if the one before it is the
// stream's last, so the stored records are a prefix of recs: up to the last
// one acknowledged. It returns how many are stored.
func (l *Log) storePipelined(ctx context.Context, recs []sealed) (int, error) {
	futs := make([]jetstream.PubAckFuture, 0, len(recs))
	var sendErr error
	for i, r := range recs {
		opts := []jetstream.PublishOpt{jetstream.WithMsgID(r.hash), jetstream.WithStallWait(l.cfg.AckTimeout)}
		if i == 0 {
			opts = append(opts, jetstream.WithExpectLastSequence(l.tail.seq))
		} else {
			opts = append(opts, jetstream.WithExpectLastMsgID(recs[i-1].hash))
		}
		f, err := l.js.PublishMsgAsync(&nats.Msg{Subject: Subject, Data: r.data}, opts...)
		if err != nil {
			sendErr = err
			break
		}
		futs = append(futs, f)
	}
	timer := time.NewTimer(l.cfg.AckTimeout)
	defer timer.Stop()
	errs := make([]error, len(futs))
	lastOK := -1
wait:
	for i, f := range futs {
		select {
		case ack := <-f.Ok():
			lastOK = i
			recs[i].seq = ack.Sequence
		case errs[i] = <-f.Err():
		case <-timer.C:
			errs[i] = errUnknownOutcome
			break wait
		case <-ctx.Done():
			errs[i] = ctx.Err()
			break wait
		}
	}
	for i := 0; i < lastOK; i++ {
		if isConflict(errs[i]) {
			// JetStream's expectations make this impossible; say so loudly.
			l.log.Error("audit record stored after a refused one", "refused", i, "stored", lastOK, "err", errs[i])
		}
	}
	n := lastOK + 1
	switch {
	case n < len(errs) && errs[n] != nil:
		return n, errs[n]
	case n < len(recs) && sendErr != nil:
		return n, sendErr
	}
	return n, nil
}

// Headers of JetStream's atomic batch publish (nats-server 2.12 and later).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// errCodeBatchHasDuplicate is JetStream's
// JSAtomicPublishContainsDuplicateMessageErr: a record of the batch is
// stored already.
const errCodeBatchHasDuplicate jetstream.ErrorCode = 10201

// storeAtomic publishes recs as one JetStream atomic batch: all of them are
// stored, right after the stream's last record, or none is. Only the first
// carries an expectation (the stream's last sequence); the batch makes the
// rest follow it with nothing in between. A replicated stream checks that
// expectation before it replicates anything, so a refusal costs nothing.
// It returns how many are stored: all or none.
func (l *Log) storeAtomic(ctx context.Context, recs []sealed) (int, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	batchID := hex.EncodeToString(id)
	nc := l.js.Conn()
	for i, r := range recs {
		m := nats.NewMsg(Subject)
		m.Data = r.data
		m.Header.Set(hdrBatchID, batchID)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		m.Header.Set(jetstream.MsgIDHeader, r.hash)
		if i == 0 {
			m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(l.tail.seq, 10))
		}
		if i < len(recs)-1 {
			if err := nc.PublishMsg(m); err != nil {
				return 0, err
			}
			continue
		}
		m.Header.Set(hdrBatchCommit, "1")
		rctx, cancel := context.WithTimeout(ctx, l.cfg.AckTimeout)
		resp, err := nc.RequestMsgWithContext(rctx, m)
		cancel()
		if err != nil {
			return 0, errors.Join(errUnknownOutcome, err)
		}
		var ack struct {
			Error *jetstream.APIError `json:"error"`
			Seq   uint64              `json:"seq"`
			Batch string              `json:"batch"`
			Count int                 `json:"count"`
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return 0, errors.Join(errUnknownOutcome, fmt.Errorf("batch acknowledgement: %w", err))
		}
		switch {
		case ack.Error != nil && ack.Error.ErrorCode == errCodeBatchHasDuplicate:
			// Stored by an earlier attempt whose answer was lost.
			return 0, errors.Join(errUnknownOutcome, ack.Error)
		case ack.Error != nil:
			return 0, ack.Error
		case ack.Batch != batchID || ack.Count != len(recs) || ack.Seq < uint64(len(recs)):
			return 0, errors.Join(errUnknownOutcome, fmt.Errorf("unexpected batch acknowledgement %s", resp.Data))
		}
		for j := range recs {
			recs[j].seq = ack.Seq - uint64(len(recs)-1-j)
		}
	}
	return len(recs), nil
}

// readTail reads the stream's last record: the next record chains to it.
//
// If the stream is empty, the chain starts afresh after the stream's last
// sequence, numbered from that sequence plus one, so that a stream emptied
// by age or by hand shows as a chain starting at n > 1. If the newest
// messages of the stream were deleted, n skips one number for each of them,
// so the gap shows in the chain.
func (l *Log) readTail(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		info, err := l.stream.Info(ctx)
		if err != nil {
			return err
		}
		l.mode = l.cfg.Batching
		if l.mode == BatchingAuto {
			switch {
			case info.Config.Replicas <= 1:
				l.mode = BatchingPipelined
			case info.Config.AllowAtomicPublish:
				l.mode = BatchingAtomic
			default:
				l.mode = BatchingSequential
			}
		}
		st := info.State
		if st.Msgs == 0 {
			if st.LastSeq > 0 {
				l.log.Warn("audit stream is empty; a new chain starts", "after_seq", st.LastSeq)
			}
			l.tail = tail{known: true, seq: st.LastSeq, n: st.LastSeq}
			return nil
		}
		m, err := lastMsg(ctx, l.stream, info.Config.Subjects)
		if errors.Is(err, jetstream.ErrMsgNotFound) && attempt < 10 {
			continue // emptied meanwhile
		}
		if err != nil {
			return err
		}
		last := m.Sequence
		if st.LastSeq > m.Sequence {
			// Deleted after the last message, or appended meanwhile?
			if _, err := l.stream.GetMsg(ctx, st.LastSeq); err == nil && attempt < 10 {
				continue
			} else if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return err
			}
			l.log.Warn("the newest audit records were deleted", "last_stored_seq", m.Sequence, "last_seq", st.LastSeq)
			last = st.LastSeq
		} else if st.LastSeq < m.Sequence {
			last = m.Sequence // appended between the two reads
		}
		t := tail{known: true, seq: last, digest: digest(m.Data), n: last}
		if r, err := Parse(m.Data); err == nil {
			t.n, t.hash = r.N+(last-m.Sequence), r.Hash
		} else {
			l.log.Error("the last message of the audit stream is not a record; chaining to it", "seq", m.Sequence, "err", err)
		}
		l.tail = t
		return nil
	}
}

// lastMsg returns the stream's last message: the newest of the last messages
// of its subjects.
func lastMsg(ctx context.Context, s jetstream.Stream, subjects []string) (*jetstream.RawStreamMsg, error) {
	var last *jetstream.RawStreamMsg
	for _, subj := range subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if last == nil || m.Sequence > last.Sequence {
			last = m
		}
	}
	if last == nil {
		return nil, jetstream.ErrMsgNotFound
	}
	return last, nil
}
