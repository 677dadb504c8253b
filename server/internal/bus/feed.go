package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// FeedStream identifies one of the streams a feed reads.
type FeedStream int

// The feed's streams, in cursor order.
const (
	FeedHealth FeedStream = iota
	FeedRollouts
	FeedIncidents
	FeedAdvisories
	NumFeeds
)

var (
	feedStreamNames = [NumFeeds]string{StreamHealth, StreamRollouts, StreamIncidents, StreamAdvisories}
	feedLetters     = [NumFeeds]byte{'h', 'r', 'i', 'a'}
)

// StreamName returns the JetStream stream of f.
func (f FeedStream) StreamName() string { return feedStreamNames[f] }

// ErrOutOfRange: a start position older than what is retained, or one that
// this hub never handed out.
var ErrOutOfRange = errors.New("out of range")

// ErrBadCursor: the cursor is not in the hub's format.
var ErrBadCursor = errors.New("malformed cursor")

// Cursor is a feed position: for each stream, the last sequence delivered
// (or passed over). Its text form is "h<seq>.r<seq>.i<seq>.a<seq>".
type Cursor [NumFeeds]uint64

// String returns the text form.
func (c Cursor) String() string {
	var sb strings.Builder
	for i := range NumFeeds {
		if i > 0 {
			sb.WriteByte('.')
		}
		sb.WriteByte(feedLetters[i])
		sb.WriteString(strconv.FormatUint(c[i], 10))
	}
	return sb.String()
}

// ItemCursor is the cursor form of a single stored item: its stream and
// sequence, e.g. "h42".
func ItemCursor(f FeedStream, seq uint64) string {
	return string(feedLetters[f]) + strconv.FormatUint(seq, 10)
}

// ParseCursor parses a full or partial cursor. present reports which streams
// it names; the others start at new items only.
func ParseCursor(s string) (c Cursor, present [NumFeeds]bool, err error) {
	if s == "" || len(s) > 128 {
		return c, present, ErrBadCursor
	}
	for part := range strings.SplitSeq(s, ".") {
		if len(part) < 2 {
			return c, present, ErrBadCursor
		}
		idx := strings.IndexByte(string(feedLetters[:]), part[0])
		if idx < 0 || present[idx] {
			return c, present, ErrBadCursor
		}
		n, err := strconv.ParseUint(part[1:], 10, 64)
		if err != nil {
			return c, present, ErrBadCursor
		}
		c[idx], present[idx] = n, true
	}
	return c, present, nil
}

// StartKind is where a feed starts.
type StartKind int

// Start kinds.
const (
	StartNew StartKind = iota
	StartCursor
	StartTime
	StartBeginning
)

// FeedRequest says which streams to read, with which subject filters, from
// where.
type FeedRequest struct {
	Read    [NumFeeds]bool
	Filters [NumFeeds][]string
	Start   StartKind
	Cursor  Cursor
	Present [NumFeeds]bool
	Since   time.Time
}

// ResolveStart turns the request's start into a concrete cursor, or
// ErrOutOfRange when it points before what is retained (or past the end).
func (b *Bus) ResolveStart(ctx context.Context, req FeedRequest) (Cursor, error) {
	var c Cursor
	for i := range NumFeeds {
		rctx, cancel := bounded(ctx)
		info, err := b.streams[feedStreamNames[i]].Info(rctx)
		err = unanswered(ctx, rctx, err)
		cancel()
		if err != nil {
			return c, err
		}
		st := info.State
		first := st.FirstSeq
		if first == 0 {
			first = st.LastSeq + 1
		}
		switch req.Start {
		case StartNew:
			c[i] = st.LastSeq
		case StartBeginning:
			c[i] = first - 1
		case StartCursor:
			if !req.Present[i] {
				c[i] = st.LastSeq
				continue
			}
			s := req.Cursor[i]
			if s > st.LastSeq {
				return c, fmt.Errorf("%w: cursor position %s is ahead of the stream (last %d); it was not issued by this hub", ErrOutOfRange, ItemCursor(FeedStream(i), s), st.LastSeq)
			}
			if s+1 < first {
				return c, fmt.Errorf("%w: cursor position %s is older than what is retained (oldest %d)", ErrOutOfRange, ItemCursor(FeedStream(i), s), first)
			}
			c[i] = s
		case StartTime:
			if st.Msgs == 0 {
				// Everything stored is gone: refuse if any of it was
				// stored at or after the start time.
				if st.LastSeq > 0 && !st.LastTime.Before(req.Since) {
					return c, fmt.Errorf("%w: %s is older than what %s retains (its items up to %s are gone)", ErrOutOfRange,
						req.Since.UTC().Format(time.RFC3339), feedStreamNames[i], st.LastTime.UTC().Format(time.RFC3339))
				}
				c[i] = st.LastSeq
				continue
			}
			if first > 1 && st.FirstTime.After(req.Since) {
				return c, fmt.Errorf("%w: %s is older than what %s retains (oldest item from %s)", ErrOutOfRange,
					req.Since.UTC().Format(time.RFC3339), feedStreamNames[i], st.FirstTime.UTC().Format(time.RFC3339))
			}
			seq, err := b.firstAtOrAfter(ctx, feedStreamNames[i], first, st.LastSeq, req.Since)
			if err != nil {
				return c, err
			}
			c[i] = seq - 1
		}
	}
	return c, nil
}

// firstAtOrAfter finds the first sequence in [lo, hi] whose message time is
// at or after t (hi+1 when none) by binary search.
func (b *Bus) firstAtOrAfter(ctx context.Context, stream string, lo, hi uint64, t time.Time) (uint64, error) {
	s := b.streams[stream]
	end := hi + 1
	for lo < end {
		mid := lo + (end-lo)/2
		rctx, cancel := bounded(ctx)
		m, err := s.GetMsg(rctx, mid, jetstream.WithGetMsgSubject(">"))
		err = unanswered(ctx, rctx, err)
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			end = mid
			continue
		}
		if err != nil {
			return 0, err
		}
		if m.Time.Before(t) {
			lo = m.Sequence + 1
		} else {
			end = mid
		}
	}
	return lo, nil
}

// FeedMsg is one message of a feed.
type FeedMsg struct {
	Stream FeedStream
	StoredMsg
	// Pending is how many messages of the stream, matching the feed's
	// filter, come after this one (as JetStream counted when it delivered
	// it): how far behind the reader is.
	Pending uint64
}

// Feed reads the requested streams after start and sends their messages to
// out, each stream in order, until ctx ends or a stream fails. A stream's
// consumer lost with a NATS node is re-created from the next message; a
// feed that cannot read a stream again within FeedRecoverWithin ends with
// ErrNoAnswer.
func (b *Bus) Feed(ctx context.Context, req FeedRequest, start Cursor, out chan<- FeedMsg) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	var readers []*streamReader
	// The consumers are deleted when the feed ends: left to expire they
	// would count against the stream's consumers for minutes.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, r := range readers {
			r.close(dctx)
		}
	}()
	// Every consumer is created before any is read, so a feed that cannot
	// start leaves no reader behind.
	var feeds []FeedStream
	for i := range NumFeeds {
		if !req.Read[i] {
			continue
		}
		r := newStreamReader(b, feedStreamNames[i], req.Filters[i], start[i]+1)
		readers, feeds = append(readers, r), append(feeds, FeedStream(i))
		if err := r.open(ctx); err != nil {
			return err
		}
	}
	for i, r := range readers {
		g.Go(func() error { return pump(ctx, feeds[i], r, out) })
	}
	return g.Wait()
}

// feedPull is how many messages a feed's consumer fetches ahead of its
// reader, per stream: enough to keep a subscriber that keeps up busy, and
// all a subscriber that falls behind holds in the hub (the rest waits in
// the stream).
const feedPull = 128

func pump(ctx context.Context, f FeedStream, r *streamReader, out chan<- FeedMsg) error {
	for {
		m, md, err := r.nextMsg(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		fm := FeedMsg{Stream: f, StoredMsg: StoredMsg{Subject: m.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp, Header: m.Headers(), Data: m.Data()}, Pending: md.NumPending}
		select {
		case out <- fm:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
