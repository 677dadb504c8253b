package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/phx-exchange/phx/server/internal/natstest"
)

// openBus connects to url, reconnecting for ever, and opens the bus there.
func openBus(ctx context.Context, t *testing.T, url string) *Bus {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := New(ctx, nc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// feedConsumers lists the names of the feed consumers on stream.
func feedConsumers(ctx context.Context, t *testing.T, b *Bus, stream string) []string {
	t.Helper()
	var names []string
	l := b.streams[stream].ListConsumers(ctx)
	for ci := range l.Info() {
		if strings.HasPrefix(ci.Name, "phx_feed_") {
			names = append(names, ci.Name)
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestFeedRecreatesLostConsumer: when the consumer a feed reads through is
// lost (deleted, or gone with the server that held it in memory), the feed
// goes on from a new consumer: every message once, in order, nothing
// skipped, and the bus counts the recovery.
func TestFeedRecreatesLostConsumer(t *testing.T) {
	cases := []struct {
		name string
		lose func(ctx context.Context, t *testing.T, b *Bus, ns **natsserver.Server, restart func() *natsserver.Server)
	}{
		{"consumer deleted", func(ctx context.Context, t *testing.T, b *Bus, _ **natsserver.Server, _ func() *natsserver.Server) {
			names := feedConsumers(ctx, t, b, StreamRollouts)
			if len(names) != 1 {
				t.Fatalf("feed consumers %v, want one", names)
			}
			if err := b.js.DeleteConsumer(ctx, StreamRollouts, names[0]); err != nil {
				t.Fatal(err)
			}
		}},
		{"server restarted", func(_ context.Context, _ *testing.T, _ *Bus, ns **natsserver.Server, restart func() *natsserver.Server) {
			// In-memory consumers do not survive a restart; the stream
			// (file storage) does.
			(*ns).Shutdown()
			(*ns).WaitForShutdown()
			*ns = restart()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ns := natstest.Start(t, -1, dir)
			port := ns.Addr().(*net.TCPAddr).Port
			restart := func() *natsserver.Server { return natstest.Start(t, port, dir) }
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b := openBus(ctx, t, ns.ClientURL())
			publish := func(from, to int) {
				t.Helper()
				var msgs []Message
				for i := from; i < to; i++ {
					msgs = append(msgs, Message{Subject: "phx.v1.rollout.contoso.r", MsgID: fmt.Sprint("m", i), Data: fmt.Append(nil, i)})
				}
				for _, r := range b.PublishBatch(ctx, msgs) {
					if r.Err != nil {
						t.Fatal(r.Err)
					}
				}
			}
			publish(0, 50)

			fctx, fcancel := context.WithCancel(ctx)
			defer fcancel()
			out := make(chan FeedMsg)
			errc := make(chan error, 1)
			var req FeedRequest
			req.Read[FeedRollouts] = true
			go func() { errc <- b.Feed(fctx, req, Cursor{}, out) }()
			recv := func(want int) {
				t.Helper()
				select {
				case m := <-out:
					if string(m.Data) != fmt.Sprint(want) || m.Seq != uint64(want+1) {
						t.Fatalf("received %q at sequence %d, want %d at %d", m.Data, m.Seq, want, want+1)
					}
				case err := <-errc:
					t.Fatalf("feed ended before message %d: %v", want, err)
				case <-time.After(20 * time.Second):
					t.Fatalf("message %d not received", want)
				}
			}
			for i := range 30 {
				recv(i)
			}
			before, _, _ := b.FeedRecoveries()
			tc.lose(ctx, t, b, &ns, restart)
			publish(50, 100)
			for i := 30; i < 100; i++ {
				recv(i)
			}
			select {
			case m := <-out:
				t.Fatalf("unexpected message %q at %d", m.Data, m.Seq)
			case <-time.After(200 * time.Millisecond):
			}
			if after, _, gaveUp := b.FeedRecoveries(); after != before+1 || gaveUp != 0 {
				t.Fatalf("recoveries %d -> %d (gave up %d), want one more", before, after, gaveUp)
			}
			fcancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("feed ended with %v, want context.Canceled", err)
			}
			// Every consumer the feed made is gone with it.
			if names := feedConsumers(ctx, t, b, StreamRollouts); len(names) != 0 {
				t.Fatalf("feed consumers left behind: %v", names)
			}
		})
	}
}

// TestFeedGivesUp: a feed that cannot create its consumer again within
// FeedRecoverWithin ends with ErrNoAnswer, so its subscriber resumes
// elsewhere instead of waiting for ever.
func TestFeedGivesUp(t *testing.T) {
	defer func(d time.Duration) { FeedRecoverWithin = d }(FeedRecoverWithin)
	FeedRecoverWithin = time.Second
	ns := natstest.Start(t, -1, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBus(ctx, t, ns.ClientURL())
	out := make(chan FeedMsg)
	errc := make(chan error, 1)
	var req FeedRequest
	req.Read[FeedAdvisories] = true
	go func() { errc <- b.Feed(ctx, req, Cursor{}, out) }()
	for len(feedConsumers(ctx, t, b, StreamAdvisories)) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	// The stream goes: its consumer with it, and no new one can be made.
	lost := time.Now()
	if err := b.js.DeleteStream(ctx, StreamAdvisories); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNoAnswer) {
			t.Fatalf("feed ended with %v, want ErrNoAnswer", err)
		}
		t.Logf("gave up %v after the stream went: %v", time.Since(lost).Round(time.Millisecond), err)
	case <-time.After(30 * time.Second):
		t.Fatal("feed did not give up")
	}
	if _, _, gaveUp := b.FeedRecoveries(); gaveUp != 1 {
		t.Fatalf("gave up %d times, want 1", gaveUp)
	}
}
