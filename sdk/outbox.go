package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Errors of the outbox. Both come as *Error: test them with errors.Is.
var (
	// ErrQueued means the request is durably spooled in the outbox but the
	// hub has not acknowledged it yet: the Client sends it when the hub
	// answers, with the same idempotency keys, also after a restart of the
	// process with the same outbox directory. Do not send it again. The
	// error's Code says why it is not acknowledged yet: CodeUnavailable
	// (the hub is away), CodeDeadlineExceeded or CodeCanceled (the call's
	// context ended first), or the hub's last transient answer.
	ErrQueued = errors.New("spooled in the outbox, not yet acknowledged")
	// ErrOutboxFull means the outbox holds as many entries or bytes as its
	// bounds allow (OutboxMaxEntries, OutboxMaxBytes): nothing of the call
	// was spooled or sent. Its Code is CodeResourceExhausted.
	ErrOutboxFull = errors.New("outbox full")
)

// Default bounds of an outbox.
const (
	DefaultOutboxMaxEntries = 10_000
	DefaultOutboxMaxBytes   = 256 << 20
)

// outboxAttemptTimeout bounds one delivery attempt, so a hub that accepts
// connections but never answers does not stall the outbox.
const outboxAttemptTimeout = 30 * time.Second

// An OutboxOption configures the outbox of WithOutbox.
type OutboxOption func(*outboxOptions) error

type outboxOptions struct {
	dir        string
	maxEntries int
	maxBytes   int64
	onRefused  func(Refusal)
}

// OutboxMaxEntries bounds the number of pending entries (one per
// PublishSignals batch of up to MaxBatch signals, one per other request).
// The default is DefaultOutboxMaxEntries.
func OutboxMaxEntries(n int) OutboxOption {
	return func(o *outboxOptions) error {
		if n < 1 {
			return fmt.Errorf("OutboxMaxEntries: must be ≥ 1, got %d", n)
		}
		o.maxEntries = n
		return nil
	}
}

// OutboxMaxBytes bounds the size of the pending entries on disk. The
// default is DefaultOutboxMaxBytes.
func OutboxMaxBytes(n int64) OutboxOption {
	return func(o *outboxOptions) error {
		if n < 1 {
			return fmt.Errorf("OutboxMaxBytes: must be ≥ 1, got %d", n)
		}
		o.maxBytes = n
		return nil
	}
}

// OutboxOnRefused calls fn for every spooled signal or request the hub
// refused for good when no caller was waiting for the answer any more: the
// call returned ErrQueued, or the entry was spooled by an earlier run of
// the process. fn runs on the outbox's sending goroutine: it should return
// quickly, and must not make spooled calls of the same Client, which would
// wait for that goroutine. Without it, refusals are logged (WithLogger) at level
// warn. A caller that is still waiting gets the refusal as the call's
// result instead, as without an outbox.
func OutboxOnRefused(fn func(Refusal)) OutboxOption {
	return func(o *outboxOptions) error {
		o.onRefused = fn
		return nil
	}
}

// Refusal is a spooled signal or request that the hub refused for good
// (InvalidArgument, PermissionDenied, FailedPrecondition, NotFound,
// AlreadyExists, ...). It has been removed from the outbox: sending it
// again cannot succeed.
type Refusal struct {
	// Method is the Client method that spooled it: "PublishSignals",
	// "AnnounceRollout", "UpdateRollout", "ReportIncident" or
	// "UpdateIncident".
	Method string
	// ID is the idempotency key: the signal_id of a health signal, the
	// request_id of another request.
	ID string
	// Request is what was refused: a *phxv1.HealthSignal for
	// PublishSignals, else the request message (for example a
	// *phxv1.UpdateRolloutRequest).
	Request proto.Message
	// Err is the hub's answer, an *Error.
	Err error
}

// OutboxStats describes a Client's outbox.
type OutboxStats struct {
	// Pending is the number of entries spooled and not yet answered by the
	// hub. PendingBytes is their size on disk.
	Pending      int
	PendingBytes int64
	// Acknowledged counts the entries the hub has taken since the Client
	// was created; Refused counts the signals and requests it refused for
	// good (see OutboxOnRefused).
	Acknowledged uint64
	Refused      uint64
	// Recovered is the number of entries found in the directory when the
	// Client was created: left by an earlier run, they are sent first.
	Recovered int
	// Quarantined lists the damaged files found then, moved to the
	// directory's quarantine subdirectory, with what was wrong with them.
	Quarantined []string
	// HubAway is true after the latest attempts to deliver have all failed
	// (as many as WithRetry's maxAttempts); calls then return ErrQueued
	// as soon as their entries are spooled.
	HubAway bool
	// LastError is the error of the latest failed attempt, nil once an
	// attempt succeeds.
	LastError error
}

// WithOutbox makes the Client write every request that carries an
// idempotency key — PublishSignals batches, AnnounceRollout,
// UpdateRollout, ReportIncident, UpdateIncident — durably to a spool in dir
// before sending it, and remove it only once the hub has answered. A
// process that is killed and started again with the same dir sends what
// was pending, with the same signal ids and request ids, so the hub stores
// each exactly once. Calls without an idempotency key (AddPost, Respond,
// Acknowledge, reads) are not spooled.
//
// A spooled call waits for the hub's answer as long as its context allows
// and the hub is reachable (up to WithRetry's attempts), and then returns
// exactly what it would without an outbox. Otherwise it returns an error
// matching ErrQueued: the request stays spooled and a goroutine of the
// Client sends it, in order, retrying with backoff for as long as the hub
// is away, until Close. When the outbox is full a call fails with
// ErrOutboxFull and nothing of it is spooled.
//
// Requests the hub refuses for good are removed and reported to
// OutboxOnRefused (or to the caller, if it is still waiting); requests it
// answers with Unavailable, ResourceExhausted, Aborted, DeadlineExceeded or
// Unauthenticated (credentials are re-read when their files change) stay
// and are retried. Damaged files found when the Client is created are moved
// to dir/quarantine and listed in OutboxStats. Only one Client may use dir
// at a time.
//
// The hub de-duplicates signal ids for 10 minutes and request ids for 24
// hours by default: an entry that the hub stored but whose answer was lost,
// and that is sent again only after that window, can be stored twice.
func WithOutbox(dir string, opts ...OutboxOption) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("WithOutbox: empty directory")
		}
		oo := &outboxOptions{dir: dir, maxEntries: DefaultOutboxMaxEntries, maxBytes: DefaultOutboxMaxBytes}
		for _, opt := range opts {
			if err := opt(oo); err != nil {
				return fmt.Errorf("WithOutbox: %w", err)
			}
		}
		o.outbox = oo
		return nil
	}
}

// entry is one spooled request.
type entry struct {
	seq  uint64
	kind entryKind
	req  proto.Message
	size int64
	done chan struct{} // closed once settled and removed

	// results holds the settled results of a signals entry, per signal;
	// written by the sender only, read by others once done is closed.
	results []*phxv1.SignalResult

	// Guarded by outbox.mu.
	resp     proto.Message // the hub's answer to a request
	err      error         // the hub refused the whole request
	settled  bool
	waiting  bool // a caller waits for the answer
	canceled bool // withdrawn before it was sent
	// call lists the later entries of the call that spooled e, in order:
	// when the hub refuses e as a whole while its caller waits, they are
	// withdrawn, as PublishSignals stops at a refused batch.
	call []*entry
}

func newEntry(seq uint64, kind entryKind, req proto.Message, size int64, waiting bool) *entry {
	e := &entry{seq: seq, kind: kind, req: req, size: size, waiting: waiting, done: make(chan struct{})}
	if s, ok := req.(*phxv1.PublishSignalsRequest); ok {
		e.results = make([]*phxv1.SignalResult, len(s.GetSignals()))
	}
	return e
}

// outbox is the pending requests of a Client and their spool.
type outbox struct {
	sp  *spool
	opt outboxOptions
	log *slog.Logger

	wake     chan struct{} // poked when entries are added
	closedCh chan struct{}

	mu            sync.Mutex
	queue         []*entry
	bytes         int64
	reserved      int // entries being written
	reservedBytes int64
	nextSeq       uint64
	away          bool
	awayCh        chan struct{} // closed while away
	lastErr       error
	closed        bool
	acknowledged  uint64
	refused       uint64
	recovered     int
	quarantined   []string
}

func openOutbox(o *outboxOptions, log *slog.Logger) (*outbox, error) {
	sp, found, quarantined, err := openSpool(o.dir)
	if err != nil {
		return nil, err
	}
	ob := &outbox{
		sp:          sp,
		opt:         *o,
		log:         log,
		wake:        make(chan struct{}, 1),
		closedCh:    make(chan struct{}),
		awayCh:      make(chan struct{}),
		nextSeq:     1,
		recovered:   len(found),
		quarantined: quarantined,
	}
	for _, f := range found {
		ob.queue = append(ob.queue, newEntry(f.seq, f.kind, f.req, f.size, false))
		ob.bytes += f.size
		ob.nextSeq = max(ob.nextSeq, f.seq+1)
	}
	return ob, nil
}

func (ob *outbox) poke() {
	select {
	case ob.wake <- struct{}{}:
	default:
	}
}

// enqueue spools reqs, all or none, and returns their entries, whose
// caller waits for them.
func (ob *outbox) enqueue(kind entryKind, reqs []proto.Message) ([]*entry, error) {
	data := make([][]byte, len(reqs))
	var total int64
	for i, r := range reqs {
		b, err := encodeEntry(kind, r)
		if err != nil {
			return nil, &Error{Code: CodeInvalidArgument, Message: "outbox: encode request: " + err.Error()}
		}
		data[i] = b
		total += int64(len(b))
	}
	ob.mu.Lock()
	if ob.closed {
		ob.mu.Unlock()
		return nil, &Error{Code: CodeCanceled, Message: "the client is closed"}
	}
	n := len(ob.queue) + ob.reserved
	if n+len(reqs) > ob.opt.maxEntries || ob.bytes+ob.reservedBytes+total > ob.opt.maxBytes {
		ob.mu.Unlock()
		return nil, &Error{
			Code: CodeResourceExhausted,
			Message: fmt.Sprintf("outbox full: %d entries of %d bytes pending, %d more of %d bytes do not fit within %d entries and %d bytes",
				n, ob.bytes+ob.reservedBytes, len(reqs), total, ob.opt.maxEntries, ob.opt.maxBytes),
			kind: ErrOutboxFull,
		}
	}
	first := ob.nextSeq
	ob.nextSeq += uint64(len(reqs))
	ob.reserved += len(reqs)
	ob.reservedBytes += total
	ob.mu.Unlock()

	err := ob.writeAll(first, data)

	ob.mu.Lock()
	ob.reserved -= len(reqs)
	ob.reservedBytes -= total
	if err != nil {
		ob.mu.Unlock()
		return nil, &Error{Code: CodeUnknown, Message: "outbox: " + err.Error()}
	}
	es := make([]*entry, len(reqs))
	for i, r := range reqs {
		es[i] = newEntry(first+uint64(i), kind, r, int64(len(data[i])), true)
		es[i].call = es[i+1:]
	}
	ob.queue = append(ob.queue, es...)
	ob.bytes += total
	ob.mu.Unlock()
	ob.poke()
	return es, nil
}

// writeAll writes the files of consecutive entries from seq first and
// syncs the directory; on error it removes what it wrote.
func (ob *outbox) writeAll(first uint64, data [][]byte) error {
	for i, b := range data {
		if err := ob.sp.write(first+uint64(i), b); err != nil {
			for j := range i {
				ob.sp.remove(first + uint64(j))
			}
			return err
		}
	}
	return ob.sp.sync()
}

// wait waits until es are settled in order, ctx ends, the hub is away or
// the outbox closes. It returns how many of es, from the first, are
// settled, and an ErrQueued error if not all are; the caller no longer
// waits for the others.
func (ob *outbox) wait(ctx context.Context, es []*entry) (int, error) {
	for i, e := range es {
		ob.mu.Lock()
		away := ob.awayCh
		ob.mu.Unlock()
		var why error
		select {
		case <-e.done:
			continue
		case <-ctx.Done():
			why = toError(ctx.Err())
		case <-away:
		case <-ob.closedCh:
			why = &Error{Code: CodeCanceled, Message: "the client is closed"}
		}
		ob.mu.Lock()
		n := i
		for _, e := range es[i:] {
			if !e.settled {
				break
			}
			n++
		}
		for _, e := range es[n:] {
			e.waiting = false
		}
		if why == nil {
			why = ob.lastErr
		}
		ob.mu.Unlock()
		// settled entries are already done: finish sets both at once.
		if n == len(es) {
			return n, nil
		}
		return n, queuedErr(why, len(es)-n)
	}
	return len(es), nil
}

func queuedErr(why error, n int) error {
	e := &Error{Code: CodeUnavailable, kind: ErrQueued}
	msg := "the hub has not answered yet"
	if why != nil {
		w := toError(why).(*Error)
		if w.Code != CodeOK && w.Code != CodeUnknown {
			e.Code = w.Code
		}
		msg = w.Error()
	}
	what := "request"
	if n > 1 {
		what = fmt.Sprintf("%d requests", n)
	}
	e.Message = fmt.Sprintf("%s spooled in the outbox, to be sent when the hub answers (%s)", what, msg)
	return e
}

// head returns the oldest pending entry, dropping withdrawn ones, or nil.
func (ob *outbox) head() *entry {
	for {
		ob.mu.Lock()
		if len(ob.queue) == 0 {
			ob.mu.Unlock()
			return nil
		}
		e := ob.queue[0]
		if !e.canceled {
			ob.mu.Unlock()
			return e
		}
		ob.mu.Unlock()
		ob.finish(e, false, nil, nil)
	}
}

// finish removes the head entry e from the spool and the queue with the
// hub's answer (sent false: withdrawn before it was sent), wakes its
// caller, and returns the refusals to report (those nobody waits for).
func (ob *outbox) finish(e *entry, sent bool, resp proto.Message, err error) []Refusal {
	rmErr := ob.sp.remove(e.seq)
	ob.mu.Lock()
	defer ob.mu.Unlock()
	e.resp, e.err, e.settled = resp, err, true
	if len(ob.queue) > 0 && ob.queue[0] == e {
		ob.queue = ob.queue[1:]
	}
	ob.bytes -= e.size
	if rmErr != nil {
		// It is sent again after a restart; the hub de-duplicates it.
		ob.log.Warn("phx: cannot remove an answered request from the outbox", "err", rmErr)
	}
	close(e.done)
	if !sent {
		return nil
	}
	if err != nil && e.waiting {
		for _, later := range e.call {
			later.canceled = true
		}
	}
	refusals := e.refusals()
	if err == nil {
		ob.acknowledged++
	}
	ob.refused += uint64(len(refusals))
	if e.waiting {
		return nil
	}
	return refusals
}

// refusals lists what the hub refused of a settled entry.
func (e *entry) refusals() []Refusal {
	method := e.kind.method()
	if s, ok := e.req.(*phxv1.PublishSignalsRequest); ok {
		var out []Refusal
		for i, sig := range s.GetSignals() {
			err := e.err
			if err == nil {
				if r := e.results[i]; r != nil && r.GetOutcome() == phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED {
					err = ItemErr(r.GetError())
				}
			}
			if err != nil {
				out = append(out, Refusal{Method: method, ID: sig.GetSignalId(), Request: sig, Err: err})
			}
		}
		return out
	}
	if e.err == nil {
		return nil
	}
	var id string
	if r, ok := e.req.(interface{ GetRequestId() string }); ok {
		id = r.GetRequestId()
	}
	return []Refusal{{Method: method, ID: id, Request: e.req, Err: e.err}}
}

// attempted records the outcome of a delivery attempt: err nil when the
// hub answered, else the error and whether the hub now counts as away.
func (ob *outbox) attempted(err error, away bool) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	ob.lastErr = err
	switch {
	case err == nil && ob.away:
		ob.away = false
		ob.awayCh = make(chan struct{})
	case err != nil && away && !ob.away:
		ob.away = true
		close(ob.awayCh)
	}
}

func (ob *outbox) close() error {
	ob.mu.Lock()
	if ob.closed {
		ob.mu.Unlock()
		return nil
	}
	ob.closed = true
	close(ob.closedCh)
	ob.mu.Unlock()
	return ob.sp.close()
}

func (ob *outbox) stats() OutboxStats {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return OutboxStats{
		Pending:      len(ob.queue),
		PendingBytes: ob.bytes,
		Acknowledged: ob.acknowledged,
		Refused:      ob.refused,
		Recovered:    ob.recovered,
		Quarantined:  append([]string(nil), ob.quarantined...),
		HubAway:      ob.away,
		LastError:    ob.lastErr,
	}
}

// OutboxPending returns the number of spooled entries the hub has not
// answered yet (0 without WithOutbox).
func (c *Client) OutboxPending() int {
	if c.ob == nil {
		return 0
	}
	c.ob.mu.Lock()
	defer c.ob.mu.Unlock()
	return len(c.ob.queue)
}

// OutboxStats returns the state of the outbox (the zero value without
// WithOutbox).
func (c *Client) OutboxStats() OutboxStats {
	if c.ob == nil {
		return OutboxStats{}
	}
	return c.ob.stats()
}

// FlushOutbox waits until every entry spooled before the call has been
// answered by the hub (acknowledged or refused), or until ctx ends or the
// Client is closed. It returns nil without WithOutbox.
func (c *Client) FlushOutbox(ctx context.Context) error {
	if c.ob == nil {
		return nil
	}
	c.ob.mu.Lock()
	q := append([]*entry(nil), c.ob.queue...)
	c.ob.mu.Unlock()
	for _, e := range q {
		select {
		case <-e.done:
		case <-ctx.Done():
			return toError(fmt.Errorf("%d outbox entries pending: %w", c.OutboxPending(), ctx.Err()))
		case <-c.ob.closedCh:
			return &Error{Code: CodeCanceled, Message: "the client is closed"}
		}
	}
	return nil
}

// outboxRetryable reports whether an answer of the hub leaves a spooled
// request worth sending again: it says nothing against the request itself.
func outboxRetryable(c Code) bool {
	switch c {
	case CodeUnavailable, CodeResourceExhausted, CodeAborted, CodeDeadlineExceeded, CodeCanceled, CodeUnauthenticated:
		return true
	}
	return false
}

// runOutbox sends the spooled entries in order until ctx ends.
func (c *Client) runOutbox(ctx context.Context) {
	ob := c.ob
	fails := 0
	for {
		e := ob.head()
		if e == nil {
			select {
			case <-ctx.Done():
				return
			case <-ob.wake:
			}
			continue
		}
		actx, cancel := context.WithTimeout(ctx, outboxAttemptTimeout)
		refusals, err := c.deliver(actx, e)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			fails = 0
			ob.attempted(nil, false)
			c.report(refusals)
			continue
		}
		fails++
		ob.attempted(err, fails >= c.retry.maxAttempts)
		wait := c.retry.backoff(fails)
		c.log.DebugContext(ctx, "phx: outbox delivery failed", "method", e.kind.method(), "attempt", fails, "wait", wait, "err", err)
		if fails == c.retry.maxAttempts {
			c.log.WarnContext(ctx, "phx: hub unreachable, keeping requests in the outbox", "pending", c.OutboxPending(), "err", err)
		}
		if sleep(ctx, wait) != nil {
			return
		}
	}
}

// report passes refusals nobody waits for to the handler, or logs them.
func (c *Client) report(rs []Refusal) {
	for _, r := range rs {
		if c.ob.opt.onRefused != nil {
			c.ob.opt.onRefused(r)
			continue
		}
		c.log.Warn("phx: the hub refused a spooled request; dropped", "method", r.Method, "id", r.ID, "err", r.Err)
	}
}

// deliver sends entry e once. It returns a nil error once the hub has
// answered it for good (e is then finished), else the error that makes it
// worth another attempt.
func (c *Client) deliver(ctx context.Context, e *entry) ([]Refusal, error) {
	var (
		resp proto.Message
		err  error
	)
	switch req := e.req.(type) {
	case *phxv1.PublishSignalsRequest:
		return c.deliverSignals(ctx, e, req)
	case *phxv1.AnnounceRolloutRequest:
		resp, err = c.rollouts.AnnounceRollout(ctx, req)
	case *phxv1.UpdateRolloutRequest:
		resp, err = c.rollouts.UpdateRollout(ctx, req)
	case *phxv1.ReportIncidentRequest:
		resp, err = c.incident.ReportIncident(ctx, req)
	case *phxv1.UpdateIncidentRequest:
		resp, err = c.incident.UpdateIncident(ctx, req)
	default:
		return c.ob.finish(e, true, nil, &Error{Code: CodeInternal, Message: fmt.Sprintf("outbox: cannot send %T", req)}), nil
	}
	if err != nil {
		ee := toError(err).(*Error)
		if outboxRetryable(ee.Code) {
			return nil, ee
		}
		return c.ob.finish(e, true, nil, ee), nil
	}
	if r, ok := resp.(interface{ GetRedactions() []*phxv1.Redaction }); ok {
		c.redacted(e.kind.method(), r.GetRedactions())
	}
	return c.ob.finish(e, true, resp, nil), nil
}

// deliverSignals sends the signals of e not answered for good yet.
func (c *Client) deliverSignals(ctx context.Context, e *entry, req *phxv1.PublishSignalsRequest) ([]Refusal, error) {
	all := req.GetSignals()
	idx := make([]int, 0, len(all))
	for i := range all {
		if e.results[i] == nil {
			idx = append(idx, i)
		}
	}
	send := req
	if len(idx) < len(all) {
		send = &phxv1.PublishSignalsRequest{Signals: make([]*phxv1.HealthSignal, len(idx))}
		for j, i := range idx {
			send.Signals[j] = all[i]
		}
	}
	resp, err := c.health.PublishSignals(ctx, send)
	if err != nil {
		ee := toError(err).(*Error)
		if outboxRetryable(ee.Code) {
			return nil, ee
		}
		return c.ob.finish(e, true, nil, ee), nil
	}
	var again error
	for _, r := range resp.GetResults() {
		j := int(r.GetIndex())
		if j < 0 || j >= len(idx) {
			continue
		}
		if r.GetOutcome() == phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED && outboxRetryable(Code(r.GetError().GetCode())) {
			again = ItemErr(r.GetError())
			continue
		}
		r.Index = uint32(idx[j])
		e.results[idx[j]] = r
	}
	for i, r := range e.results {
		if r == nil && again == nil {
			again = &Error{Code: CodeUnavailable, Message: fmt.Sprintf("the hub did not answer for signal %s", all[i].GetSignalId())}
		}
	}
	if again != nil {
		return nil, again
	}
	return c.ob.finish(e, true, nil, nil), nil
}

// publishSpooled is PublishSignals through the outbox.
func (c *Client) publishSpooled(ctx context.Context, signals []*phxv1.HealthSignal) (*phxv1.PublishSignalsResponse, error) {
	out := &phxv1.PublishSignalsResponse{Results: make([]*phxv1.SignalResult, 0, len(signals))}
	if len(signals) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return out, toError(err)
	}
	var reqs []proto.Message
	for off := 0; off < len(signals); off += MaxBatch {
		reqs = append(reqs, &phxv1.PublishSignalsRequest{Signals: signals[off:min(off+MaxBatch, len(signals))]})
	}
	es, err := c.ob.enqueue(kindSignals, reqs)
	if err != nil {
		return out, err
	}
	n, werr := c.ob.wait(ctx, es)
	for i, e := range es[:n] {
		off := i * MaxBatch
		if e.err != nil {
			// The later batches were withdrawn unsent.
			ee := *e.err.(*Error)
			if off > 0 {
				ee.Message = fmt.Sprintf("%s (signals %d and after not published)", ee.Message, off)
			}
			return out, &ee
		}
		for _, r := range e.results {
			r := proto.Clone(r).(*phxv1.SignalResult)
			r.Index += uint32(off)
			out.Results = append(out.Results, r)
			switch r.GetOutcome() {
			case phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED:
				out.Accepted++
			case phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE:
				out.Duplicates++
			default:
				out.Rejected++
			}
		}
	}
	return out, werr
}

// writeSpooled sends a request with an idempotency key through the outbox.
func writeSpooled[T proto.Message](ctx context.Context, c *Client, kind entryKind, req proto.Message) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, toError(err)
	}
	es, err := c.ob.enqueue(kind, []proto.Message{req})
	if err != nil {
		return zero, err
	}
	if _, err := c.ob.wait(ctx, es); err != nil {
		return zero, err
	}
	if es[0].err != nil {
		return zero, es[0].err
	}
	return es[0].resp.(T), nil
}
