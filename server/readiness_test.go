package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

// restartableNATS is one nats-server process with JetStream on a fixed
// loopback port and store directory, which a test can stop and start again.
type restartableNATS struct {
	t    *testing.T
	bin  string
	conf string
	URL  string
	cmd  *exec.Cmd
	log  *syncBuffer
}

func startRestartableNATS(t *testing.T) *restartableNATS {
	t.Helper()
	dir := t.TempDir()
	port := extFreePorts(t, 1)[0]
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("server_name: nats-1\nlisten: \"127.0.0.1:%d\"\njetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n",
		port, filepath.Join(dir, "jetstream"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &restartableNATS{t: t, bin: extNATSServerBin(t), conf: conf, URL: fmt.Sprintf("nats://127.0.0.1:%d", port), log: &syncBuffer{}}
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("--- nats-server output ---\n%s", n.log.String())
		}
	})
	n.Start()
	extWaitJetStream(t, n.URL, 1)
	return n
}

// Start starts the process (again).
func (n *restartableNATS) Start() {
	n.t.Helper()
	n.cmd = exec.Command(n.bin, "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
}

// Stop kills the process, as a crash would, and waits for it.
func (n *restartableNATS) Stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// httpStatus GETs url and returns the status code and body.
func httpStatus(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res.StatusCode, string(body), err
}

// wantHealth polls grpc.health.v1 Check for every service (and /readyz)
// until each reports want, and returns how long that took.
func wantHealth(t *testing.T, hc healthpb.HealthClient, readyz string, want healthpb.HealthCheckResponse_ServingStatus, services ...string) time.Duration {
	t.Helper()
	start := time.Now()
	wantHTTP := http.StatusOK
	if want != healthpb.HealthCheckResponse_SERVING {
		wantHTTP = http.StatusServiceUnavailable
	}
	eventually(t, "health "+want.String(), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, svc := range services {
			res, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				return fmt.Errorf("check %q: %w", svc, err)
			}
			if res.Status != want {
				return fmt.Errorf("service %q is %s", svc, res.Status)
			}
		}
		code, body, err := httpStatus(ctx, readyz)
		if err != nil {
			return err
		}
		if code != wantHTTP {
			return fmt.Errorf("/readyz answers %d %q", code, body)
		}
		return nil
	})
	return time.Since(start)
}

// TestReadinessFollowsNATS stops and restarts the external nats-server under
// a running hub and watches the hub's grpc.health.v1 status (over mTLS) and
// /readyz go NOT_SERVING and back to SERVING, then checks the hub takes
// calls again, and that shutting down reports NOT_SERVING to watchers.
func TestReadinessFollowsNATS(t *testing.T) {
	nats := startRestartableNATS(t)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", extFreePorts(t, 1)[0])
	h := servertest.Start(t, servertest.WithNATSURL(nats.URL, 1), servertest.WithConfig(func(c *server.Config) {
		c.MetricsListen = metricsAddr
		c.ReadinessInterval = 250 * time.Millisecond
	}))
	contoso := as(t, h, "contoso")
	hc := healthpb.NewHealthClient(contoso.cc)
	readyz := "http://" + metricsAddr + "/readyz"
	services := []string{"", "phx.v1.HealthService", "phx.v1.FeedService", "phx.v1.IncidentService"}

	wantHealth(t, hc, readyz, healthpb.HealthCheckResponse_SERVING, services...)
	if code, body, err := httpStatus(testCtx(t), "http://"+metricsAddr+"/livez"); err != nil || code != http.StatusOK {
		t.Fatalf("/livez: %d %q %v", code, body, err)
	}
	// An unknown service is NOT_FOUND, as grpc.health.v1 says.
	if _, err := hc.Check(testCtx(t), &healthpb.HealthCheckRequest{Service: "no.such.Service"}); !isCode(err, codes.NotFound) {
		t.Fatalf("unknown service: %v", err)
	}
	publish(t, contoso, cell("contoso-av"))

	nats.Stop()
	down := wantHealth(t, hc, readyz, healthpb.HealthCheckResponse_NOT_SERVING, services...)
	t.Logf("NOT_SERVING %s after nats-server was killed", down.Round(time.Millisecond))
	// Liveness does not follow NATS: a replica is not restarted for an
	// outage of the cluster.
	if code, _, err := httpStatus(testCtx(t), "http://"+metricsAddr+"/livez"); err != nil || code != http.StatusOK {
		t.Fatalf("/livez while NATS is down: %d %v", code, err)
	}

	nats.Start()
	up := wantHealth(t, hc, readyz, healthpb.HealthCheckResponse_SERVING, services...)
	t.Logf("SERVING %s after nats-server was started again", up.Round(time.Millisecond))
	eventually(t, "publish after NATS is back", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := contoso.health.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{cell("contoso-av")}})
		if err != nil {
			return err
		}
		if res.Accepted != 1 {
			return fmt.Errorf("%v", res.Results)
		}
		return nil
	})

	// Shutting down: a watcher sees NOT_SERVING before the hub drains.
	wctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: "phx.v1.FeedService"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := w.Recv(); err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", res, err)
	}
	stopped := make(chan struct{})
	go func() { h.Stop(); close(stopped) }()
	res, err := w.Recv()
	if err != nil || res.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch during shutdown: %v %v", res, err)
	}
	cancel() // let the graceful stop finish
	<-stopped
}

// TestReadinessEmbedded checks the default hub (embedded NATS) is SERVING
// for the hub and every phx.v1 service, and answers /readyz and /livez.
func TestReadinessEmbedded(t *testing.T) {
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", extFreePorts(t, 1)[0])
	h := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.MetricsListen = metricsAddr }))
	hc := healthpb.NewHealthClient(as(t, h, "fabrikam").cc)
	services := []string{"", "phx.v1.IdentityService", "phx.v1.HealthService", "phx.v1.RolloutService",
		"phx.v1.IncidentService", "phx.v1.FeedService", "phx.v1.TokenService", "phx.v1.AuditService"}
	for _, svc := range services {
		res, err := hc.Check(testCtx(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("service %q: %v %v", svc, res, err)
		}
	}
	for path, want := range map[string]int{"/readyz": 200, "/livez": 200} {
		code, body, err := httpStatus(testCtx(t), "http://"+metricsAddr+path)
		if err != nil || code != want {
			t.Errorf("%s: %d %q %v", path, code, body, err)
		}
	}
}
