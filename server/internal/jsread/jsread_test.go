package jsread_test

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
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phx-exchange/phx/server/internal/jsread"
	"github.com/phx-exchange/phx/server/internal/natstest"
)

// startJetStream starts one in-process nats-server with JetStream and
// returns a JetStream client connected to it.
func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	return connect(t, natstest.Start(t, -1, t.TempDir()).ClientURL())
}

func connect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// stream creates a stream of subjects "item.>" with replicas replicas.
func stream(ctx context.Context, t *testing.T, js jetstream.JetStream, replicas int) jetstream.Stream {
	t.Helper()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ITEMS", Subjects: []string{"item.>"}, Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func publish(ctx context.Context, t *testing.T, js jetstream.JetStream, subject, data string) uint64 {
	t.Helper()
	ack, err := js.Publish(ctx, subject, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// read collects what Read passes, as "subject=data".
func read(ctx context.Context, s jetstream.Stream, o jsread.Options, each func(n int)) ([]string, error) {
	var got []string
	err := jsread.Read(ctx, s, o, func(m jetstream.Msg, _ *jetstream.MsgMetadata) error {
		got = append(got, m.Subject()+"="+string(m.Data()))
		if each != nil {
			each(len(got))
		}
		return nil
	})
	return got, err
}

// consumers lists the consumers left on s.
func consumers(ctx context.Context, t *testing.T, s jetstream.Stream) []string {
	t.Helper()
	var names []string
	l := s.ConsumerNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

func TestRead(t *testing.T) {
	ctx := testCtx(t)
	js := startJetStream(t)
	s := stream(ctx, t, js, 1)
	var all, odd []string
	var third uint64
	for i := range 2*jsread.Batch + 10 {
		subj := fmt.Sprintf("item.%d.%s", i%2, "x")
		d := fmt.Sprint(i)
		seq := publish(ctx, t, js, subj, d)
		if i == 2 {
			third = seq
		}
		all = append(all, subj+"="+d)
		if i%2 == 1 {
			odd = append(odd, subj+"="+d)
		}
	}
	cases := []struct {
		name string
		o    jsread.Options
		want []string
	}{
		{"everything", jsread.Options{}, all},
		{"from a sequence", jsread.Options{From: third}, all[2:]},
		{"filtered", jsread.Options{Filter: []string{"item.1.>"}}, odd},
		{"up to a sequence", jsread.Options{From: third, Until: third + 2}, all[2:5]},
		{"filtered, up to a sequence past the last match", jsread.Options{Filter: []string{"item.1.>"}, Until: third + 2}, odd[:2]},
		{"from past the end", jsread.Options{From: 10_000}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := read(ctx, s, tc.o, nil)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("read %d messages, want %d:\n got %.200v\nwant %.200v", len(got), len(tc.want), got, tc.want)
			}
		})
	}
	if left := consumers(ctx, t, s); len(left) != 0 {
		t.Errorf("consumers left after the reads: %v", left)
	}
}

// TestReadLastPerSubject: more subjects than one pull brings, each written
// twice; each subject comes once, with its last revision, in stream order.
func TestReadLastPerSubject(t *testing.T) {
	ctx := testCtx(t)
	js := startJetStream(t)
	s := stream(ctx, t, js, 1)
	const n = 2*jsread.Batch + 44
	for rev := range 2 {
		for i := range n {
			publish(ctx, t, js, fmt.Sprintf("item.a.%04d", i), fmt.Sprint(rev))
		}
	}
	publish(ctx, t, js, "item.b", "x")
	for _, o := range []jsread.Options{
		{LastPerSubject: true, Filter: []string{"item.a.>"}},
		{LastPerSubject: true},
	} {
		got, err := read(ctx, s, o, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := n
		if len(o.Filter) == 0 {
			want++
		}
		if len(got) != want {
			t.Fatalf("%+v: %d messages, want %d: %.300v", o, len(got), want, got)
		}
		for i := range n {
			if w := fmt.Sprintf("item.a.%04d=1", i); got[i] != w {
				t.Fatalf("%+v: message %d is %s, want %s", o, i, got[i], w)
			}
		}
	}
}

// TestReadRecovers: the consumer is deleted, again and again, while it is
// read through; every message still comes once, in order.
func TestReadRecovers(t *testing.T) {
	ctx := testCtx(t)
	js := startJetStream(t)
	s := stream(ctx, t, js, 1)
	var want []string
	for i := range 3 * jsread.Batch {
		publish(ctx, t, js, "item.a", fmt.Sprint(i))
		want = append(want, fmt.Sprintf("item.a=%d", i))
	}
	for _, lastPer := range []bool{false, true} {
		deleted := 0
		got, err := read(ctx, s, jsread.Options{LastPerSubject: lastPer}, func(n int) {
			if n%100 != 1 {
				return
			}
			for _, c := range consumers(ctx, t, s) {
				if err := s.DeleteConsumer(ctx, c); err != nil {
					t.Error(err)
				}
				deleted++
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		w := want
		if lastPer {
			w = want[len(want)-1:]
		}
		if strings.Join(got, " ") != strings.Join(w, " ") {
			t.Fatalf("last per subject %v: read %d messages, want %d:\n got %.200v", lastPer, len(got), len(w), got)
		}
		if deleted == 0 {
			t.Fatalf("last per subject %v: no consumer was deleted", lastPer)
		}
	}
}

// TestReadFollows: with Follow, messages stored after the start come too,
// until the context ends.
func TestReadFollows(t *testing.T) {
	ctx := testCtx(t)
	js := startJetStream(t)
	s := stream(ctx, t, js, 1)
	publish(ctx, t, js, "item.a", "0")
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- jsread.Read(fctx, s, jsread.Options{Follow: true, Wait: 100 * time.Millisecond}, func(m jetstream.Msg, _ *jetstream.MsgMetadata) error {
			got <- string(m.Data())
			return nil
		})
	}()
	next := func() string {
		select {
		case d := <-got:
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("nothing came within 10 s")
			return ""
		}
	}
	if d := next(); d != "0" {
		t.Fatalf("first %q", d)
	}
	time.Sleep(300 * time.Millisecond) // a few empty pulls
	publish(ctx, t, js, "item.a", "1")
	if d := next(); d != "1" {
		t.Fatalf("second %q", d)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read ended with %v, want context.Canceled", err)
	}
}

// TestReadErrors: fn's error is returned as is; a stream that is gone is an
// error, not a hang.
func TestReadErrors(t *testing.T) {
	ctx := testCtx(t)
	js := startJetStream(t)
	s := stream(ctx, t, js, 1)
	for i := range 5 {
		publish(ctx, t, js, "item.a", fmt.Sprint(i))
	}
	stop := errors.New("stop")
	calls := 0
	err := jsread.Read(ctx, s, jsread.Options{}, func(jetstream.Msg, *jetstream.MsgMetadata) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Fatalf("Read = %v after %d calls, want fn's error after 1", err, calls)
	}
	err = jsread.Read(ctx, s, jsread.Options{Stall: 2 * time.Second}, func(jetstream.Msg, *jetstream.MsgMetadata) error {
		return js.DeleteStream(ctx, "ITEMS")
	})
	if err == nil {
		t.Fatal("Read of a stream deleted under it succeeded")
	}
	t.Logf("stream deleted during the read: %v", err)
}

// TestReadOnCluster reads streams with three replicas on a three-node
// cluster, many times, through a server that leads neither the stream nor
// the consumers: a pull to a consumer just created must not fail because its
// interest has not yet reached that server.
func TestReadOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	ctx := testCtx(t)
	urls := startCluster(t, 3)
	js := connect(t, urls[0])
	var s jetstream.Stream
	var err error
	for {
		if s, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "ITEMS", Subjects: []string{"item.>"}, Replicas: 3}); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("stream: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 300 {
		publish(ctx, t, js, fmt.Sprintf("item.%d", i%50), fmt.Sprint(i))
	}
	for i := range 40 {
		for _, o := range []jsread.Options{{}, {LastPerSubject: true}} {
			got, err := read(ctx, s, o, nil)
			if err != nil {
				t.Fatalf("read %d %+v: %v", i, o, err)
			}
			if want := map[bool]int{false: 300, true: 50}[o.LastPerSubject]; len(got) != want {
				t.Fatalf("read %d %+v: %d messages, want %d", i, o, len(got), want)
			}
		}
	}
}

// startCluster starts an in-process JetStream cluster of n servers on
// loopback and returns their client URLs once JetStream has a leader.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close() // free for the server; taken by another process first, start-up fails loudly
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var urls []string
	var servers []*natsserver.Server
	for i := range n {
		ns, err := natsserver.NewServer(&natsserver.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
			NoLog: true, NoSigs: true,
			Cluster: natsserver.ClusterOpts{Name: "c", Host: "127.0.0.1", Port: ports[i]},
			Routes:  natsserver.RoutesFromStr(strings.Join(routes, ",")),
		})
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(ns.Shutdown)
		servers = append(servers, ns)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, ns := range servers {
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		for !ns.JetStreamIsClustered() || ns.JetStreamIsLeader() == false && !hasLeader(servers) {
			if time.Now().After(deadline) {
				t.Fatal("the cluster elected no JetStream leader within 30 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		urls = append(urls, ns.ClientURL())
	}
	return urls
}

func hasLeader(servers []*natsserver.Server) bool {
	for _, ns := range servers {
		if ns.JetStreamIsLeader() {
			return true
		}
	}
	return false
}
