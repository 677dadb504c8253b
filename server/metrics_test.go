package server_test

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

// scrape reads the hub's /metrics into a map from series (name and labels,
// as exposed: labels sorted by name) to value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", res.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMetricsAfterTraffic drives publishes, refusals and a slow subscriber
// through a real hub and checks what its /metrics endpoint shows.
func TestMetricsAfterTraffic(t *testing.T) {
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", extFreePorts(t, 1)[0])
	h := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.MetricsListen = metricsAddr }))
	ctx := testCtx(t)
	contoso := as(t, h, "contoso")

	// 2,000 accepted cells, one retried (duplicate), three refused: under
	// the minimum cohort, not contoso's product, and no product version.
	const n = 2000
	all := cells("contoso-av", n)
	publish(t, contoso, all[:1000]...)
	publish(t, contoso, all[1000:]...)
	small, foreign, bad := cell("contoso-av"), cell("fabrikam-edr"), cell("contoso-av")
	small.DevicesExposed, small.DevicesSilent, small.DistinctTenants = 10, 0, 5
	bad.ProductVersion = ""
	res, err := contoso.health.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{all[0], small, foreign, bad}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicates != 1 || res.Rejected != 3 {
		t.Fatalf("mixed batch: %v", res.Results)
	}
	// A rollout, an update with a stale revision, a CERT trying to publish.
	ro, err := contoso.rollouts.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: rollout(uniq("m"), "contoso-av", green())})
	if err != nil {
		t.Fatal(err)
	}
	_, err = contoso.rollouts.UpdateRollout(ctx, &phxv1.UpdateRolloutRequest{
		RolloutId: ro.GetRollout().GetRolloutId(), ExpectedRevision: 7, Rollout: &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}},
	})
	if !isCode(err, codes.FailedPrecondition) {
		t.Fatalf("stale update: %v", err)
	}
	_, err = as(t, h, "national-cert").rollouts.AnnounceRollout(ctx, &phxv1.AnnounceRolloutRequest{Rollout: rollout(uniq("m"), "contoso-av", green())})
	if !isCode(err, codes.PermissionDenied) {
		t.Fatalf("CERT announcing: %v", err)
	}

	// A subscriber that reads from the beginning but does not keep up: a
	// fixed 64 KiB window makes the hub wait for it after a few hundred
	// envelopes.
	cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(h.ClientTLS(t, "fabrikam"))),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	slow := open(t, newClients(cc), &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}, Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})

	lagMax := `phx_feed_lag_max_messages{stream="PHX_HEALTH"}`
	lagSum := `phx_feed_lag_messages{stream="PHX_HEALTH"}`
	var m map[string]float64
	eventually(t, "the slow subscriber's lag shows", func() error {
		m = scrape(t, metricsAddr)
		if m[lagMax] < n/2 {
			return fmt.Errorf("%s = %v", lagMax, m[lagMax])
		}
		return nil
	})
	t.Logf("stalled subscriber: %s %v, %s %v", lagMax, m[lagMax], lagSum, m[lagSum])
	if m[lagMax] >= n || m[lagSum] != m[lagMax] {
		t.Errorf("lag: max %v, sum %v; want under %d and equal (one subscriber)", m[lagMax], m[lagSum], n)
	}

	want := map[string]float64{
		`phx_items_published_total{kind="KIND_HEALTH_SIGNAL",outcome="accepted"}`:                             n,
		`phx_items_published_total{kind="KIND_HEALTH_SIGNAL",outcome="duplicate"}`:                            1,
		`phx_items_published_total{kind="KIND_ROLLOUT",outcome="accepted"}`:                                   1,
		`phx_items_rejected_total{code="FailedPrecondition",kind="KIND_HEALTH_SIGNAL",reason="k_devices"}`:    1,
		`phx_items_rejected_total{code="PermissionDenied",kind="KIND_HEALTH_SIGNAL",reason="product"}`:        1,
		`phx_items_rejected_total{code="InvalidArgument",kind="KIND_HEALTH_SIGNAL",reason="product_version"}`: 1,
		`phx_items_rejected_total{code="FailedPrecondition",kind="KIND_ROLLOUT",reason="expected_revision"}`:  1,
		`phx_items_rejected_total{code="PermissionDenied",kind="KIND_ROLLOUT",reason="role"}`:                 1,
		`phx_signals_total{outcome="accepted"}`:                                                               n,
		`phx_jetstream_stream_messages{stream="PHX_HEALTH"}`:                                                  n,
		`phx_jetstream_stream_last_sequence{stream="PHX_HEALTH"}`:                                             n,
		`phx_jetstream_stream_messages{stream="PHX_ROLLOUTS"}`:                                                1,
		`phx_jetstream_stream_current_replicas{stream="PHX_HEALTH"}`:                                          1,
		`phx_jetstream_scrape_ok`: 1,
		`phx_ready`:               1,
		`phx_feed_subscribers`:    1,
		`phx_grpc_requests_total{code="PermissionDenied",method="/phx.v1.RolloutService/AnnounceRollout"}`: 1,
		`phx_grpc_requests_total{code="OK",method="/phx.v1.HealthService/PublishSignals"}`:                 3,
		`phx_grpc_requests_total{code="FailedPrecondition",method="/phx.v1.RolloutService/UpdateRollout"}`: 1,
		`phx_nats_reconnects_total`:                                                                                  0,
		`phx_feed_lag_max_messages{stream="PHX_INCIDENTS"}`:                                                          0,
		`phx_jetstream_stream_replica_lag_max{stream="PHX_HEALTH"}`:                                                  0,
		`phx_items_rejected_total{code="InvalidArgument",kind="KIND_HEALTH_SIGNAL",reason="top_failures[].devices"}`: 0,
	}
	for series, v := range want {
		if got, ok := m[series]; (!ok && v != 0) || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
	for _, series := range []string{`phx_jetstream_stream_bytes{stream="PHX_HEALTH"}`, `phx_jetstream_stream_consumers{stream="PHX_HEALTH"}`, `phx_detector_lag_seconds`} {
		if _, ok := m[series]; !ok {
			t.Errorf("%s missing", series)
		}
	}
	if b := m[`phx_jetstream_stream_bytes{stream="PHX_HEALTH"}`]; b < n*100 {
		t.Errorf("PHX_HEALTH holds %v bytes for %d cells", b, n)
	}
	// The subscriber and the detector read PHX_HEALTH.
	if c := m[`phx_jetstream_stream_consumers{stream="PHX_HEALTH"}`]; c < 2 {
		t.Errorf("PHX_HEALTH has %v consumers, want the subscriber's and the detector's", c)
	}

	// Once the subscriber has read everything, its lag is 0 and every cell
	// counts as delivered.
	slow.items(n)
	eventually(t, "lag back to 0", func() error {
		m = scrape(t, metricsAddr)
		if m[lagMax] != 0 {
			return fmt.Errorf("%s = %v", lagMax, m[lagMax])
		}
		return nil
	})
	if d := m[`phx_feed_delivered_total{kind="KIND_HEALTH_SIGNAL"}`]; d != n {
		t.Errorf("delivered %v health cells, want %d", d, n)
	}
	slow.close()
	eventually(t, "subscriber gone", func() error {
		if s := scrape(t, metricsAddr)[`phx_feed_subscribers`]; s != 0 {
			return fmt.Errorf("phx_feed_subscribers = %v", s)
		}
		return nil
	})
}
