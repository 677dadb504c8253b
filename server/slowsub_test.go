package server_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestStalledSubscriber: a subscriber that stops reading does not hold up
// the publisher or another subscriber, does not make the hub keep what it
// has not read, and is cut off with Aborted; resuming from its last cursor
// it receives everything, in order, once.
func TestStalledSubscriber(t *testing.T) {
	const (
		n           = 16000 // about 5.6 MB of stored envelopes, many HTTP/2 windows
		stalledSubs = 8
	)
	h := servertest.Start(t, servertest.WithMetrics(), servertest.WithConfig(func(c *server.Config) {
		c.FeedQueue, c.FeedStall = 16, 5*time.Second
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	health := &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}, Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}}

	// The stalled subscribers: each on a connection of its own with a small
	// window, and nobody calls Recv. Several, so that what the hub would
	// keep for them if it kept their unread items dwarfs what its store
	// caches of the same items.
	var stalled []grpc.ServerStreamingClient[phxv1.Envelope]
	for range stalledSubs {
		cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(h.ClientTLS(t, "fabrikam"))),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		st, err := phxv1.NewFeedServiceClient(cc).Subscribe(ctx, health)
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, st)
	}

	// A normal subscriber reads everything while a publisher publishes.
	// (Not subscribe's 20 s: under the race detector on a busy machine
	// publishing alone can take longer.)
	normal, err := as(t, h, "northwind").feed.Subscribe(ctx, health)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		ids []string
		err error
	}
	got := make(chan result, 1)
	go func() {
		var r result
		for len(r.ids) < n {
			env, err := normal.Recv()
			if err != nil {
				r.err = err
				break
			}
			if hs := env.GetHealthSignal(); hs != nil {
				r.ids = append(r.ids, hs.SignalId)
			}
		}
		got <- r
	}()
	pub := as(t, h, "contoso")
	var want []string
	publish := func(count int) {
		for range count / 500 {
			batch := cells("contoso-av", 500)
			want = append(want, ids(batch)...)
			res, err := pub.health.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: batch})
			if err != nil || res.Accepted != 500 {
				t.Fatalf("publish: %v (accepted %d)", err, res.GetAccepted())
			}
		}
	}
	// The hub's memory after the first half, when the stalled subscriber
	// has long filled its window and queue, and after the second: it must
	// not grow with what the subscriber leaves unread.
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // and what sync.Pools kept through the first
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	publish(n / 2)
	before := heap()
	publish(n / 2)
	after := heap()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("the normal subscriber, after %d items: %v", len(r.ids), r.err)
		}
		sameIDs(t, "the normal subscriber", r.ids, want)
	case <-ctx.Done():
		t.Fatal("the normal subscriber did not receive everything")
	}
	growth := int64(after) - int64(before)
	t.Logf("heap in use: %d KiB after %d items, %d KiB after %d (%+d KiB); the %d stalled subscribers have read none of them (cut off so far: %v)",
		before>>10, n/2, after>>10, n, growth>>10, stalledSubs, metric(t, h, "phx_feed_cut_off_total"))
	// The store caches the second half's 2.8 MB, in pooled buffers of 4,
	// then 8 MB; keeping the half for each stalled subscriber would take
	// 8 × 8000 messages and decoded envelopes more, some 70 MB.
	if growth > 24<<20 {
		t.Errorf("heap grew by %d KiB while %d subscribers stalled", growth>>10, stalledSubs)
	}

	eventually(t, "the stalled subscribers are cut off", func() error {
		if n := metric(t, h, "phx_feed_cut_off_total"); n != stalledSubs {
			return fmt.Errorf("%v cut off", n)
		}
		return nil
	})

	// Reading now, each gets what was sent before the cut-off, then the
	// status.
	var first []string
	last := ""
	for i, st := range stalled {
		var got []string
		for {
			env, err := st.Recv()
			if err != nil {
				st, _ := status.FromError(err)
				if st.Code() != codes.Aborted || !strings.Contains(st.Message(), "subscriber too slow") || !strings.Contains(st.Message(), "resume from cursor h") {
					t.Fatalf("stalled stream %d ended with %v, want Aborted: subscriber too slow; resume from cursor …", i, err)
				}
				t.Logf("stalled subscriber %d cut off after %d items: %s", i, len(got), st.Message())
				break
			}
			if i == 0 {
				last = env.Cursor
			}
			if hs := env.GetHealthSignal(); hs != nil {
				got = append(got, hs.SignalId)
			}
		}
		// Its window, the transport's write quota, its queue and the
		// consumer's read-ahead: a few hundred items, however many wait.
		if len(got) >= n/4 {
			t.Fatalf("stalled subscriber %d got %d of %d items before the cut-off", i, len(got), n)
		}
		sameIDs(t, "a stalled subscriber", got, want[:len(got)])
		if i == 0 {
			first = got
		}
	}
	// Resuming from its last cursor, it gets the rest.
	rest, err := as(t, h, "fabrikam").feed.Subscribe(ctx, &phxv1.SubscribeRequest{Kinds: health.Kinds, Start: &phxv1.SubscribeRequest_Cursor{Cursor: last}})
	if err != nil {
		t.Fatal(err)
	}
	all := slices.Clone(first)
	for len(all) < n {
		env, err := rest.Recv()
		if err != nil {
			t.Fatalf("after %d items: %v", len(all), err)
		}
		if hs := env.GetHealthSignal(); hs != nil {
			all = append(all, hs.SignalId)
		}
	}
	sameIDs(t, "the stalled subscriber, resumed", all, want)
}

// sameIDs compares two long lists of ids and reports the first difference.
func sameIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("%s: item %d is %s, want %s", what, i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d items, want %d", what, len(got), len(want))
	}
}
