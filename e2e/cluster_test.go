package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// The streams phxd creates (DESIGN.md section 7).
var phxStreams = []string{"PHX_HEALTH", "PHX_ROLLOUTS", "PHX_INCIDENTS", "PHX_ADVISORIES", "PHX_RECEIPTS", "PHX_AUDIT"}

// natsServerBin installs the pinned nats-server with the repository's own
// script (it does nothing when the binary is there already) and returns its
// path.
func natsServerBin(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(filepath.Join("..", "scripts", "install-nats-server"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/install-nats-server: %v\n%s", err, stderr.String())
	}
	path := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(path, '\n'); i >= 0 {
		path = path[i+1:]
	}
	return path
}

// loopbackPorts returns n distinct free TCP ports on 127.0.0.1.
func loopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	var ls []net.Listener
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// natsNode is one nats-server process of a cluster; start runs it again on
// the same configuration and store directory.
type natsNode struct {
	name    string
	bin     string
	conf    string
	monitor int
	cmd     *exec.Cmd
	log     *lines
}

func (n *natsNode) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(n.bin, "-c", n.conf)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", n.name, err)
	}
	n.cmd, n.log = cmd, newLines(pr)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
}

// phxdConns returns how many NATS connections named phxd the node serves.
func (n *natsNode) phxdConns() int {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/connz", n.monitor))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var cz struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if json.NewDecoder(resp.Body).Decode(&cz) != nil {
		return 0
	}
	c := 0
	for _, conn := range cz.Connections {
		if conn.Name == "phxd" {
			c++
		}
	}
	return c
}

// startNATSCluster starts a 3-node JetStream cluster on loopback, as
// deploy/nats/cluster.conf configures one in production (without TLS and
// accounts), and returns its nodes and the client URL of all of them.
func startNATSCluster(t *testing.T) ([]*natsNode, string) {
	t.Helper()
	bin := natsServerBin(t)
	dir := t.TempDir()
	ports := loopbackPorts(t, 9)
	var routes, urls []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+i]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	nodes := make([]*natsNode, 3)
	for i := range nodes {
		name := fmt.Sprintf("nats-%d", i+1)
		conf := fmt.Sprintf("server_name: %s\nlisten: \"127.0.0.1:%d\"\nhttp: \"127.0.0.1:%d\"\n"+
			"jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n"+
			"cluster {\n  name: phx-e2e\n  listen: \"127.0.0.1:%d\"\n  routes: [\n    %s\n  ]\n}\n",
			name, ports[i], ports[6+i], filepath.Join(dir, name, "jetstream"), ports[3+i], strings.Join(routes, "\n    "))
		confFile := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		nodes[i] = &natsNode{name: name, bin: bin, conf: confFile, monitor: ports[6+i]}
		nodes[i].start(t)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("--- %s (last lines) ---\n%s", n.name, tail(n.log.snapshot(), 40))
			}
		}
	})
	url := strings.Join(urls, ",")
	waitJetStream(t, url)
	return nodes, url
}

func tail(ls []string, n int) string {
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// waitJetStream waits until the cluster at url places a stream with 3 replicas.
func waitJetStream(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		last = func() error {
			nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name: "READY_PROBE", Subjects: []string{"ready.probe"}, Storage: jetstream.FileStorage, Replicas: 3,
			}); err != nil {
				return err
			}
			return js.DeleteStream(ctx, "READY_PROBE")
		}()
		if last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("JetStream at %s not ready with 3 replicas in 30s: %v", url, last)
}

// streamLeader returns the node leading stream name, retrying while an
// election runs.
func streamLeader(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) string {
	t.Helper()
	for {
		s, err := js.Stream(ctx, name)
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = s.Info(ctx); err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
				return info.Cluster.Leader
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no leader for %s: %v", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// moveLeader asks JetStream to make node the leader of stream name, and
// reports whether it is.
func moveLeader(ctx context.Context, t *testing.T, nc *nats.Conn, js jetstream.JetStream, name, node string) bool {
	t.Helper()
	for range 20 {
		if streamLeader(ctx, t, js, name) == node {
			return true
		}
		req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, node)
		nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+name, []byte(req), 2*time.Second)
		time.Sleep(250 * time.Millisecond)
	}
	return streamLeader(ctx, t, js, name) == node
}

// streamsCurrent reports whether every phx stream has 3 replicas, all
// current, and a leader.
func streamsCurrent(ctx context.Context, js jetstream.JetStream) error {
	for _, name := range phxStreams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
			return fmt.Errorf("%s: replicas %d, cluster %+v", name, info.Config.Replicas, info.Cluster)
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("%s: replica %s not current (lag %d, offline %v)", name, r.Name, r.Lag, r.Offline)
			}
		}
	}
	return nil
}

// pubCall is one PublishSignals call of the steady publisher.
type pubCall struct {
	first, last int
	start, end  time.Time
	outcome     string // ok, queued or err
	err         error
}

// pubLog records the publisher's calls.
type pubLog struct {
	mu    sync.Mutex
	calls []pubCall
}

func (p *pubLog) add(c pubCall) {
	p.mu.Lock()
	p.calls = append(p.calls, c)
	p.mu.Unlock()
}

func (p *pubLog) snapshot() []pubCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// waitOK waits until n calls started at or after since were acknowledged.
func (p *pubLog) waitOK(t *testing.T, since time.Time, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := 0
		for _, c := range p.snapshot() {
			if c.outcome == "ok" && !c.start.Before(since) {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			calls := p.snapshot()
			var lastCalls []string
			for _, c := range calls[max(0, len(calls)-10):] {
				lastCalls = append(lastCalls, fmt.Sprintf("%d-%d %s %v", c.first, c.last, c.outcome, c.err))
			}
			t.Fatalf("timed out waiting for %d acknowledged publishes %s, have %d; last calls:\n%s", n, what, got, strings.Join(lastCalls, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recovery describes the publisher around an event at time at: how long
// until the first call started after it was acknowledged, and the longest
// call that was running at it or started within 10 s after it.
func (p *pubLog) recovery(at time.Time) (firstOK, longest time.Duration) {
	firstOK = -1
	for _, c := range p.snapshot() {
		if c.outcome == "ok" && !c.start.Before(at) && (firstOK < 0 || c.end.Sub(at) < firstOK) {
			firstOK = c.end.Sub(at)
		}
		if c.end.After(at) && c.start.Before(at.Add(10*time.Second)) {
			longest = max(longest, c.end.Sub(c.start))
		}
	}
	return firstOK, longest
}

// arrived returns when the item id arrived (the zero time: not yet).
func (f *received) arrived(id string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := slices.Index(f.ids, id); i >= 0 {
		return f.at[i]
	}
	return time.Time{}
}

// firstAfter returns how long after at the first item arrived (-1: none yet).
func (f *received) firstAfter(at time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.at {
		if a.After(at) {
			return a.Sub(at)
		}
	}
	return -1
}

// The audience of the publisher's n-th signal, and who may see it.
// fabrikam is a vendor, national-cert a CERT (DESIGN.md section 5).
func clusterAudience(n int) (aud *phxv1.Audience, fabrikam, cert bool) {
	switch n % 4 {
	case 0:
		return &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}, true, true
	case 1:
		return &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}, true, false
	case 2:
		return &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam"}}, true, false
	default:
		return &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: []string{"national-cert"}}, false, true
	}
}

// TestClusterSurvivesNodeAndHubKills runs the hub past one machine: three
// nats-server processes in a JetStream cluster (streams and KV with 3
// replicas) and two phxd processes on it. contoso publishes health cells
// under steady load through the SDK with an outbox, given both hubs;
// fabrikam (a vendor, on hub A) and national-cert (a CERT, on hub B)
// follow the feed, each seeing a different part of a mix of audiences.
// Under that load the leader of PHX_HEALTH (a node serving a phxd) is
// killed with SIGKILL, then hub A is; then both come back, the node on its
// store directory. National-cert's subscription is closed and resumed from
// its cursor on the restarted hub. In the end every signal the SDK
// reported acknowledged or queued is stored exactly once, and each
// subscriber received every item of its audience, in order, once, and
// nothing else.
func TestClusterSurvivesNodeAndHubKills(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the cluster fault test (3 nats-server and 2 phxd processes killed under load, about 30 s)")
	}
	began := time.Now()
	nodes, natsURL := startNATSCluster(t)
	var rb [4]byte
	rand.Read(rb[:])
	prefix := "cl-" + hex.EncodeToString(rb[:])
	dataDir := t.TempDir()
	ports := loopbackPorts(t, 2)
	addrA, addrB := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	// Both hubs share the data dir's dev PKI, member registry and token
	// keys (A writes them, B finds them); their store is the cluster. Both
	// may run the detector, one at a time, through a short lease.
	hubArgs := func(addr string, extra ...string) []string {
		return append([]string{"--dev", "--data-dir", dataDir, "--listen", addr, "--metrics-listen", "127.0.0.1:0",
			"--nats-url", natsURL, "--nats-replicas", "3", "--detector-lease", "3s"}, extra...)
	}
	hubA := startPhxd(t, hubArgs(addrA)...)
	hubB := startPhxd(t, hubArgs(addrB)...)
	hubs := map[string]**hub{"A": &hubA, "B": &hubB}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"A", "B"} {
				t.Logf("--- phxd %s (last lines) ---\n%s", name, tail((*hubs[name]).stderr.snapshot(), 40))
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	pki := filepath.Join(dataDir, "pki")
	connect := func(org, target string, opts ...sdk.Option) *sdk.Client {
		c, err := sdk.New(target, append([]sdk.Option{
			sdk.WithCertFiles(filepath.Join(pki, "ca.crt"), filepath.Join(pki, org+".crt"), filepath.Join(pki, org+".key")),
			sdk.WithRetry(20, 50*time.Millisecond, 500*time.Millisecond),
		}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// A raw JetStream connection to watch leaders and replicas.
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// The subscribers: pick_first puts fabrikam on A and national-cert on
	// B; each moves to the other hub when its own goes away.
	req := func() *phxv1.SubscribeRequest {
		return &phxv1.SubscribeRequest{
			Kinds:            []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL},
			Publishers:       []string{"contoso"},
			Products:         []string{"contoso-av"},
			Start:            &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true},
			HeartbeatSeconds: 1,
		}
	}
	fab := connect("fabrikam", addrA+","+addrB)
	fabSub, err := fab.Subscribe(ctx, req())
	if err != nil {
		t.Fatal(err)
	}
	defer fabSub.Close()
	var fabGot, certGot received
	fabDone := fabGot.follow(fabSub)
	cert := connect("national-cert", addrB+","+addrA)
	certSub, err := cert.Subscribe(ctx, req())
	if err != nil {
		t.Fatal(err)
	}
	certDone := certGot.follow(certSub)

	// The publisher: the SDK with an outbox, given both hubs (A first).
	var refused []sdk.Refusal
	var refusedMu sync.Mutex
	pub := connect("contoso", addrA+","+addrB, sdk.WithOutbox(t.TempDir(), sdk.OutboxOnRefused(func(r sdk.Refusal) {
		refusedMu.Lock()
		refused = append(refused, r)
		refusedMu.Unlock()
	})))
	var calls pubLog
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		const batch = 10
		for n := 0; n < 1_000_000; {
			select {
			case <-stopPub:
				return
			default:
			}
			sigs := make([]*phxv1.HealthSignal, batch)
			for i := range sigs {
				sigs[i] = healthCell(signalID(prefix, n+i))
				sigs[i].Audience, _, _ = clusterAudience(n + i)
			}
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			c := pubCall{first: n, last: n + batch - 1, start: time.Now()}
			_, err := pub.PublishSignals(cctx, sigs)
			ccancel()
			c.end, c.err = time.Now(), err
			switch {
			case err == nil:
				c.outcome = "ok"
			case errors.Is(err, sdk.ErrQueued):
				c.outcome = "queued"
			case errors.Is(err, sdk.ErrOutboxFull):
				time.Sleep(50 * time.Millisecond)
				continue // the same batch again
			default:
				c.outcome = "err"
			}
			calls.add(c)
			n += batch
			time.Sleep(20 * time.Millisecond) // a steady load, not a flood
		}
	}()
	defer func() {
		select {
		case <-stopPub:
		default:
			close(stopPub)
		}
		<-pubDone
	}()

	// probe publishes one cell through one hub until it is acknowledged,
	// and returns how long after since that was. The id stays the same
	// across attempts, so it is stored once whatever the attempts did.
	var probes []string
	probe := func(name, addr, id string, since time.Time) time.Duration {
		t.Helper()
		c := connect("contoso", addr, sdk.WithRetry(1, 50*time.Millisecond, 50*time.Millisecond))
		defer c.Close()
		probes = append(probes, id)
		for {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			res, err := c.PublishSignals(pctx, []*phxv1.HealthSignal{healthCell(id)})
			pcancel()
			if err == nil && res.Accepted+res.Duplicates == 1 {
				return time.Since(since)
			}
			if ctx.Err() != nil {
				t.Fatalf("hub %s never acknowledged %s: %v", name, id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	calls.waitOK(t, began, 20, "before any kill")
	certWarm := time.Now()
	for certGot.firstAfter(certWarm) < 0 || fabGot.firstAfter(certWarm) < 0 {
		if ctx.Err() != nil {
			t.Fatal("the subscribers received nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// 1. A NATS node goes: the leader of PHX_HEALTH, made to be a node
	// that holds a feed's consumer and, if it can, serves a phxd's
	// connection.
	feedNodes := consumerNodes(ctx, js, "PHX_HEALTH", "contoso-av")
	score := func(n *natsNode) int {
		c := 0
		for _, node := range feedNodes {
			if node == n.name {
				c++
			}
		}
		return 100*min(c, 1) + 10*n.phxdConns() + c
	}
	victim := nodes[0]
	for _, n := range nodes {
		if score(n) > score(victim) {
			victim = n
		}
	}
	victimConns := victim.phxdConns()
	if !moveLeader(ctx, t, nc, js, "PHX_HEALTH", victim.name) {
		t.Logf("could not move the PHX_HEALTH leader to %s; killing it anyway", victim.name)
	}
	leaderBefore := streamLeader(ctx, t, js, "PHX_HEALTH")
	onVictim := 0
	for _, node := range feedNodes {
		if node == victim.name {
			onVictim++
		}
	}
	if onVictim == 0 {
		t.Fatalf("no subscriber's consumer of PHX_HEALTH on any node: %v", feedNodes)
	}
	reconnA := countLines(hubA, "nats reconnected")
	reconnB := countLines(hubB, "nats reconnected")
	natsKilled := time.Now()
	kill(t, victim.cmd)
	natsUsableA := probe("A", addrA, prefix+"-probe-nats-A", natsKilled)
	natsUsableB := probe("B", addrB, prefix+"-probe-nats-B", natsKilled)
	calls.waitOK(t, natsKilled, 20, "after the NATS node was killed")
	newLeader := streamLeader(ctx, t, js, "PHX_HEALTH")
	natsFirstOK, natsLongest := calls.recovery(natsKilled)
	reconnA, reconnB = countLines(hubA, "nats reconnected")-reconnA, countLines(hubB, "nats reconnected")-reconnB
	// Both feeds deliver again, each from its own hub, without anyone
	// resubscribing: a hub re-creates a feed's consumers lost with the
	// node. What they must deliver is the probe published through hub A
	// after the kill (TLP:GREEN, so in both audiences). The bound is the
	// hub's FeedRecoverWithin (30 s) with room for the subscriber to
	// resume if the hub gives up.
	const feedRecoverBound = 45 * time.Second
	probeAfterKill := prefix + "-probe-nats-A"
	for _, f := range []struct {
		name string
		got  *received
	}{{"fabrikam", &fabGot}, {"national-cert", &certGot}} {
		for f.got.arrived(probeAfterKill).IsZero() {
			if time.Since(natsKilled) > feedRecoverBound {
				t.Fatalf("%s did not receive %s within %v after NATS node %s was killed", f.name, probeAfterKill, feedRecoverBound, victim.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// 2. Hub A goes: the publisher and fabrikam move to B.
	hubKilled := time.Now()
	natsFabResumed := fabGot.arrived(probeAfterKill).Sub(natsKilled).Round(time.Millisecond)
	natsCertResumed := certGot.arrived(probeAfterKill).Sub(natsKilled).Round(time.Millisecond)
	// The subscribers' consumers that went with the node were re-created
	// by their hubs (the count may include the detector's).
	recoveredA, recoveredB := metric(hubA, "phx_feed_consumer_recoveries_total"), metric(hubB, "phx_feed_consumer_recoveries_total")
	if recoveredA+recoveredB < float64(onVictim) {
		t.Fatalf("%d feed consumers were on %s, but the hubs re-created %v and %v", onVictim, victim.name, recoveredA, recoveredB)
	}
	detectorOnA := metric(hubA, "phx_detector_leader") == 1
	kill(t, hubA.cmd)
	calls.waitOK(t, hubKilled, 20, "after hub A was killed")
	for fabGot.firstAfter(hubKilled) < 0 {
		if ctx.Err() != nil {
			t.Fatal("fabrikam received nothing after hub A was killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hubFirstOK, hubLongest := calls.recovery(hubKilled)
	fabResumed := fabGot.firstAfter(hubKilled)
	// The detector runs on B now, taken over from A if A held it.
	for metric(hubB, "phx_detector_leader") != 1 {
		if time.Since(hubKilled) > 30*time.Second {
			t.Fatalf("hub B did not run the detector within 30 s after hub A (holding it: %v) was killed", detectorOnA)
		}
		time.Sleep(50 * time.Millisecond)
	}
	detectorMoved := time.Since(hubKilled)

	// 3. Both come back: the node on its store directory, then the hub.
	natsRestarted := time.Now()
	victim.start(t)
	hubRestarted := time.Now()
	hubA = startPhxd(t, hubArgs(addrA)...)
	hubReady := time.Since(hubRestarted)
	hubUsable := probe("A", addrA, prefix+"-probe-hub-A", hubRestarted)
	var rejoined time.Duration
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		err := streamsCurrent(sctx, js)
		scancel()
		if err == nil {
			rejoined = time.Since(natsRestarted)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%s did not catch up: %v", victim.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// national-cert stops and resumes from its cursor, on the restarted hub.
	certSub.Close()
	<-certDone
	certCursor := certSub.Cursor()
	cert2 := connect("national-cert", addrA+","+addrB)
	r := req()
	r.Start = &phxv1.SubscribeRequest_Cursor{Cursor: certCursor}
	certSub2, err := cert2.Subscribe(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	defer certSub2.Close()
	certDone = certGot.follow(certSub2)
	calls.waitOK(t, time.Now(), 20, "after both came back")

	// 4. The load stops and the outbox drains.
	close(stopPub)
	<-pubDone
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	if err := pub.FlushOutbox(fctx); err != nil {
		t.Fatalf("FlushOutbox: %v", err)
	}
	fcancel()
	if n := pub.OutboxPending(); n != 0 {
		t.Fatalf("outbox holds %d entries after FlushOutbox", n)
	}
	stats := pub.OutboxStats()

	// A marker, visible to both, published last: once a subscriber has it,
	// it has had its chance at everything before it.
	marker := prefix + "-marker"
	probe("B", addrB, marker, time.Now())
	for _, s := range []struct {
		name string
		got  *received
		done chan error
	}{{"fabrikam", &fabGot, fabDone}, {"national-cert", &certGot, certDone}} {
		for !s.got.has(marker) {
			select {
			case err := <-s.done:
				t.Fatalf("%s's subscription ended: %v", s.name, err)
			case <-ctx.Done():
				t.Fatalf("%s did not receive the marker", s.name)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	// Everything the hub stored, replayed from the beginning as contoso
	// (a publisher sees all its own items).
	replay, err := connect("contoso", addrA).Subscribe(ctx, req())
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	stored := map[string]int{}
	var storedOrder []string
	for {
		env, err := replay.Recv()
		if err != nil {
			t.Fatal(err)
		}
		id := env.GetHealthSignal().GetSignalId()
		stored[id]++
		storedOrder = append(storedOrder, id)
		if id == marker {
			break
		}
	}
	// JetStream itself holds as many messages as there are distinct ids.
	info, err := js.Stream(ctx, "PHX_HEALTH")
	if err != nil {
		t.Fatal(err)
	}
	si, err := info.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if si.State.Msgs != uint64(len(stored)) {
		t.Errorf("PHX_HEALTH holds %d messages, the hub replayed %d distinct signals", si.State.Msgs, len(stored))
	}

	// Every signal reported acknowledged or queued is stored exactly once,
	// and nothing else was stored.
	reported := map[string]bool{marker: true}
	for _, p := range probes {
		reported[p] = true
	}
	var acked, queued, errs int
	for _, c := range calls.snapshot() {
		switch c.outcome {
		case "ok":
			acked += c.last - c.first + 1
		case "queued":
			queued += c.last - c.first + 1
		default:
			errs++
			t.Errorf("publish %d-%d: %v", c.first, c.last, c.err)
			continue
		}
		for n := c.first; n <= c.last; n++ {
			reported[signalID(prefix, n)] = true
		}
	}
	refusedMu.Lock()
	for _, r := range refused {
		t.Errorf("the hub refused spooled signal %s: %v", r.ID, r.Err)
	}
	refusedMu.Unlock()
	duplicates, missing := 0, 0
	for id := range reported {
		switch n := stored[id]; {
		case n == 0:
			missing++
			t.Errorf("%s reported but not stored", id)
		case n > 1:
			duplicates += n - 1
			t.Errorf("%s stored %d times", id, n)
		}
	}
	for id, n := range stored {
		if !reported[id] {
			t.Errorf("%s stored %d times but never reported", id, n)
		}
	}

	// Each subscriber got every stored item of its audience once, in the
	// hub's order, and nothing else.
	type subResult struct {
		name                           string
		want, got, dups, missing, leak int
	}
	check := func(name string, f *received, sees func(n int) bool) subResult {
		f.mu.Lock()
		defer f.mu.Unlock()
		res := subResult{name: name, got: len(f.ids)}
		count := map[string]int{}
		for i, id := range f.ids {
			count[id]++
			if i > 0 && f.seqs[i] <= f.seqs[i-1] {
				t.Errorf("%s: item %d (%s) at h%d after h%d", name, i, id, f.seqs[i], f.seqs[i-1])
			}
		}
		for _, id := range storedOrder {
			visible := true // probes and the marker are TLP:GREEN
			if num, err := strconv.Atoi(strings.TrimPrefix(id, prefix+"-")); err == nil {
				visible = sees(num)
			}
			switch {
			case visible && count[id] == 0:
				res.missing++
				t.Errorf("%s did not receive %s", name, id)
			case visible && count[id] > 1:
				res.dups += count[id] - 1
				t.Errorf("%s received %s %d times", name, id, count[id])
			case !visible && count[id] > 0:
				res.leak++
				t.Errorf("%s received %s, outside its audience", name, id)
			}
			if visible {
				res.want++
			}
		}
		for id := range count {
			if stored[id] == 0 {
				t.Errorf("%s received %s, which the hub does not hold", name, id)
			}
		}
		return res
	}
	fabRes := check("fabrikam", &fabGot, func(n int) bool { _, f, _ := clusterAudience(n); return f })
	certRes := check("national-cert", &certGot, func(n int) bool { _, _, c := clusterAudience(n); return c })

	t.Logf("published %d signals in %d calls: %d acknowledged, %d queued and later flushed (outbox: %d acknowledged entries, %d refused), %d failed calls; %d probes and a marker",
		acked+queued, len(calls.snapshot()), acked, queued, stats.Acknowledged, stats.Refused, errs, len(probes)-1)
	t.Logf("stored %d distinct signals (PHX_HEALTH holds %d messages): duplicates=%d missing=%d", len(stored), si.State.Msgs, duplicates, missing)
	for _, r := range []subResult{fabRes, certRes} {
		t.Logf("%s received %d of %d in its audience: duplicates=%d missing=%d outside its audience=%d", r.name, r.got, r.want, r.dups, r.missing, r.leak)
	}
	t.Logf("NATS node %s (PHX_HEALTH leader %s, serving %d phxd connections) killed: PHX_HEALTH leader now %s; hub A acknowledged again after %v, hub B after %v; the publisher's first call after the kill acknowledged in %v, its longest call around it %v; the probe published through A after the kill reached fabrikam (on A) %v after the kill, national-cert (on B) after %v; NATS reconnects: hub A %d, hub B %d; subscribers' consumers of PHX_HEALTH on the node: %d, re-created: hub A %v, hub B %v",
		victim.name, leaderBefore, victimConns, newLeader, natsUsableA.Round(time.Millisecond), natsUsableB.Round(time.Millisecond),
		natsFirstOK.Round(time.Millisecond), natsLongest.Round(time.Millisecond),
		natsFabResumed, natsCertResumed, reconnA, reconnB, onVictim, recoveredA, recoveredB)
	t.Logf("hub A killed: the publisher (failing over to B) acknowledged again after %v, its longest call around it %v; fabrikam received again after %v; the detector (on A: %v) ran on B after %v",
		hubFirstOK.Round(time.Millisecond), hubLongest.Round(time.Millisecond), fabResumed.Round(time.Millisecond), detectorOnA, detectorMoved.Round(time.Millisecond))
	t.Logf("restarts: hub A ready %v after start and acknowledging after %v; %s back with every stream current after %v; national-cert resumed on hub A from %s; %v in all",
		hubReady.Round(time.Millisecond), hubUsable.Round(time.Millisecond), victim.name, rejoined.Round(time.Millisecond), certCursor, time.Since(began).Round(time.Millisecond))
}

// countLines counts the lines of h's log that contain s.
func countLines(h *hub, s string) int {
	n := 0
	for _, l := range h.stderr.snapshot() {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// metric reads one unlabelled counter or gauge from h's /metrics (the
// address phxd logs when --metrics-listen is given); -1 when it cannot.
func metric(h *hub, name string) float64 {
	var addr string
	for _, l := range h.stderr.snapshot() {
		if i := strings.Index(l, "msg=metrics listen="); i >= 0 {
			addr = strings.Fields(l[i+len("msg=metrics listen="):])[0]
		}
	}
	if addr == "" {
		return -1
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	for l := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	return -1
}

// consumerNodes returns, for the feed consumers of stream whose filter
// names product (the subscribers' feeds, not the detector's), the node
// each runs on, by name.
func consumerNodes(ctx context.Context, js jetstream.JetStream, stream, product string) map[string]string {
	nodes := map[string]string{}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nodes
	}
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		filters := strings.Join(append(ci.Config.FilterSubjects, ci.Config.FilterSubject), " ")
		if ci.Cluster != nil && strings.HasPrefix(ci.Name, "phx_feed_") && strings.Contains(filters, "."+product) {
			nodes[ci.Name] = ci.Cluster.Leader
		}
	}
	return nodes
}
