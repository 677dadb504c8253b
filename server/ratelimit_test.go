package server_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/pki"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

// wantRateLimited checks that err is ResourceExhausted with a RetryInfo
// detail and a message that names the org and its limit.
func wantRateLimited(t *testing.T, err error, org, limit string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("err = %v, want ResourceExhausted", err)
	}
	if want := "org " + org + " is limited to " + limit; !strings.Contains(st.Message(), want) {
		t.Errorf("message %q does not say %q", st.Message(), want)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri
		}
	}
	if retry == nil || retry.RetryDelay.AsDuration() <= 0 {
		t.Errorf("no RetryInfo with a delay in %v", st.Details())
	}
}

func TestRateLimits(t *testing.T) {
	// Slow refills: a refused call stays refused for seconds, far longer
	// than the test takes to look.
	h := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.RateSignals = members.Rate{PerSecond: 10, Burst: 1000}
		c.RateWrites = members.Rate{PerSecond: 0.1, Burst: 2}
		c.RateReads = members.Rate{PerSecond: 0.1, Burst: 3}
	}))
	contoso, fabrikam := as(t, h, "contoso"), as(t, h, "fabrikam")
	tests := []struct {
		name   string
		call   func(c *clients, org string) error
		passes int    // calls of one org that pass before the limit
		limit  string // as the message names it
	}{
		{"signals", func(c *clients, org string) error {
			product := map[string]string{"contoso": "contoso-av", "fabrikam": "fabrikam-edr"}[org]
			_, err := c.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: cells(product, 1000)})
			return err
		}, 1, "10 signals/s (burst 1000)"},
		{"writes", func(c *clients, org string) error {
			_, err := c.incident.Acknowledge(testCtx(t), &phxv1.AcknowledgeRequest{Id: "INC-0000000000"})
			if isCode(err, codes.NotFound) {
				return nil // past the limit: the hub looked
			}
			return err
		}, 2, "0.1 calls/s (burst 2)"},
		{"reads", func(c *clients, org string) error {
			_, err := c.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
			return err
		}, 3, "0.1 calls/s (burst 3)"},
		// After "reads": contoso has no read left, fabrikam two.
		{"subscribe spends reads", func(c *clients, org string) error {
			st, err := c.feed.Subscribe(testCtx(t), &phxv1.SubscribeRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, 0, "0.1 calls/s (burst 3)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.passes {
				if err := tt.call(contoso, "contoso"); err != nil {
					t.Fatalf("call %d: %v", i+1, err)
				}
			}
			wantRateLimited(t, tt.call(contoso, "contoso"), "contoso", tt.limit)
			// Another org has a bucket of its own.
			if err := tt.call(fabrikam, "fabrikam"); err != nil {
				t.Fatalf("fabrikam: %v", err)
			}
		})
	}
}

func TestRateLimitOverride(t *testing.T) {
	h := servertest.Start(t)
	reg := members.File{TrustDomain: pki.DevTrustDomain, Members: slices.Clone(pki.DevMembers)}
	for i, m := range reg.Members {
		if m.Org == "northwind" {
			reg.Members[i].Limits = &members.Limits{Reads: &members.Rate{PerSecond: 0.01, Burst: 1}}
		}
	}
	if err := members.Write(h.PKI.Members(), reg); err != nil {
		t.Fatal(err)
	}
	northwind, fabrikam := as(t, h, "northwind"), as(t, h, "fabrikam")
	var last error
	eventually(t, "northwind's own limit applies", func() error {
		_, last = northwind.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
		if !isCode(last, codes.ResourceExhausted) {
			return fmt.Errorf("whoami: %v", last)
		}
		return nil
	})
	wantRateLimited(t, last, "northwind", "0.01 calls/s (burst 1)")
	for range 5 {
		if _, err := fabrikam.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{}); err != nil {
			t.Fatalf("fabrikam keeps the hub's limit: %v", err)
		}
	}
}

// TestSDKRetriesRateLimited publishes more signals than the burst through
// the SDK: the hub refuses batches with RetryInfo, the SDK waits as told,
// and every signal is stored.
func TestSDKRetriesRateLimited(t *testing.T) {
	h := servertest.Start(t, servertest.WithMetrics(), servertest.WithConfig(func(c *server.Config) {
		c.RateSignals = members.Rate{PerSecond: 200, Burst: 1000}
	}))
	c, err := sdk.New(h.Addr, sdk.WithTLSConfig(h.ClientTLS(t, "contoso")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// The second batch waits five seconds for its tokens.
	res, err := c.PublishSignals(testCtx(t), cells("contoso-av", 2000))
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 2000 {
		t.Fatalf("accepted %d of 2000", res.Accepted)
	}
	if n := metric(t, h, `phx_rate_limited_total{class="signals"}`); n < 1 {
		t.Fatalf("the hub refused no batch (phx_rate_limited_total %v): the test proves nothing", n)
	}
}

// metric returns the value of one series of the hub's metrics (0 when it
// is absent).
func metric(t *testing.T, h *servertest.Hub, series string) float64 {
	t.Helper()
	return scrape(t, h.MetricsAddr)[series]
}
