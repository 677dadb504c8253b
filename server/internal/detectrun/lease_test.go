package detectrun

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/detect"
	"github.com/phx-exchange/phx/server/internal/natsembed"
)

// idle is an engine that never finds anything; it remembers the state it
// was restored from.
type idle struct{ restored atomic.Pointer[string] }

func (*idle) ObserveCell(string, *phxv1.HealthSignal)          {}
func (*idle) ObserveRollout(string, *phxv1.Rollout, time.Time) {}
func (*idle) Step(time.Time) []detect.Finding                  { return nil }
func (*idle) MarshalState() ([]byte, error)                    { return []byte(`{}`), nil }
func (e *idle) Restore(b []byte) error {
	s := string(b)
	e.restored.Store(&s)
	return nil
}

func testLogger() *slog.Logger {
	if os.Getenv("PHX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// embedded starts an embedded NATS server and returns a function that
// opens a new connection to it (one per replica) with its bus.
func embedded(t *testing.T) func() (*nats.Conn, *bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := natsembed.Start(ctx, natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	return func() (*nats.Conn, *bus.Bus) {
		nc, err := ns.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		bctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := bus.New(bctx, nc, bus.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return nc, b
	}
}

// candidate is one replica running Run.
type candidate struct {
	name    string
	nc      *nats.Conn
	cancel  context.CancelFunc
	done    chan error
	leading atomic.Bool
	engines atomic.Pointer[idle]
}

// leaders runs n candidates on one bus. running counts the detectors
// running at once; overlap is set if it ever exceeds one.
type leaders struct {
	running atomic.Int32
	overlap atomic.Bool
	cs      []*candidate
}

func startCandidates(t *testing.T, connect func() (*nats.Conn, *bus.Bus), n int, ttl, renew time.Duration) *leaders {
	t.Helper()
	ls := &leaders{}
	for i := range n {
		nc, b := connect()
		c := &candidate{name: string(rune('a' + i)), nc: nc, done: make(chan error, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		c.cancel = cancel
		cfg := Config{Bus: b, LeaseTTL: ttl, RenewInterval: renew,
			Holder: "replica-" + c.name, Logger: testLogger().With("replica", c.name),
			NewEngine: func() Engine { e := &idle{}; c.engines.Store(e); return e },
			Leader: func(on bool) {
				if on {
					if ls.running.Add(1) > 1 {
						ls.overlap.Store(true)
					}
				} else {
					ls.running.Add(-1)
				}
				c.leading.Store(on)
			}}
		go func() { c.done <- Run(ctx, cfg) }()
		t.Cleanup(func() { cancel(); <-c.done })
		ls.cs = append(ls.cs, c)
	}
	return ls
}

// leader waits until exactly one candidate other than the excluded ones
// leads, and returns it.
func (ls *leaders) leader(t *testing.T, within time.Duration, except ...*candidate) *candidate {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var lead []*candidate
		for _, c := range ls.cs {
			if c.leading.Load() {
				lead = append(lead, c)
			}
		}
		if len(lead) == 1 && !contains(except, lead[0]) {
			return lead[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no single new leader within %s", within)
	return nil
}

func contains(cs []*candidate, c *candidate) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// TestLeaseOneDetectorAtATime: three replicas, one detector. When its
// holder shuts down it releases the lease and another replica takes over
// at once; when a holder loses its connection (as if killed), it stops its
// detector and another takes over within the lease time. Never do two
// detectors run at once.
func TestLeaseOneDetectorAtATime(t *testing.T) {
	const ttl, renew = 1500 * time.Millisecond, 300 * time.Millisecond
	ls := startCandidates(t, embedded(t), 3, ttl, renew)
	first := ls.leader(t, 10*time.Second)
	// It keeps the lease over several renewals.
	for deadline := time.Now().Add(3 * ttl); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !first.leading.Load() || ls.running.Load() != 1 {
			t.Fatalf("leader %s lost the lease while renewing (%d running)", first.name, ls.running.Load())
		}
	}

	// Graceful shutdown releases the lease.
	start := time.Now()
	first.cancel()
	<-first.done
	first.done <- nil
	second := ls.leader(t, 10*time.Second, first)
	t.Logf("after a shutdown, %s took over in %s", second.name, time.Since(start).Round(time.Millisecond))
	if d := time.Since(start); d >= ttl {
		t.Errorf("take-over after a release took %s, want less than the lease time %s", d, ttl)
	}

	// A holder cut off from NATS stops its detector before another
	// replica takes over.
	start = time.Now()
	second.nc.Close()
	third := ls.leader(t, 10*time.Second, first, second)
	d := time.Since(start)
	t.Logf("after a holder was cut off, %s took over in %s (lease time %s)", third.name, d.Round(time.Millisecond), ttl)
	if second.leading.Load() {
		t.Error("the cut-off holder still runs its detector")
	}
	if d > ttl+renew+time.Second {
		t.Errorf("take-over took %s, want about the lease time %s", d, ttl)
	}
	if ls.overlap.Load() {
		t.Error("two detectors ran at once")
	}
}

// TestLeaseTakeOverLoadsState: the replica that takes the lease restores
// the engine state its predecessor stored.
func TestLeaseTakeOverLoadsState(t *testing.T) {
	connect := embedded(t)
	_, b := connect()
	ctx := context.Background()
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket})
	if err != nil {
		t.Fatal(err)
	}
	var cur bus.Cursor
	stored, _ := json.Marshal(saved{Cursor: cur, Engine: []byte(`{"left":"by the previous holder"}`), Now: time.Now().UTC()})
	if _, err := kv.Put(ctx, stateKey, stored); err != nil {
		t.Fatal(err)
	}
	ls := startCandidates(t, connect, 1, time.Second, 200*time.Millisecond)
	c := ls.leader(t, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for c.engines.Load() == nil || c.engines.Load().restored.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the engine was not restored")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := *c.engines.Load().restored.Load(); got != `{"left":"by the previous holder"}` {
		t.Fatalf("restored %s", got)
	}
}

// TestDeposedStateWriteRefused: once a new holder has claimed the state,
// a write by the holder before it, at the revision that one knew, is
// refused and leaves the new holder's state as it was.
func TestDeposedStateWriteRefused(t *testing.T) {
	connect := embedded(t)
	_, b := connect()
	ctx := context.Background()
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket})
	if err != nil {
		t.Fatal(err)
	}
	old, oldRev, err := claim(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	old.Engine = []byte(`"old holder, first write"`)
	if err := store(ctx, kv, &old, &oldRev); err != nil {
		t.Fatal(err)
	}

	// A new holder takes over and continues from what the old one wrote.
	cur, curRev, err := claim(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if string(cur.Engine) != `"old holder, first write"` {
		t.Fatalf("the new holder loaded %s", cur.Engine)
	}

	// The old holder wakes up and writes late.
	old.Engine = []byte(`"old holder, late write"`)
	if err := store(ctx, kv, &old, &oldRev); !errors.Is(err, errDeposed) {
		t.Fatalf("late write by the deposed holder: %v, want errDeposed", err)
	}
	cur.Engine = []byte(`"new holder"`)
	if err := store(ctx, kv, &cur, &curRev); err != nil {
		t.Fatalf("the new holder's write: %v", err)
	}
	e, err := kv.Get(ctx, stateKey)
	if err != nil {
		t.Fatal(err)
	}
	var got saved
	if err := json.Unmarshal(e.Value(), &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Engine) != `"new holder"` {
		t.Fatalf("stored state %s", got.Engine)
	}
}

// TestLeaseStaleHolder: a lease left by a holder that is gone is taken
// only after it has stood for the lease time; on a bus no other hub
// reaches (Sole), at once.
func TestLeaseStaleHolder(t *testing.T) {
	connect := embedded(t)
	_, b := connect()
	ctx := context.Background()
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket})
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 800 * time.Millisecond
	gone := &lease{kv: kv, id: "gone", ttl: ttl, renew: ttl / 4}
	if ok, _, err := gone.acquire(ctx); !ok || err != nil {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	sole := &lease{kv: kv, id: "restarted", ttl: 10 * time.Second, renew: time.Second, sole: true}
	next := &lease{kv: kv, id: "next", ttl: 10 * time.Second, renew: time.Second}
	start := time.Now()
	for {
		ok, wait, err := next.acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if wait <= 0 || wait > time.Second {
			t.Fatalf("asked to wait %s", wait)
		}
		time.Sleep(wait)
	}
	// The stale holder's own lease time counts, not the candidate's.
	if d := time.Since(start); d < ttl || d > ttl+time.Second {
		t.Fatalf("taken after %s, want the holder's lease time %s", d, ttl)
	}
	if next.seenHolder != "" || next.rev == 0 {
		t.Fatalf("holder state after acquiring: %+v", next)
	}
	// The one who lost it cannot renew.
	gone.sentAt = time.Now() // as if it had renewed just now, by its clock
	if err := gone.extend(ctx); !errors.Is(err, errLeaseLost) {
		t.Fatalf("renewal by the old holder: %v", err)
	}
	if ok, _, err := sole.acquire(ctx); !ok || err != nil {
		t.Fatalf("sole acquire: %v %v", ok, err)
	}
	if err := next.extend(ctx); !errors.Is(err, errLeaseLost) {
		t.Fatalf("renewal after a sole take-over: %v", err)
	}
	// Releasing frees it for the next Create.
	if err := sole.release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, leaseKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("lease after release: %v", err)
	}
	if ok, _, err := next.acquire(ctx); !ok || err != nil {
		t.Fatalf("acquire after release: %v %v", ok, err)
	}
}
