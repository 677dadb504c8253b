package server_test

// Tests of the hub against an external NATS JetStream deployment: real
// nats-server processes (the pinned binary that scripts/install-nats-server
// puts in .bin/nats-server) on loopback, as phxd --nats-url uses them.
//
// Without the binary these tests skip, unless CI is set: then they fail, so a
// CI run can never pass without exercising the external path.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phx-exchange/phx/internal/tlsutil"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

// extStreams are the streams every hub creates (DESIGN.md section 7).
var extStreams = []string{"PHX_HEALTH", "PHX_ROLLOUTS", "PHX_INCIDENTS", "PHX_ADVISORIES", "PHX_RECEIPTS", "PHX_AUDIT"}

// extModuleRoot returns the directory of go.mod above the test's directory.
func extModuleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("module root (go.mod) not found above the test's directory")
		}
		dir = parent
	}
}

// extNATSServerBin returns the path of the pinned nats-server binary, or
// skips the test (fails it when CI is set) if it is not installed.
func extNATSServerBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(extModuleRoot(t), ".bin", "nats-server")
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("nats-server not installed at %s (%v): run scripts/install-nats-server", bin, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this test may not be skipped")
		}
		t.Skip(msg)
	}
	return bin
}

// extFreePorts returns n distinct free TCP ports on 127.0.0.1. They are
// released before use, so another process could in principle take one first;
// the servers' start-up then fails loudly rather than silently.
func extFreePorts(t *testing.T, n int) []int {
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

// extNATSNode is one nats-server process.
type extNATSNode struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
}

// syncBuffer collects a process's output for failure reports.
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

// extStartNATS starts n nats-server processes with JetStream on loopback
// (n == 1: a single server; n > 1: one cluster with routes on 127.0.0.1),
// waits until JetStream takes streams with n replicas, and returns the
// client URL listing every node. The processes are killed when the test ends.
func extStartNATS(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	ports := extFreePorts(t, 2*n)
	clientPorts, routePorts := ports[:n], ports[n:]
	var routes, urls, confs []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
	}
	for i := range n {
		name := fmt.Sprintf("nats-%d", i+1)
		conf := fmt.Sprintf("server_name: %s\nlisten: \"127.0.0.1:%d\"\n"+
			"jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n",
			name, clientPorts[i], filepath.Join(dir, name, "jetstream"))
		if n > 1 {
			conf += fmt.Sprintf("cluster {\n  name: phx-test\n  listen: \"127.0.0.1:%d\"\n  routes: [\n    %s\n  ]\n}\n",
				routePorts[i], strings.Join(routes, "\n    "))
		}
		confs = append(confs, conf)
	}
	url := strings.Join(urls, ",")
	extRunNATS(t, dir, confs, nil)
	extWaitJetStream(t, url, n)
	return url
}

// extRunNATS starts one nats-server process per configuration, with env
// added to its environment (each gets PHX_NATS_NAME=nats-<i> too), and kills
// them when the test ends, showing their output if it failed.
func extRunNATS(t *testing.T, dir string, confs []string, env []string) {
	t.Helper()
	bin := extNATSServerBin(t)
	nodes := make([]*extNATSNode, len(confs))
	t.Cleanup(func() {
		for _, nd := range nodes {
			if nd == nil {
				continue
			}
			_ = nd.cmd.Process.Kill()
			_ = nd.cmd.Wait()
			if t.Failed() {
				t.Logf("--- %s output ---\n%s", nd.name, nd.log.String())
			}
		}
	})
	for i, conf := range confs {
		name := fmt.Sprintf("nats-%d", i+1)
		confFile := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		nd := &extNATSNode{name: name, log: &syncBuffer{}}
		nd.cmd = exec.Command(bin, "-c", confFile)
		nd.cmd.Env = append(append(os.Environ(), "PHX_NATS_NAME="+name), env...)
		nd.cmd.Stdout, nd.cmd.Stderr = nd.log, nd.log
		if err := nd.cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		nodes[i] = nd
	}
}

// extWaitJetStream waits until the deployment at url elects a JetStream meta
// leader and can place a file stream with the given replicas.
func extWaitJetStream(t *testing.T, url string, replicas int, opts ...nats.Option) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		last = func() error {
			nc, err := nats.Connect(url, append([]nats.Option{nats.Timeout(2 * time.Second)}, opts...)...)
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
			if _, err := js.AccountInfo(ctx); err != nil {
				return err
			}
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name: "READY_PROBE", Subjects: []string{"ready.probe"}, Storage: jetstream.FileStorage, Replicas: replicas,
			}); err != nil {
				return err
			}
			return js.DeleteStream(ctx, "READY_PROBE")
		}()
		if last == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("JetStream at %s not ready with %d replicas in 60s: %v", url, replicas, last)
}

// extJetStream opens a raw JetStream connection to url, closed when the test ends.
func extJetStream(t *testing.T, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
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

// extCheckStreams checks that every phx stream exists with the given
// replicas, all of them current, and returns the infos by name.
func extCheckStreams(ctx context.Context, t *testing.T, js jetstream.JetStream, replicas int) map[string]*jetstream.StreamInfo {
	t.Helper()
	infos := map[string]*jetstream.StreamInfo{}
	for _, name := range extStreams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s info: %v", name, err)
		}
		if info.Config.Replicas != replicas {
			t.Errorf("stream %s: %d replicas, want %d", name, info.Config.Replicas, replicas)
		}
		if replicas > 1 {
			if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != replicas-1 {
				t.Errorf("stream %s: cluster info %+v, want a leader and %d peers", name, info.Cluster, replicas-1)
			}
		}
		infos[name] = info
	}
	return infos
}

// extPublish publishes signals, a rollout and an incident as contoso through
// hub h and returns the incident's id.
func extPublish(ctx context.Context, t *testing.T, h *servertest.Hub, prefix string, signals int) string {
	t.Helper()
	cc := dial(t, h, "contoso")
	var batch []*phxv1.HealthSignal
	for i := range signals {
		batch = append(batch, signal(fmt.Sprintf("%s-%d", prefix, i)))
	}
	hs := phxv1.NewHealthServiceClient(cc)
	res, err := hs.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: batch})
	if err != nil {
		t.Fatalf("PublishSignals: %v", err)
	}
	if res.Accepted != uint32(signals) || res.Rejected != 0 {
		t.Fatalf("PublishSignals: accepted %d rejected %d, want %d/0: %v", res.Accepted, res.Rejected, signals, res.Results)
	}
	// A retry of the whole call is de-duplicated by JetStream (Nats-Msg-Id)
	// and answered with the original cursors.
	again, err := hs.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: batch})
	if err != nil {
		t.Fatalf("PublishSignals (retry): %v", err)
	}
	if again.Duplicates != uint32(signals) {
		t.Fatalf("PublishSignals (retry): accepted %d duplicates %d rejected %d, want %d duplicates: %v",
			again.Accepted, again.Duplicates, again.Rejected, signals, again.Results)
	}
	for i, r := range again.Results {
		if r.Cursor != res.Results[i].Cursor {
			t.Errorf("PublishSignals (retry): item %d cursor %q, first stored at %q", i, r.Cursor, res.Results[i].Cursor)
		}
	}
	ro, err := phxv1.NewRolloutServiceClient(cc).AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{
		RequestId: prefix + "-announce",
		Rollout: &phxv1.Rollout{
			RolloutId: prefix + "-rollout", Product: "contoso-av", ContentChannel: "channel-291", ContentVersion: "291.1",
			CurrentRing: phxv1.Ring_RING_CANARY, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER},
		},
	})
	if err != nil {
		t.Fatalf("AnnounceRollout: %v", err)
	}
	if ro.GetRollout().GetRevision() != 1 {
		t.Fatalf("AnnounceRollout: revision %d, want 1", ro.GetRollout().GetRevision())
	}
	inc, err := phxv1.NewIncidentServiceClient(cc).ReportIncident(ctx, &phxv1.ReportIncidentRequest{
		RequestId: prefix + "-report",
		Incident: &phxv1.Incident{
			Title: "Boot loop after channel 291 (" + prefix + ")", Severity: phxv1.Severity_SEVERITY_CRITICAL,
			Affected: []*phxv1.Affected{{Product: "contoso-av", ContentVersion: "291.1"}},
			Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
		},
	})
	if err != nil {
		t.Fatalf("ReportIncident: %v", err)
	}
	if inc.GetIncident().GetId() == "" {
		t.Fatal("ReportIncident: no id")
	}
	return inc.GetIncident().GetId()
}

// extGetIncident reads an incident as fabrikam through hub h.
func extGetIncident(ctx context.Context, t *testing.T, h *servertest.Hub, id string) *phxv1.Incident {
	t.Helper()
	g, err := phxv1.NewIncidentServiceClient(dial(t, h, "fabrikam")).GetIncident(ctx, &phxv1.GetIncidentRequest{Id: id})
	if err != nil {
		t.Fatalf("GetIncident %s on %s: %v", id, h.Addr, err)
	}
	return g.GetIncident()
}

func TestExternalNATSCluster(t *testing.T) {
	url := extStartNATS(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	a := servertest.Start(t, servertest.WithNATSURL(url, 3))
	incID := extPublish(ctx, t, a, "cluster", 20)

	js := extJetStream(t, url)
	infos := extCheckStreams(ctx, t, js, 3)
	if got := infos["PHX_HEALTH"].State.Msgs; got != 20 {
		t.Errorf("PHX_HEALTH holds %d messages, want 20", got)
	}
	for _, name := range []string{"PHX_ROLLOUTS", "PHX_INCIDENTS"} {
		if infos[name].State.Msgs == 0 {
			t.Errorf("%s is empty after publishing through the hub", name)
		}
	}

	// A second hub replica on the same cluster, with the same dev PKI.
	b := servertest.Start(t, servertest.WithNATSURL(url, 3), servertest.WithDataDir(a.DataDir))
	if got := extGetIncident(ctx, t, b, incID); got.GetTitle() != "Boot loop after channel 291 (cluster)" {
		t.Fatalf("hub B: incident %s has title %q", incID, got.GetTitle())
	}
	fabB := dial(t, b, "fabrikam")
	ro, err := phxv1.NewRolloutServiceClient(fabB).GetRollout(ctx, &phxv1.GetRolloutRequest{RolloutId: "cluster-rollout"})
	if err != nil || ro.GetRollout().GetRevision() != 1 {
		t.Fatalf("hub B: GetRollout: %v %v", ro, err)
	}

	// Live fan-out across replicas: subscribe on B, publish on A.
	subCtx, stopSub := context.WithCancel(ctx)
	sub, err := phxv1.NewFeedServiceClient(fabB).Subscribe(subCtx, &phxv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if hb, err := sub.Recv(); err != nil || hb.Kind != phxv1.Kind_KIND_HEARTBEAT {
		t.Fatalf("hub B: first envelope %v %v, want a heartbeat", hb, err)
	}
	res, err := phxv1.NewHealthServiceClient(dial(t, a, "contoso")).PublishSignals(ctx,
		&phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{signal("cluster-live")}})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("hub A: PublishSignals: %v %v", res, err)
	}
	recvDeadline := time.AfterFunc(30*time.Second, stopSub)
	for {
		env, err := sub.Recv()
		if err != nil {
			t.Fatalf("hub B: no live envelope for the signal published on hub A: %v", err)
		}
		if env.GetHealthSignal().GetSignalId() == "cluster-live" {
			if env.Publisher != "contoso" || env.Cursor == "" {
				t.Errorf("hub B: envelope publisher %q cursor %q", env.Publisher, env.Cursor)
			}
			break
		}
	}
	recvDeadline.Stop()
	stopSub()

	// Restarting a hub re-creates a missing stream and puts back its own
	// settings on a changed one; the data stays.
	if err := js.DeleteStream(ctx, "PHX_ADVISORIES"); err != nil {
		t.Fatal(err)
	}
	changed := infos["PHX_AUDIT"].Config
	changed.Description = "changed by hand"
	if _, err := js.UpdateStream(ctx, changed); err != nil {
		t.Fatal(err)
	}
	a.Restart(t)
	after := extCheckStreams(ctx, t, js, 3)
	if got, want := after["PHX_AUDIT"].Config.Description, infos["PHX_AUDIT"].Config.Description; got != want {
		t.Errorf("after restart: PHX_AUDIT description %q, want the hub's %q", got, want)
	}
	if got := after["PHX_HEALTH"].State.Msgs; got != 21 {
		t.Errorf("after restart: PHX_HEALTH holds %d messages, want 21", got)
	}
	if got := extGetIncident(ctx, t, a, incID); got.GetId() != incID {
		t.Fatalf("after restart: GetIncident %s returned %q", incID, got.GetId())
	}
	// A hub restarted once more changes nothing: same streams, same items.
	a.Restart(t)
	again := extCheckStreams(ctx, t, js, 3)
	for _, name := range []string{"PHX_HEALTH", "PHX_ROLLOUTS", "PHX_INCIDENTS"} {
		if again[name].State.Msgs != after[name].State.Msgs {
			t.Errorf("second restart: %s holds %d messages, had %d", name, again[name].State.Msgs, after[name].State.Msgs)
		}
	}
}

func TestExternalNATSSingleServer(t *testing.T) {
	url := extStartNATS(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	h := servertest.Start(t, servertest.WithNATSURL(url, 1))
	incID := extPublish(ctx, t, h, "single", 5)
	js := extJetStream(t, url)
	infos := extCheckStreams(ctx, t, js, 1)
	if got := infos["PHX_HEALTH"].State.Msgs; got != 5 {
		t.Errorf("PHX_HEALTH holds %d messages, want 5", got)
	}
	if got := extGetIncident(ctx, t, h, incID); got.GetTitle() != "Boot loop after channel 291 (single)" {
		t.Fatalf("incident %s has title %q", incID, got.GetTitle())
	}

	h.Restart(t)
	after := extCheckStreams(ctx, t, js, 1)
	for _, name := range []string{"PHX_HEALTH", "PHX_ROLLOUTS", "PHX_INCIDENTS"} {
		if after[name].State.Msgs != infos[name].State.Msgs {
			t.Errorf("after restart: %s holds %d messages, had %d", name, after[name].State.Msgs, infos[name].State.Msgs)
		}
	}
	if got := extGetIncident(ctx, t, h, incID); got.GetId() != incID {
		t.Fatalf("after restart: GetIncident %s returned %q", incID, got.GetId())
	}
	// The stored rollout survives too and is still at revision 1.
	ro, err := phxv1.NewRolloutServiceClient(dial(t, h, "fabrikam")).GetRollout(ctx, &phxv1.GetRolloutRequest{RolloutId: "single-rollout"})
	if err != nil || ro.GetRollout().GetRevision() != 1 {
		t.Fatalf("after restart: GetRollout: %v %v", ro, err)
	}
}

// TestDeployClusterConf runs deploy/nats/cluster.conf as shipped, with only
// host names, ports and file locations moved to loopback and a temporary
// directory: three nodes with TLS on clients and mutually authenticated TLS
// routes, phxd's user and password, and a hub using it with 3 replicas.
func TestDeployClusterConf(t *testing.T) {
	bin := extNATSServerBin(t)
	tmpl, err := os.ReadFile(filepath.Join(extModuleRoot(t), "deploy", "nats", "cluster.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("phx nats test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueServer([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(dir, "tls")
	if err := tlsutil.WritePair(filepath.Join(tlsDir, "node.crt"), filepath.Join(tlsDir, "node.key"), certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(tlsDir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	const password = "test-Pa55word"
	env := []string{"PHX_NATS_PASSWORD=" + password}
	// The template must be valid as it stands (nats-server -t).
	check := exec.Command(bin, "-t", "-c", extWrite(t, filepath.Join(dir, "check.conf"),
		strings.ReplaceAll(string(tmpl), "/etc/nats/tls/", tlsDir+"/")))
	check.Env = append(os.Environ(), append(env, "PHX_NATS_NAME=nats-1")...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("nats-server -t: %v\n%s", err, out)
	}

	ports := extFreePorts(t, 9)
	var confs, urls []string
	for i := range 3 {
		r := []string{
			"/etc/nats/tls/", tlsDir + "/",
			"/var/lib/nats/jetstream", filepath.Join(dir, fmt.Sprintf("n%d", i+1), "jetstream"),
			"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", ports[i]),
			"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			"127.0.0.1:8222", fmt.Sprintf("127.0.0.1:%d", ports[6+i]),
			"max_file_store: 200GB", "max_file_store: 1GB",
		}
		for k := range 3 {
			r = append(r, fmt.Sprintf("nats-%d.phx.internal:6222", k+1), fmt.Sprintf("127.0.0.1:%d", ports[3+k]))
		}
		for j := 0; j < len(r); j += 2 {
			if !bytes.Contains(tmpl, []byte(r[j])) {
				t.Fatalf("deploy/nats/cluster.conf no longer contains %q: update this test", r[j])
			}
		}
		confs = append(confs, strings.NewReplacer(r...).Replace(string(tmpl)))
		urls = append(urls, fmt.Sprintf("tls://phxd:%s@127.0.0.1:%d", password, ports[i]))
	}
	extRunNATS(t, dir, confs, env)
	url := strings.Join(urls, ",")
	roots := nats.RootCAs(caFile)
	extWaitJetStream(t, url, 3, roots)

	// Without the password nobody gets in.
	nc, err := nats.Connect(fmt.Sprintf("tls://127.0.0.1:%d", ports[0]), roots, nats.Timeout(2*time.Second))
	if err == nil {
		nc.Close()
		t.Error("connected to the client port without a password")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("connecting without a password: %v, want %v", err, nats.ErrAuthorization)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := servertest.Start(t, servertest.WithNATSURL(url, 3), servertest.WithConfig(func(c *server.Config) {
		c.NATSOptions = append(c.NATSOptions, roots)
	}))
	incID := extPublish(ctx, t, h, "deploy", 5)
	infos := extCheckStreams(ctx, t, extJetStream(t, url, roots), 3)
	if got := infos["PHX_HEALTH"].State.Msgs; got != 5 {
		t.Errorf("PHX_HEALTH holds %d messages, want 5", got)
	}
	if got := extGetIncident(ctx, t, h, incID); got.GetId() != incID {
		t.Fatalf("GetIncident %s returned %q", incID, got.GetId())
	}
}

func extWrite(t *testing.T, name, content string) string {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}
