package detectrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The lease: one key of the detector's bucket names the replica that runs
// the detector. Its holder renews it by writing it again at the revision it
// last wrote (Update), every RenewInterval. A candidate that finds it held
// watches its revision: once the same revision has stood for the holder's
// lease time, measured on the candidate's own clock from when it first saw
// it, the holder is gone and the candidate takes the lease by writing at
// that revision. Neither side compares wall clocks, and the compare-and-set
// of the revision decides every race.
//
// The holder measures the same time from before it sent its last renewal
// that succeeded, which is no later than when any candidate first saw that
// renewal, and stops its detector RenewInterval earlier than the lease
// time: a holder that cannot renew stops before anyone may take over.
//
// A per-key TTL would not help: nats.go's Update does not carry the key's
// TTL, so a renewed key would never expire; and a bucket TTL would expire
// the detector's state too.
const leaseKey = "lease"

// leaseValue is what the lease key holds.
type leaseValue struct {
	Holder string `json:"holder"`
	// TTL is the holder's lease time: candidates wait this long.
	TTL time.Duration `json:"ttl_ns"`
	// Expires is when the lease ends unless renewed, by the holder's
	// clock; for people reading the bucket, never for a decision.
	Expires time.Time `json:"expires"`
}

// errLeaseLost: the lease is held by another replica now.
var errLeaseLost = errors.New("detector lease lost")

// lease is one replica's side of the lease.
type lease struct {
	kv    jetstream.KeyValue
	id    string
	ttl   time.Duration
	renew time.Duration
	// sole: no other replica can reach the bucket, so a lease found held
	// was left by an earlier run of this hub and is taken at once.
	sole bool

	// While held: the revision written last, and when the write that
	// produced it was sent.
	rev    uint64
	sentAt time.Time

	// While a candidate: the revision seen, when it was first seen, and
	// its holder's lease time.
	seenRev    uint64
	seenAt     time.Time
	seenTTL    time.Duration
	seenHolder string
}

// holderID names this process: host name, process id and a random part.
func holderID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

func (l *lease) value(at time.Time) []byte {
	b, _ := json.Marshal(leaseValue{Holder: l.id, TTL: l.ttl, Expires: at.Add(l.ttl).UTC()})
	return b
}

// deadline is when the holder must have stopped its detector unless it
// renews first.
func (l *lease) deadline() time.Time { return l.sentAt.Add(l.ttl - l.renew) }

// acquire tries once to take the lease. It returns whether it did, and
// otherwise how long to wait before trying again at the latest.
func (l *lease) acquire(ctx context.Context) (bool, time.Duration, error) {
	sent := time.Now()
	e, err := l.kv.Get(ctx, leaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Free (never taken, released, or its key deleted).
		rev, err := l.kv.Create(ctx, leaseKey, l.value(sent))
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, 0, nil // another candidate was faster: look again
		}
		if err != nil {
			return false, l.renew, err
		}
		l.hold(rev, sent)
		return true, 0, nil
	}
	if err != nil {
		return false, l.renew, err
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil || v.TTL <= 0 {
		v.TTL = l.ttl // unreadable: judge it by our own lease time
	}
	now := time.Now()
	if !l.sole && v.Holder != l.id {
		if e.Revision() != l.seenRev {
			l.seenRev, l.seenAt, l.seenTTL, l.seenHolder = e.Revision(), now, v.TTL, v.Holder
		}
		if wait := l.seenAt.Add(l.seenTTL).Sub(now); wait > 0 {
			return false, min(wait, l.renew), nil
		}
	}
	// Expired (or ours: a renewal that landed after we gave it up, or a
	// run before this one on a bus only this hub reaches). Take it at the
	// revision seen: if anyone wrote since, this fails.
	rev, err := l.kv.Update(ctx, leaseKey, l.value(sent), e.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return false, 0, nil
	}
	if err != nil {
		return false, l.renew, err
	}
	l.hold(rev, sent)
	return true, 0, nil
}

func (l *lease) hold(rev uint64, sent time.Time) {
	l.rev, l.sentAt = rev, sent
	l.seenRev, l.seenAt, l.seenTTL, l.seenHolder = 0, time.Time{}, 0, ""
}

// extend renews the held lease once. errLeaseLost means another replica
// holds it (or it was deleted); any other error may be passing, and the
// caller retries until deadline.
func (l *lease) extend(ctx context.Context) error {
	sent := time.Now()
	ctx, cancel := context.WithDeadline(ctx, l.deadline())
	defer cancel()
	rev, err := l.kv.Update(ctx, leaseKey, l.value(sent), l.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return errLeaseLost
	}
	if err != nil {
		return err
	}
	l.rev, l.sentAt = rev, sent
	return nil
}

// release deletes the held lease, if it is still ours, so that another
// replica takes over at once.
func (l *lease) release(ctx context.Context) error {
	if l.rev == 0 {
		return nil
	}
	rev := l.rev
	l.rev = 0
	err := l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil // not ours any more
	}
	return err
}
