package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/natsembed"
)

// store is a real embedded JetStream with the hub's streams.
type store struct {
	srv    *natsembed.Server
	js     jetstream.JetStream
	stream jetstream.Stream
}

func newStore(t *testing.T) *store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := natsembed.Start(ctx, natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	st := &store{srv: srv}
	nc := st.conn(t)
	b, err := bus.New(ctx, nc, bus.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st.js, st.stream = b.JetStream(), b.Stream(bus.StreamAudit)
	return st
}

// conn opens another client connection: each hub has its own, and a
// tamperer has a raw one.
func (s *store) conn(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := s.srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// newLog starts a Log on its own connection, run until the test ends.
func (s *store) newLog(t *testing.T, hub string) *audit.Log {
	t.Helper()
	return s.newLogConfig(t, audit.Config{Hub: hub, Logger: quiet()})
}

func (s *store) newLogConfig(t *testing.T, cfg audit.Config) *audit.Log {
	t.Helper()
	js, err := jetstream.New(s.conn(t))
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(js, s.stream, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return l
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// event returns the i-th test event: the kinds in turn.
func event(i int) audit.Event {
	k := audit.Kinds[i%len(audit.Kinds)]
	ev := audit.Event{Kind: k, Org: "contoso", Role: "vendor", Method: "/phx.v1.HealthService/PublishSignals", Detail: fmt.Sprint("event ", i)}
	if k == audit.KindAuthz {
		ev.Allowed, ev.Rule = audit.Bool(i%2 == 0), "rule"
	}
	return ev
}

func appendN(t *testing.T, l *audit.Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := l.Append(event(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func closeLog(t *testing.T, l *audit.Log) {
	t.Helper()
	if err := l.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// entries reads the whole stream.
func (s *store) entries(t *testing.T) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	if err := audit.Scan(ctxT(t), s.stream, 0, false, func(e audit.Entry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *store) verify(t *testing.T) *audit.Result {
	t.Helper()
	var calls int
	res, err := audit.Verify(ctxT(t), s.stream, func(audit.Progress) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 {
		t.Error("Verify reported no progress")
	}
	return res
}

func wantOK(t *testing.T, res *audit.Result, records uint64) {
	t.Helper()
	if !res.OK() {
		t.Fatalf("chain broken at seq %d n %d: %s", res.Broken.Seq, res.Broken.N, res.Broken.Reason)
	}
	if res.Records != records || res.BrokenCount != 0 {
		t.Fatalf("verified %d records (%d broken), want %d", res.Records, res.BrokenCount, records)
	}
}

func TestAppendScanVerify(t *testing.T) {
	s := newStore(t)
	l := s.newLog(t, "hub-a")
	appendN(t, l, 0, 1000)
	closeLog(t, l)
	if l.Stored() != 1000 || l.Depth() != 0 {
		t.Fatalf("stored %d, queued %d", l.Stored(), l.Depth())
	}
	if err := l.Append(event(0)); !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	es := s.entries(t)
	if len(es) != 1000 {
		t.Fatalf("%d records stored", len(es))
	}
	for i, e := range es {
		r := e.Record
		if r == nil {
			t.Fatalf("seq %d: %s", e.Seq, e.Invalid)
		}
		want := event(i)
		if r.N != uint64(i+1) || r.Kind != want.Kind || r.Detail != want.Detail || r.Hub != "hub-a" || r.Time.Location() != time.UTC {
			t.Fatalf("record %d: %+v", i, r)
		}
		if (i == 0) != (r.Prev == "") || len(r.Hash) != 64 {
			t.Fatalf("record %d: prev %q hash %q", i, r.Prev, r.Hash)
		}
		if want.Allowed != nil && (r.Allowed == nil || *r.Allowed != *want.Allowed) {
			t.Fatalf("record %d: allowed %v", i, r.Allowed)
		}
	}
	// The stored JSON has the documented field names.
	var m map[string]any
	if err := json.Unmarshal(es[1].Data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"n", "time", "hub", "kind", "org", "role", "method", "allowed", "rule", "prev", "hash"} {
		if _, ok := m[k]; !ok {
			t.Errorf("stored record lacks %q: %s", k, es[1].Data)
		}
	}
	if !strings.HasSuffix(string(es[1].Data), `,"hash":"`+es[1].Record.Hash+`"}`) {
		t.Errorf("hash is not the last member: %s", es[1].Data)
	}

	res := s.verify(t)
	wantOK(t, res, 1000)
	if res.StartN != 1 || res.Head.N != 1000 || res.Head.Hash != es[999].Record.Hash || res.Head.Seq != es[999].Seq {
		t.Fatalf("start %d head %+v", res.StartN, res.Head)
	}

	// A later Log continues the chain from the stream's last record.
	l2 := s.newLog(t, "hub-b")
	appendN(t, l2, 1000, 10)
	closeLog(t, l2)
	res = s.verify(t)
	wantOK(t, res, 1010)
	if res.Head.N != 1010 {
		t.Fatalf("head %+v", res.Head)
	}
}

// Two hubs sharing one stream append concurrently: every record is stored
// once and the chain stays whole.
func TestTwoLogsConcurrently(t *testing.T) {
	forEachBatching(t, func(t *testing.T, b audit.Batching) { twoLogsConcurrently(t, b) })
}

// batchings are the ways of storing a batch; the embedded JetStream has one
// replica, where the default is pipelined, but takes the others too.
var batchings = map[string]audit.Batching{
	"pipelined": audit.BatchingPipelined, "atomic": audit.BatchingAtomic, "sequential": audit.BatchingSequential,
}

func forEachBatching(t *testing.T, f func(*testing.T, audit.Batching)) {
	for name, b := range batchings {
		t.Run(name, func(t *testing.T) { f(t, b) })
	}
}

func twoLogsConcurrently(t *testing.T, batching audit.Batching) {
	s := newStore(t)
	per := 1500
	if batching == audit.BatchingAtomic {
		// A single server stages each atomic batch in files of its own:
		// slow, and not what it is used for (see BatchingAuto).
		per = 300
	}
	// Small batches and paced callers, so that the hubs keep taking the
	// chain from each other.
	logs := []*audit.Log{
		s.newLogConfig(t, audit.Config{Hub: "hub-a", MaxBatch: 16, Batching: batching, Logger: quiet()}),
		s.newLogConfig(t, audit.Config{Hub: "hub-b", MaxBatch: 16, Batching: batching, Logger: quiet()}),
	}
	var wg sync.WaitGroup
	for _, l := range logs {
		for g := range 3 { // several callers per hub
			wg.Go(func() {
				for i := g; i < per; i += 3 {
					if err := l.Append(event(i)); err != nil {
						t.Error(err)
						return
					}
					if i%10 == 0 {
						time.Sleep(200 * time.Microsecond)
					}
				}
			})
		}
	}
	wg.Wait()
	for _, l := range logs {
		closeLog(t, l)
	}
	res := s.verify(t)
	wantOK(t, res, uint64(2*per))
	byHub := map[string]int{}
	switches := 0
	es := s.entries(t)
	for i, e := range es {
		byHub[e.Record.Hub]++
		if i > 0 && e.Record.Hub != es[i-1].Record.Hub {
			switches++
		}
	}
	if byHub["hub-a"] != per || byHub["hub-b"] != per {
		t.Fatalf("records per hub: %v", byHub)
	}
	t.Logf("the chain changes hands %d times", switches)
}

// A hub whose idea of the stream's last record is stale (another hub
// appended since) has its record refused, reads the last record again and
// chains after it.
func TestRechainsAfterAnotherHub(t *testing.T) {
	forEachBatching(t, rechainsAfterAnotherHub)
}

func rechainsAfterAnotherHub(t *testing.T, batching audit.Batching) {
	s := newStore(t)
	// A refusal because another hub appended first is expected: it is
	// handled at once, without a warning or a pause.
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := s.newLogConfig(t, audit.Config{Hub: "hub-a", Batching: batching, Logger: logger})
	b := s.newLogConfig(t, audit.Config{Hub: "hub-b", Batching: batching, Logger: logger})
	stored := func(l *audit.Log, n uint64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for l.Stored() < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if l.Stored() != n {
			t.Fatalf("stored %d, want %d", l.Stored(), n)
		}
	}
	appendN(t, a, 0, 5)
	stored(a, 5)
	appendN(t, b, 5, 5)
	stored(b, 5)
	appendN(t, a, 10, 5)
	stored(a, 10)
	wantOK(t, s.verify(t), 15)
	var hubs []string
	for _, e := range s.entries(t) {
		hubs = append(hubs, e.Record.Hub)
	}
	if got := strings.Join(hubs, " "); got != strings.TrimSpace(strings.Repeat("hub-a ", 5)+strings.Repeat("hub-b ", 5)+strings.Repeat("hub-a ", 5)) {
		t.Fatalf("hubs in chain order: %s", got)
	}
	if out := logs.String(); !strings.Contains(out, "audit chain moved on") || strings.Contains(out, "level=WARN") {
		t.Errorf("log:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tamper edits the stream as someone with NATS administrator rights could:
// JetStream cannot change a message in place, so the stream is purged and
// every message published again, through a raw connection, after edit.
func (s *store) tamper(t *testing.T, edit func(i int, data []byte) [][]byte) {
	t.Helper()
	es := s.entries(t)
	ctx := ctxT(t)
	if err := s.stream.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(s.conn(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		for _, data := range edit(i, e.Data) {
			if _, err := js.Publish(ctx, audit.Subject, data); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// reseal re-encodes a changed record with a correct hash of its own.
func reseal(t *testing.T, r *audit.Record) []byte {
	t.Helper()
	r.Hash = ""
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	r.Hash = hex.EncodeToString(sum[:])
	return []byte(strings.TrimSuffix(string(body), "}") + `,"hash":"` + r.Hash + `"}`)
}

func TestTamperDetected(t *testing.T) {
	const records = 20
	tests := []struct {
		name   string
		tamper func(t *testing.T, s *store)
		n      uint64 // the first broken record's n
		index  int    // its position in the stream after tampering
		reason string
		start  uint64
	}{
		{
			name: "edit a record",
			tamper: func(t *testing.T, s *store) {
				s.tamper(t, func(i int, data []byte) [][]byte {
					if i == 6 {
						return [][]byte{[]byte(strings.Replace(string(data), `"org":"contoso"`, `"org":"fabrikam"`, 1))}
					}
					return [][]byte{data}
				})
			},
			n: 7, index: 6, reason: "hash mismatch", start: 1,
		},
		{
			name: "edit a record and recompute its hash",
			tamper: func(t *testing.T, s *store) {
				s.tamper(t, func(i int, data []byte) [][]byte {
					if i == 6 {
						r, err := audit.Parse(data)
						if err != nil {
							t.Fatal(err)
						}
						r.Org = "fabrikam"
						return [][]byte{reseal(t, r)}
					}
					return [][]byte{data}
				})
			},
			n: 8, index: 7, reason: "prev does not match the record before it (n 7", start: 1,
		},
		{
			name: "delete a record",
			tamper: func(t *testing.T, s *store) {
				es := s.entries(t)
				if err := s.stream.DeleteMsg(ctxT(t), es[6].Seq); err != nil {
					t.Fatal(err)
				}
			},
			n: 8, index: 6, reason: "records n 7 are missing", start: 1,
		},
		{
			name: "add a field",
			tamper: func(t *testing.T, s *store) {
				s.tamper(t, func(i int, data []byte) [][]byte {
					if i == 6 {
						return [][]byte{[]byte(strings.Replace(string(data), `"org":`, `"note":"x","org":`, 1))}
					}
					return [][]byte{data}
				})
			},
			n: 7, index: 6, reason: "hash mismatch", start: 1,
		},
		{
			name: "insert a message",
			tamper: func(t *testing.T, s *store) {
				s.tamper(t, func(i int, data []byte) [][]byte {
					if i == 6 {
						return [][]byte{[]byte("not a record"), data}
					}
					return [][]byte{data}
				})
			},
			n: 0, index: 6, reason: "not an audit record", start: 1,
		},
		{
			name: "swap two records",
			tamper: func(t *testing.T, s *store) {
				es := s.entries(t)
				s.tamper(t, func(i int, data []byte) [][]byte {
					switch i {
					case 6:
						return [][]byte{es[7].Data}
					case 7:
						return [][]byte{es[6].Data}
					}
					return [][]byte{data}
				})
			},
			n: 8, index: 6, reason: "records n 7 are missing: n jumps from 6 (seq", start: 1,
		},
		{
			name: "the oldest records aged out",
			tamper: func(t *testing.T, s *store) {
				es := s.entries(t)
				if err := s.stream.Purge(ctxT(t), jetstream.WithPurgeSequence(es[5].Seq)); err != nil {
					t.Fatal(err)
				}
			},
			start: 6,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			l := s.newLog(t, "hub-a")
			appendN(t, l, 0, records)
			// Wait until they are stored, then tamper while the log runs.
			deadline := time.Now().Add(30 * time.Second)
			for l.Stored() < records && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			tt.tamper(t, s)
			// The hub goes on appending: it chains after whatever is the
			// stream's last message now, and the break stays visible.
			appendN(t, l, records, 5)
			closeLog(t, l)

			res := s.verify(t)
			es := s.entries(t)
			if res.StartN != tt.start {
				t.Errorf("chain starts at n %d, want %d", res.StartN, tt.start)
			}
			if tt.reason == "" {
				wantOK(t, res, uint64(len(es)))
				return
			}
			if res.OK() {
				t.Fatalf("tampering not detected: %+v", res)
			}
			b := res.Broken
			if b.N != tt.n || b.Seq != es[tt.index].Seq || !strings.Contains(b.Reason, tt.reason) {
				t.Fatalf("first broken record: seq %d n %d %q; want seq %d n %d %q", b.Seq, b.N, b.Reason, es[tt.index].Seq, tt.n, tt.reason)
			}
			// The records appended after the tampering chain correctly.
			if res.Head.N == 0 || res.Records != uint64(len(es)) {
				t.Fatalf("head %+v, %d records of %d", res.Head, res.Records, len(es))
			}
		})
	}
}

// Removing the newest records leaves no trace in the chain until the next
// record is appended: that one shows the gap.
func TestDeletedTailShowsAsGap(t *testing.T) {
	s := newStore(t)
	l := s.newLog(t, "hub-a")
	appendN(t, l, 0, 10)
	closeLog(t, l)
	es := s.entries(t)
	for _, e := range es[8:] {
		if err := s.stream.DeleteMsg(ctxT(t), e.Seq); err != nil {
			t.Fatal(err)
		}
	}
	wantOK(t, s.verify(t), 8)
	l2 := s.newLog(t, "hub-b")
	appendN(t, l2, 10, 1)
	closeLog(t, l2)
	res := s.verify(t)
	if res.OK() || res.Broken.N != 11 || !strings.Contains(res.Broken.Reason, "records n 9 to 10 are missing") {
		t.Fatalf("%+v %+v", res, res.Broken)
	}

	// An emptied stream: the next chain starts after its last sequence,
	// so it does not pass for the start of the log.
	if err := s.stream.Purge(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	l3 := s.newLog(t, "hub-c")
	appendN(t, l3, 11, 2)
	closeLog(t, l3)
	res = s.verify(t)
	wantOK(t, res, 2)
	if res.StartN <= 1 {
		t.Fatalf("a chain after a purge starts at n %d", res.StartN)
	}
}

func TestAppendBlocksWhenFullUntilClose(t *testing.T) {
	s := newStore(t)
	l := audit.New(s.js, s.stream, audit.Config{QueueSize: 2, Logger: quiet()})
	appendN(t, l, 0, 2)
	if l.Depth() != 2 {
		t.Fatalf("depth %d", l.Depth())
	}
	blocked := make(chan error, 1)
	go func() { blocked <- l.Append(event(2)) }()
	select {
	case err := <-blocked:
		t.Fatalf("Append on a full queue returned %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// Shutdown begins: the blocked Append returns at once, and Close says
	// what was not stored since the log never ran.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := l.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "2 records waiting") {
		t.Fatalf("Close: %v", err)
	}
	if err := <-blocked; !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("blocked Append: %v", err)
	}
}

// Run stops when its context ends, after storing what was queued.
func TestRunFlushesOnCancel(t *testing.T) {
	s := newStore(t)
	l := audit.New(s.js, s.stream, audit.Config{Logger: quiet()})
	appendN(t, l, 0, 300)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wantOK(t, s.verify(t), 300)
	if err := l.Append(event(0)); !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("Append after Run: %v", err)
	}
	if err := l.Close(ctxT(t)); err != nil {
		t.Fatalf("Close after Run: %v", err)
	}
}

// While JetStream cannot be reached, records wait; they are stored, in one
// whole chain, once it is back.
func TestWaitsForJetStream(t *testing.T) {
	s := newStore(t)
	nc := s.conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctxT(t), bus.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(js, st, audit.Config{Logger: quiet(), AckTimeout: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	appendN(t, l, 0, 5)
	for l.Stored() < 5 {
		time.Sleep(10 * time.Millisecond)
	}
	// Take the stream away for a moment (as a leader election would).
	cfg, err := s.stream.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.js.DeleteStream(ctxT(t), bus.StreamAudit); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 5, 5)
	time.Sleep(300 * time.Millisecond)
	if l.Stored() != 5 {
		t.Fatalf("stored %d without a stream", l.Stored())
	}
	if s.stream, err = s.js.CreateStream(ctxT(t), cfg.Config); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for l.Stored() < 10 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l.Stored() != 10 {
		t.Fatalf("stored %d after the stream came back", l.Stored())
	}
	res := s.verify(t)
	wantOK(t, res, 5)
	if res.StartN != 1 {
		t.Fatalf("new stream's chain starts at %d", res.StartN)
	}
}

func TestTail(t *testing.T) {
	s := newStore(t)
	l := s.newLog(t, "hub-a")
	appendN(t, l, 0, 30)
	for l.Stored() < 30 {
		time.Sleep(5 * time.Millisecond)
	}
	var ns []uint64
	if err := audit.Tail(ctxT(t), s.stream, 5, false, func(e audit.Entry) error {
		ns = append(ns, e.Record.N)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ns) != "[26 27 28 29 30]" {
		t.Fatalf("last 5: %v", ns)
	}
	// More than there are: all of them.
	ns = nil
	if err := audit.Tail(ctxT(t), s.stream, 100, false, func(e audit.Entry) error {
		ns = append(ns, e.Record.N)
		return nil
	}); err != nil || len(ns) != 30 || ns[0] != 1 {
		t.Fatalf("last 100: %v %v", ns, err)
	}

	// Following: the last one, then new ones as they are stored, until
	// the context ends.
	ctx, cancel := context.WithCancel(ctxT(t))
	got := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() {
		done <- audit.Tail(ctx, s.stream, 1, true, func(e audit.Entry) error {
			got <- e.Record.N
			return nil
		})
	}()
	for want := uint64(30); want <= 33; want++ {
		if want == 31 {
			appendN(t, l, 30, 3)
		}
		select {
		case n := <-got:
			if n != want {
				t.Fatalf("followed n %d, want %d", n, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("n %d not followed", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Tail ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Tail did not stop when its context ended")
	}
}
