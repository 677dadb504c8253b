package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

// cutDialer dials NATS for one hub and can cut it off: close its
// connections and refuse new ones, as if its machine had died or been
// partitioned away, until healed.
type cutDialer struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (d *cutDialer) Dial(network, address string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		return nil, errors.New("cut off")
	}
	c, err := (&net.Dialer{Timeout: 2 * time.Second}).Dial(network, address)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *cutDialer) setCut(cut bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = cut
	if cut {
		for _, c := range d.conns {
			c.Close()
		}
		d.conns = nil
	}
}

// leaseReplica is a hub on the shared cluster, with what a test watches.
type leaseReplica struct {
	name    string
	h       *servertest.Hub
	metrics string
	dial    *cutDialer
	log     *syncBuffer
}

func (r *leaseReplica) leading(t *testing.T) bool {
	return scrape(t, r.metrics)["phx_detector_leader"] == 1
}

// waitLeader waits until exactly one replica leads and it is not except.
func waitLeader(t *testing.T, within time.Duration, rs []*leaseReplica, except *leaseReplica) *leaseReplica {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var lead []*leaseReplica
		for _, r := range rs {
			if r.leading(t) {
				lead = append(lead, r)
			}
		}
		if len(lead) == 1 && lead[0] != except {
			return lead[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no single detector leader within %s", within)
	return nil
}

// waitLog waits until r has logged a line containing all of parts.
func (r *leaseReplica) waitLog(t *testing.T, within time.Duration, parts ...string) string {
	t.Helper()
	return r.waitLogN(t, within, 1, parts...)
}

// waitLogN waits until r has logged n lines containing all of parts, and
// returns the nth.
func (r *leaseReplica) waitLogN(t *testing.T, within time.Duration, n int, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if lines := r.logged(parts...); len(lines) >= n {
			return lines[n-1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not log %q %d times within %s", r.name, parts, n, within)
	return ""
}

// logged returns the lines r logged that contain all of parts.
func (r *leaseReplica) logged(parts ...string) []string {
	var out []string
lines:
	for _, l := range strings.Split(r.log.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue lines
			}
		}
		out = append(out, l)
	}
	return out
}

// logTime is the time of a text log line.
func logTime(t *testing.T, line string) time.Time {
	t.Helper()
	v, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	return at
}

// waitStateCovers waits until the detector's stored state has read every
// health cell stored so far.
func waitStateCovers(t *testing.T, url string) {
	t.Helper()
	ctx := testCtx(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "PHX_HEALTH")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "phx_detector")
	if err != nil {
		t.Fatal(err)
	}
	for {
		var saved struct {
			Cursor []uint64 `json:"cursor"`
		}
		if e, err := kv.Get(ctx, "state"); err == nil {
			if err := json.Unmarshal(e.Value(), &saved); err != nil {
				t.Fatal(err)
			}
			if len(saved.Cursor) > 0 && saved.Cursor[0] >= info.State.LastSeq {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the detector's state does not cover PHX_HEALTH up to %d", info.State.LastSeq)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nextAdvisoryFor reads f until an advisory about rollout id.
func nextAdvisoryFor(f *feed, id string) *phxv1.Advisory {
	for {
		if a := f.next().GetAdvisory(); a.GetRolloutId() == id {
			return a
		}
	}
}

// TestDetectorLeaseFailover: two hubs on a 3-node JetStream cluster. One
// runs the detector and raises the advisory about a boot loop once. Cut
// off from NATS, it stops its detector, and the other hub takes over within
// the lease time, from the state the first stored: a second boot loop
// later on raises its advisory, the first is not raised again. Back on the
// network, the first hub waits as a candidate.
func TestDetectorLeaseFailover(t *testing.T) {
	url := extStartNATS(t, 3)
	const ttl, renew = 3 * time.Second, time.Second
	ports := extFreePorts(t, 2)
	var rs []*leaseReplica
	for i, name := range []string{"a", "b"} {
		r := &leaseReplica{name: name, metrics: fmt.Sprintf("127.0.0.1:%d", ports[i]), dial: &cutDialer{}, log: &syncBuffer{}}
		opts := []servertest.Option{servertest.WithNATSURL(url, 3),
			servertest.WithLogger(slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))),
			servertest.WithConfig(func(c *server.Config) {
				c.MetricsListen = r.metrics
				c.DetectorLeaseTTL, c.DetectorRenewInterval = ttl, renew
				c.NATSOptions = append(c.NATSOptions, nats.SetCustomDialer(r.dial), nats.ReconnectWait(200*time.Millisecond))
			})}
		if i > 0 {
			opts = append(opts, servertest.WithDataDir(rs[0].h.DataDir))
		}
		r.h = servertest.Start(t, opts...)
		rs = append(rs, r)
	}
	defer func() {
		if t.Failed() {
			for _, r := range rs {
				t.Logf("--- hub %s ---\n%s", r.name, r.log.String())
			}
		}
	}()

	first := waitLeader(t, 10*time.Second, rs, nil)
	other := rs[0]
	if other == first {
		other = rs[1]
	}
	t.Logf("hub %s runs the detector", first.name)

	// A boot loop: one advisory.
	contoso := as(t, other.h, "contoso")
	feed1 := open(t, contoso, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ADVISORY}})
	ro1 := &phxv1.Rollout{RolloutId: uniq("r-lease-1"), Product: "contoso-av", ContentChannel: "channel-291",
		ContentVersion: "291.2", PreviousVersion: "291.1", State: phxv1.RolloutState_ROLLOUT_ACTIVE,
		CurrentRing: phxv1.Ring_RING_CANARY, PercentDeployed: 1, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}}
	announce(t, contoso, ro1)
	start := time.Now().Truncate(time.Minute).Add(-16 * time.Minute)
	publishBootLoop(t, other.h, ro1, start, "fleet-1")
	adv1 := nextAdvisoryFor(feed1, ro1.RolloutId)
	feed1.close()
	t.Logf("advisory %s about %s", adv1.Id, ro1.RolloutId)

	waitStateCovers(t, url)

	// Cut the leader off: it stops, the other takes over. (The cut-off
	// hub's /metrics waits for JetStream, so only the other is watched.)
	// The other must be a candidate already, watching the lease: a hub
	// whose start was slow begins counting the lease time only when it
	// first sees the lease.
	other.waitLog(t, 30*time.Second, "detector lease held by another replica")
	cutAt := time.Now()
	first.dial.setCut(true)
	second := waitLeader(t, ttl+10*time.Second, []*leaseReplica{other}, nil)
	failover := time.Since(cutAt)
	t.Logf("hub %s cut off; hub %s took over after %s (lease time %s, renewal every %s)",
		first.name, second.name, failover.Round(time.Millisecond), ttl, renew)
	if failover > ttl+renew+time.Second {
		t.Errorf("take-over took %s, want about the lease time %s", failover, ttl)
	}
	// The cut-off hub stopped its detector before the other started its.
	lost, acquired := logTime(t, first.waitLog(t, 5*time.Second, "detector lease lost")),
		logTime(t, second.waitLog(t, 5*time.Second, "detector lease acquired"))
	if !lost.Before(acquired) {
		t.Errorf("hub %s stopped its detector at %s, hub %s took the lease at %s", first.name, lost, second.name, acquired)
	}
	// It resumed from the stored state, not from the beginning.
	if l := second.waitLog(t, 10*time.Second, "detector started"); strings.Contains(l, "cursor=h0.r0.") {
		t.Errorf("the new holder started from the beginning: %s", l)
	}

	// A second boot loop, later: the new holder raises it.
	feed2 := open(t, contoso, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ADVISORY}})
	ro2 := &phxv1.Rollout{RolloutId: uniq("r-lease-2"), Product: "contoso-av", ContentChannel: "channel-292",
		ContentVersion: "292.2", PreviousVersion: "292.1", State: phxv1.RolloutState_ROLLOUT_ACTIVE,
		CurrentRing: phxv1.Ring_RING_CANARY, PercentDeployed: 1, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}}
	announce(t, contoso, ro2)
	publishBootLoop(t, other.h, ro2, start.Add(8*time.Minute), "fleet-2")
	adv2 := nextAdvisoryFor(feed2, ro2.RolloutId)
	feed2.close()
	t.Logf("advisory %s about %s", adv2.Id, ro2.RolloutId)

	// Back on the network, the first hub finds the lease held.
	// It watches the lease key again once NATS answers, so that it sees
	// a release at once.
	watched := len(first.logged("detector lease watched"))
	first.dial.setCut(false)
	first.waitLog(t, 10*time.Second, "detector lease held by another replica")
	first.waitLogN(t, 10*time.Second, watched+1, "detector lease watched")
	if first.leading(t) || !second.leading(t) {
		t.Fatalf("after healing: %s leads %v, %s leads %v", first.name, first.leading(t), second.name, second.leading(t))
	}

	// Each finding was stored once.
	all := open(t, as(t, second.h, "microsoft"), &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ADVISORY},
		Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}}).until(
		func(e *phxv1.Envelope) string { return e.GetAdvisory().GetId() }, adv2.Id)
	seen := map[string]string{}
	for _, e := range all {
		a := e.GetAdvisory()
		k := a.GetKind().String() + " " + a.GetRolloutId()
		if prev, ok := seen[k]; ok {
			t.Errorf("%s raised twice: %s and %s", k, prev, a.GetId())
		}
		seen[k] = a.GetId()
	}
	if seen[adv1.Kind.String()+" "+ro1.RolloutId] != adv1.Id {
		t.Errorf("advisories stored: %v", seen)
	}

	// The holder shuts down: it releases the lease, and the first hub
	// (watching the key since NATS came back) takes over at once, from
	// the stored state.
	stopAt := time.Now()
	second.h.Stop()
	waitLeader(t, renew/2, []*leaseReplica{first}, nil)
	t.Logf("hub %s stopped; hub %s took over after %s", second.name, first.name, time.Since(stopAt).Round(time.Millisecond))
	var starts []string
	for deadline := time.Now().Add(5 * time.Second); len(starts) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		starts = starts[:0]
		for _, l := range strings.Split(first.log.String(), "\n") {
			if strings.Contains(l, "detector started") {
				starts = append(starts, l)
			}
		}
	}
	if len(starts) != 2 || strings.Contains(starts[1], "cursor=h0.r0.") {
		t.Errorf("the first hub's detector starts: %q", starts)
	}
}
