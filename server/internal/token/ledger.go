package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KV buckets of the token ledger, shared by every hub replica.
const (
	IssuedBucket  = "phx_tokens"
	RevokedBucket = "phx_revoked_tokens"
)

// ErrUnknown: no token with that jti was issued (or it has aged out).
var ErrUnknown = errors.New("no such token")

// Record describes an issued token (never the token itself).
type Record struct {
	JTI       string    `json:"jti"`
	Org       string    `json:"org"`
	Role      string    `json:"role"`
	Scope     string    `json:"scope"`
	Kid       string    `json:"kid"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	IssuedBy  string    `json:"issued_by"`
	Bound     bool      `json:"bound,omitempty"`
}

// Revocation records a revoked token.
type Revocation struct {
	JTI       string    `json:"jti"`
	RevokedAt time.Time `json:"revoked_at"`
	RevokedBy string    `json:"revoked_by"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Ledger keeps the issued and revoked tokens in JetStream KV and an
// in-memory copy of the revocations that follows the bucket with a watch,
// so a revocation on one replica takes effect on all of them at once.
type Ledger struct {
	issued, revoked jetstream.KeyValue
	log             *slog.Logger
	ready           chan struct{}

	mu        sync.RWMutex
	set       map[string]Revocation
	listeners map[string]map[int]func()
	nextID    int
}

// KeyValuer creates or opens KV buckets (the hub's bus).
type KeyValuer interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// OpenLedger creates (or opens) the ledger's buckets. Entries are kept for
// maxTTL, the longest a token can live, plus an hour of clock skew.
func OpenLedger(ctx context.Context, kvs KeyValuer, maxTTL time.Duration, log *slog.Logger) (*Ledger, error) {
	open := func(bucket, desc string) (jetstream.KeyValue, error) {
		kv, err := kvs.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Description: desc, TTL: maxTTL + time.Hour})
		if err != nil {
			return nil, fmt.Errorf("%s bucket: %w", bucket, err)
		}
		return kv, nil
	}
	issued, err := open(IssuedBucket, "phx issued tokens")
	if err != nil {
		return nil, err
	}
	revoked, err := open(RevokedBucket, "phx revoked tokens")
	if err != nil {
		return nil, err
	}
	return &Ledger{
		issued: issued, revoked: revoked, log: log, ready: make(chan struct{}),
		set: map[string]Revocation{}, listeners: map[string]map[int]func(){},
	}, nil
}

// Ready is closed once the revocations stored before the hub started have
// been loaded.
func (l *Ledger) Ready() <-chan struct{} { return l.ready }

// Watch follows the revocation bucket until ctx ends, re-watching if the
// watch is lost.
func (l *Ledger) Watch(ctx context.Context) error {
	once := sync.OnceFunc(func() { close(l.ready) })
	for ctx.Err() == nil {
		w, err := l.revoked.WatchAll(ctx)
		if err != nil {
			l.log.Warn("token revocation watch", "err", err)
		} else {
			for e := range w.Updates() {
				if e == nil { // the initial values have all been delivered
					once()
					continue
				}
				if e.Operation() != jetstream.KeyValuePut {
					continue
				}
				var r Revocation
				if err := json.Unmarshal(e.Value(), &r); err != nil {
					l.log.Warn("token revocation record", "key", e.Key(), "err", err)
					r = Revocation{JTI: e.Key()}
				}
				l.apply(e.Key(), r)
			}
			_ = w.Stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (l *Ledger) apply(jti string, r Revocation) {
	l.mu.Lock()
	_, known := l.set[jti]
	l.set[jti] = r
	var fns []func()
	for _, fn := range l.listeners[jti] {
		fns = append(fns, fn)
	}
	l.mu.Unlock()
	if !known {
		l.log.Info("token revoked", "jti", jti, "by", r.RevokedBy)
	}
	for _, fn := range fns {
		fn()
	}
}

// Revoked reports whether jti has been revoked.
func (l *Ledger) Revoked(jti string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	_, ok := l.set[jti]
	return ok
}

// OnRevoke calls fn (once per revocation) when jti is revoked, and at once
// if it already is. The returned function stops it.
func (l *Ledger) OnRevoke(jti string, fn func()) (stop func()) {
	l.mu.Lock()
	_, already := l.set[jti]
	l.nextID++
	id := l.nextID
	if l.listeners[jti] == nil {
		l.listeners[jti] = map[int]func(){}
	}
	l.listeners[jti][id] = fn
	l.mu.Unlock()
	if already {
		fn()
	}
	return func() {
		l.mu.Lock()
		delete(l.listeners[jti], id)
		if len(l.listeners[jti]) == 0 {
			delete(l.listeners, jti)
		}
		l.mu.Unlock()
	}
}

// Listeners counts the live streams waiting on revocations (tests, metrics).
func (l *Ledger) Listeners() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := 0
	for _, m := range l.listeners {
		n += len(m)
	}
	return n
}

// Record stores an issued token's description.
func (l *Ledger) Record(ctx context.Context, r Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = l.issued.Create(ctx, r.JTI, data)
	return err
}

// Lookup returns an issued token's description.
func (l *Ledger) Lookup(ctx context.Context, jti string) (Record, error) {
	e, err := l.issued.Get(ctx, jti)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, fmt.Errorf("%w: %s", ErrUnknown, jti)
	}
	if err != nil {
		return Record{}, err
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, err
	}
	return r, nil
}

// Revoke revokes an issued token. Revoking a revoked token again is not an
// error; it returns the first revocation.
func (l *Ledger) Revoke(ctx context.Context, jti, by string, now time.Time) (Record, Revocation, error) {
	rec, err := l.Lookup(ctx, jti)
	if err != nil {
		return Record{}, Revocation{}, err
	}
	rev := Revocation{JTI: jti, RevokedAt: now.UTC(), RevokedBy: by, ExpiresAt: rec.ExpiresAt}
	data, err := json.Marshal(rev)
	if err != nil {
		return Record{}, Revocation{}, err
	}
	if _, err := l.revoked.Create(ctx, jti, data); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return Record{}, Revocation{}, err
		}
		e, gerr := l.revoked.Get(ctx, jti)
		if gerr != nil {
			return Record{}, Revocation{}, gerr
		}
		if err := json.Unmarshal(e.Value(), &rev); err != nil {
			return Record{}, Revocation{}, err
		}
	}
	// Take effect here at once, without waiting for the watch.
	l.apply(jti, rev)
	return rec, rev, nil
}
