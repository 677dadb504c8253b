package bus

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phx-exchange/phx/server/internal/natstest"
)

// silencer is a TCP proxy to a NATS server that can stop passing what the
// server sends: requests still arrive, answers never come back, as when a
// cluster drops the requests of a stream whose leader it has just lost.
type silencer struct {
	addr   string
	silent atomic.Bool
}

func newSilencer(t *testing.T, target string) *silencer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &silencer{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); u.Close() })
			go io.Copy(u, c)
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := u.Read(buf)
					if n > 0 && !s.silent.Load() {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

// TestUnansweredRequestsAreBounded: when JetStream stops answering, every
// request the bus makes for a call fails with ErrNoAnswer after
// RequestTimeout, although the call's own deadline is far away.
func TestUnansweredRequestsAreBounded(t *testing.T) {
	ns := natstest.Start(t, -1, t.TempDir())
	proxy := newSilencer(t, ns.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBus(ctx, t, "nats://"+proxy.addr)
	const subj = "phx.v1.rollout.contoso.r1"
	stored := b.PublishBatch(ctx, []Message{{Subject: subj, MsgID: "m1", Data: []byte("{}")}})
	if stored[0].Err != nil {
		t.Fatal(stored[0].Err)
	}

	defer func(d time.Duration) { RequestTimeout = d }(RequestTimeout)
	RequestTimeout = 200 * time.Millisecond
	proxy.silent.Store(true)
	calls := []struct {
		name string
		call func() error
	}{
		{"ResolveStart", func() error { _, err := b.ResolveStart(ctx, FeedRequest{Start: StartBeginning}); return err }},
		{"PublishBatch", func() error {
			return b.PublishBatch(ctx, []Message{{Subject: "phx.v1.health.contoso.p", MsgID: "m2", Data: []byte("{}")}})[0].Err
		}},
		{"PublishExpect", func() error {
			_, err := b.PublishExpect(ctx, Message{Subject: subj, MsgID: "m3", Data: []byte("{}")}, subj, stored[0].Seq)
			return err
		}},
		{"Last", func() error { _, err := b.Last(ctx, StreamRollouts, subj); return err }},
		{"Get", func() error { _, err := b.Get(ctx, StreamRollouts, stored[0].Seq); return err }},
		{"NextForSubject", func() error { _, err := b.NextForSubject(ctx, StreamRollouts, subj, 1); return err }},
		{"LastPerSubject", func() error {
			return b.LastPerSubject(ctx, StreamRollouts, "phx.v1.rollout.>", func(*StoredMsg) error { return nil })
		}},
	}
	for _, c := range calls {
		start := time.Now()
		err := c.call()
		took := time.Since(start)
		if !errors.Is(err, ErrNoAnswer) {
			t.Errorf("%s: %v, want ErrNoAnswer", c.name, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v reads as the caller's deadline", c.name, err)
		}
		if took > 3*time.Second {
			t.Errorf("%s took %v with JetStream silent, want about %v", c.name, took, RequestTimeout)
		}
	}
}
