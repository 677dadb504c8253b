package cells_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/sdk/cells"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

func connect(t *testing.T, h *servertest.Hub, org string) *sdk.Client {
	t.Helper()
	c, err := sdk.New(h.Addr, sdk.WithCertFiles(h.PKI.CACert(), h.PKI.OrgCert(org), h.PKI.OrgKey(org)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// publishAll publishes cs and fails the test unless every cell has the
// outcome want. It may run on any goroutine.
func publishAll(t *testing.T, ctx context.Context, c *sdk.Client, cs []*phxv1.HealthSignal, want phxv1.SignalOutcome) {
	t.Helper()
	resp, err := c.PublishSignals(ctx, cs)
	if err != nil {
		t.Error(err)
		return
	}
	for _, r := range resp.GetResults() {
		if r.GetOutcome() != want {
			t.Errorf("%s: %v %v, want %v", describe(cs[r.GetIndex()]), r.GetOutcome(), sdk.ItemErr(r.GetError()), want)
		}
	}
	if len(resp.GetResults()) != len(cs) {
		t.Errorf("%d results for %d cells", len(resp.GetResults()), len(cs))
	}
}

// TestHubAcceptsCells publishes cells of every level to a real hub and
// checks that the hub accepts each one, and stores each once when they are
// published again.
func TestHubAcceptsCells(t *testing.T) {
	h := servertest.Start(t)
	c := connect(t, h, "contoso")
	ctx := context.Background()

	// Two five-minute windows that ended a while ago.
	start := time.Now().Truncate(5 * time.Minute).Add(-15 * time.Minute)
	clk := newClock(start)
	b := newBuilder(t, append(scenarioOpts, cells.WithClock(clk.Now), cells.WithAudience(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}))...)
	got, rep := scenario(t, b, clk, start)
	for l := range cells.NumLevels {
		if rep.Emitted[l].Cells == 0 {
			t.Fatalf("nothing emitted at %s", cells.Level(l))
		}
	}
	publishAll(t, ctx, c, got, phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED)
	publishAll(t, ctx, c, got, phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE)

	// The same observations in a builder with other keys: the same ids, so
	// the hub stores nothing twice.
	clk2 := newClock(start)
	b2 := newBuilder(t, append(scenarioOpts, cells.WithClock(clk2.Now), cells.WithAudience(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}))...)
	again, _ := scenario(t, b2, clk2, start)
	publishAll(t, ctx, c, again, phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE)
}

// simClock runs at the pace of real time from a settable point.
type simClock struct {
	mu         sync.Mutex
	real, then time.Time
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.then.Add(time.Since(c.real))
}

func (c *simClock) Set(t time.Time) {
	c.mu.Lock()
	c.real, c.then = time.Now(), t
	c.mu.Unlock()
}

// TestRun runs a builder's loop against a real hub: the first publish
// fails, and the next window publishes its cells again with the new ones;
// Run ends with its context.
func TestRun(t *testing.T) {
	h := servertest.Start(t)
	c := connect(t, h, "contoso")

	// The builder's clock runs 300 ms before the end of a minute in the
	// past, so that its windows close without waiting for real minutes and
	// the hub takes them.
	w0 := time.Now().Truncate(time.Minute).Add(-10 * time.Minute)
	clk := &simClock{}
	clk.Set(w0.Add(time.Minute - 300*time.Millisecond))

	var mu sync.Mutex
	var reports []cells.Report
	b := newBuilder(t, cells.WithClock(clk.Now), cells.WithLateness(0),
		cells.WithReportFunc(func(r cells.Report) { mu.Lock(); reports = append(reports, r); mu.Unlock() }))
	observeAll(t, b, fleet(w0.Add(10*time.Second), "dev", 60, 6, nil))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls [][]*phxv1.HealthSignal
	published := make(chan struct{})
	publish := func(ctx context.Context, cs []*phxv1.HealthSignal) error {
		calls = append(calls, cs)
		if len(calls) == 1 {
			// The next window closes 300 ms from now.
			clk.Set(w0.Add(2*time.Minute - 300*time.Millisecond))
			return errors.New("hub unreachable")
		}
		publishAll(t, ctx, c, cs, phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED)
		close(published)
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, publish) }()
	select {
	case <-published:
	case err := <-done:
		t.Fatalf("Run returned %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no publish within 30 s")
	}
	if err := b.Run(ctx, publish); err == nil {
		t.Error("a second Run on the same builder started")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}

	if len(calls) != 2 || len(calls[0]) != 1 || len(calls[1]) != 2 || calls[1][0] != calls[0][0] {
		t.Fatalf("publish calls %v", calls)
	}
	want := []string{
		"DE " + w0.Format("15:04") + "/60s 10.0.22631.3880 291.1 active=60 tenants=6",
		"DE " + w0.Add(time.Minute).Format("15:04") + "/60s 10.0.22631.3880 291.1 active=60 silent=60 tenants=6",
	}
	sameLines(t, "published", describeAll(calls[1]), want)
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 2 || reports[0].PublishErr == nil || reports[1].PublishErr != nil || reports[0].Cells() != 1 || reports[1].Cells() != 1 {
		t.Errorf("reports %v", reports)
	}
	if tr := b.Tracked(); tr.Unpublished != 0 {
		t.Errorf("%d cells left unpublished", tr.Unpublished)
	}
}

// TestFollowsHubPrivacy: against a hub with a stricter minimum cohort, a
// builder that follows WhoAmI emits only cells the hub accepts, while one
// with the default thresholds has cells refused with FailedPrecondition.
func TestFollowsHubPrivacy(t *testing.T) {
	h := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.KDevices, c.KTenants = 70, 6 }))
	c := connect(t, h, "contoso")
	ctx := context.Background()
	who, err := c.WhoAmI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Truncate(5 * time.Minute).Add(-15 * time.Minute)
	build := func(opts ...cells.Option) []*phxv1.HealthSignal {
		clk := newClock(start)
		b := newBuilder(t, append(append(scenarioOpts, cells.WithClock(clk.Now)), opts...)...)
		got, _ := scenario(t, b, clk, start)
		return got
	}
	following := build(cells.WithHubPrivacy(who.GetPrivacy()), cells.WithSource("following"))
	if len(following) == 0 {
		t.Fatal("nothing emitted")
	}
	publishAll(t, ctx, c, following, phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED)

	resp, err := c.PublishSignals(ctx, build(cells.WithSource("defaults")))
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, r := range resp.GetResults() {
		if r.GetOutcome() == phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED {
			if !errors.Is(sdk.ItemErr(r.GetError()), sdk.ErrFailedPrecondition) {
				t.Errorf("refused with %v, want FailedPrecondition", sdk.ItemErr(r.GetError()))
			}
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("the hub accepted every cell built for a looser minimum cohort")
	}
}
