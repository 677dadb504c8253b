package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phx-exchange/phx/server/internal/jsread"
)

// Entry is one message of the audit stream.
type Entry struct {
	// Seq is its stream sequence.
	Seq uint64
	// Data is the stored bytes.
	Data []byte
	// Record is the decoded record, nil when Data is not one.
	Record *Record
	// Invalid says why Data is not a record.
	Invalid string
}

// Scan calls fn with the messages of the audit stream in order, from stream
// sequence from (0: the first), up to the last message stored when Scan
// started; with follow, it then waits for new ones until ctx ends. It reads
// through one consumer, a batch at a time, so a long stream is never held in
// memory. An error from fn stops it.
func Scan(ctx context.Context, s jetstream.Stream, from uint64, follow bool, fn func(Entry) error) error {
	return scan(ctx, s, jsread.Options{From: from, Follow: follow}, fn)
}

// Tail is Scan from the last messages of the stream: the newest last of
// those stored when it started.
func Tail(ctx context.Context, s jetstream.Stream, last uint64, follow bool, fn func(Entry) error) error {
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	from := info.State.FirstSeq
	if end := info.State.LastSeq; end >= last && end-last+1 > from {
		from = end - last + 1
	}
	// Until: the records written since Info, this call's own among them,
	// are not part of the last ones asked for.
	return scan(ctx, s, jsread.Options{From: from, Until: info.State.LastSeq, Follow: follow}, fn)
}

func scan(ctx context.Context, s jetstream.Stream, o jsread.Options, fn func(Entry) error) error {
	return jsread.Read(ctx, s, o, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
		e := Entry{Seq: md.Sequence.Stream, Data: m.Data()}
		if r, err := Parse(e.Data); err != nil {
			e.Invalid = "not an audit record: " + err.Error()
		} else {
			e.Record = r
		}
		return fn(e)
	})
}

// Progress is how far Verify has come.
type Progress struct {
	// Checked is how many messages were checked.
	Checked uint64
	// Total is how many the stream held when Verify started.
	Total uint64
	// Seq is the stream sequence of the last message checked.
	Seq uint64
}

// Head is the last record of a chain: copy it elsewhere to anchor the log.
type Head struct {
	// N is the record's position in the chain.
	N uint64
	// Hash is its hash.
	Hash string
	// Seq is its stream sequence.
	Seq uint64
	// Time is its time.
	Time time.Time
}

// Break is where the chain breaks.
type Break struct {
	// Seq is the stream sequence of the broken record.
	Seq uint64
	// N is the broken record's n (0 when it is not a record).
	N uint64
	// Reason says what is wrong, in words.
	Reason string
}

// Result is the outcome of Verify.
type Result struct {
	// Records is how many messages were checked.
	Records uint64
	// FirstSeq and LastSeq are the stream sequences of the first and last
	// message checked.
	FirstSeq, LastSeq uint64
	// StartN is the n of the first record: 1 when the stream holds the chain
	// from its start, more when older records are no longer in the stream.
	StartN uint64
	// Head is the last record checked.
	Head Head
	// Broken is the first record where the chain breaks; nil if none does.
	Broken *Break
	// BrokenCount is how many records break the chain.
	BrokenCount uint64
}

// OK reports whether the chain is whole.
func (r *Result) OK() bool { return r.Broken == nil }

// Verify walks the audit stream from its first message to the last one
// stored when it started, and checks that every message is a record whose
// hash matches its stored bytes, whose prev is the SHA-256 of the stored
// bytes of the message before it, and whose n is one more than that one's.
// It returns the counts, the head, and the first broken record. progress,
// if not nil, is called about every second and at the end.
func Verify(ctx context.Context, s jetstream.Stream, progress func(Progress)) (*Result, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	total := info.State.Msgs
	var (
		prevData   []byte
		prevRecord *Record
		prevSeq    uint64
		last       = time.Now()
	)
	brk := func(e Entry, n uint64, format string, args ...any) {
		res.BrokenCount++
		if res.Broken == nil {
			res.Broken = &Break{Seq: e.Seq, N: n, Reason: fmt.Sprintf(format, args...)}
		}
	}
	err = Scan(ctx, s, 0, false, func(e Entry) error {
		res.Records++
		if res.FirstSeq == 0 {
			res.FirstSeq = e.Seq
		}
		res.LastSeq = e.Seq
		first := res.Records == 1
		defer func() {
			prevData, prevRecord, prevSeq = e.Data, e.Record, e.Seq
			if progress != nil && time.Since(last) >= time.Second {
				last = time.Now()
				progress(Progress{Checked: res.Records, Total: total, Seq: e.Seq})
			}
		}()
		r := e.Record
		if r == nil {
			brk(e, 0, "%s", e.Invalid)
			return nil
		}
		res.Head = Head{N: r.N, Hash: r.Hash, Seq: e.Seq, Time: r.Time}
		if first {
			res.StartN = r.N
		}
		if why := selfCheck(r, e.Data); why != "" {
			brk(e, r.N, "%s", why)
			return nil
		}
		switch {
		case first && r.N == 1 && r.Prev != "":
			brk(e, r.N, "the first record (n 1) names a record before it")
		case first:
			// The chain starts here (n > 1: older records are gone).
		case r.Prev == "":
			brk(e, r.N, "a chain starts again in the middle of the stream (no prev) after seq %d", prevSeq)
		case prevRecord != nil && r.N > prevRecord.N+1:
			brk(e, r.N, "records n %s are missing: n jumps from %d (seq %d) to %d", span(prevRecord.N+1, r.N-1), prevRecord.N, prevSeq, r.N)
		case prevRecord != nil && r.N != prevRecord.N+1:
			brk(e, r.N, "n %d does not follow n %d of the record before it (seq %d)", r.N, prevRecord.N, prevSeq)
		case r.Prev != digest(prevData):
			who := fmt.Sprintf("seq %d", prevSeq)
			if prevRecord != nil {
				who = fmt.Sprintf("n %d, seq %d", prevRecord.N, prevSeq)
			}
			brk(e, r.N, "prev does not match the record before it (%s): that record was changed, or one was removed or inserted between them", who)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if progress != nil {
		progress(Progress{Checked: res.Records, Total: max(total, res.Records), Seq: res.LastSeq})
	}
	return res, nil
}

func span(a, b uint64) string {
	if a == b {
		return fmt.Sprint(a)
	}
	return fmt.Sprintf("%d to %d", a, b)
}
