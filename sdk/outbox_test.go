package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/server/servertest"
)

// fastRetry makes a client give up on an absent hub after two quick
// attempts, so that calls return ErrQueued at once.
var fastRetry = sdk.WithRetry(2, 10*time.Millisecond, 50*time.Millisecond)

// spoolFiles lists the pending request files of an outbox directory.
func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.req"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// stored returns how often each signal id with prefix is stored on h: it
// replays h's health feed from the beginning up to a marker cell published
// after everything else.
func stored(t *testing.T, h *servertest.Hub, prefix string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := client(t, h, "contoso")
	marker := "marker-" + unique()
	if _, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell(marker)}); err != nil {
		t.Fatal(err)
	}
	sub, err := c.Subscribe(ctx, &phxv1.SubscribeRequest{
		Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL},
		Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := map[string]int{}
	for {
		env, err := sub.Recv()
		if err != nil {
			t.Fatal(err)
		}
		id := env.GetHealthSignal().GetSignalId()
		if id == marker {
			return got
		}
		if strings.HasPrefix(id, prefix) {
			got[id]++
		}
	}
}

// loseAnswers passes calls to the hub and then reports them as failed with
// Unavailable, as if the connection broke after the hub stored them.
func loseAnswers(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
		return err
	}
	return status.Error(codes.Unavailable, "connection lost before the answer")
}

func TestOutboxAcknowledged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := client(t, hub, "contoso", sdk.WithOutbox(dir))
	run := unique()
	signals := make([]*phxv1.HealthSignal, sdk.MaxBatch+5)
	for i := range signals {
		signals[i] = cell(fmt.Sprintf("ack-%s-%d", run, i))
	}
	signals[3].DevicesExposed = signals[3].DevicesActive + 1
	resp, err := c.PublishSignals(ctx, signals)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAccepted() != uint32(len(signals)-1) || resp.GetRejected() != 1 || len(resp.GetResults()) != len(signals) {
		t.Fatalf("accepted=%d rejected=%d results=%d", resp.GetAccepted(), resp.GetRejected(), len(resp.GetResults()))
	}
	for i, r := range resp.GetResults() {
		if r.GetIndex() != uint32(i) || r.GetSignalId() != signals[i].GetSignalId() {
			t.Fatalf("results[%d] = index %d id %s", i, r.GetIndex(), r.GetSignalId())
		}
	}
	if !errors.Is(sdk.ItemErr(resp.GetResults()[3].GetError()), sdk.ErrInvalidArgument) {
		t.Errorf("results[3]: %v", resp.GetResults()[3])
	}
	r, err := c.AnnounceRollout(ctx, &phxv1.Rollout{
		RolloutId: "ob-" + run, Product: "contoso-av", ContentVersion: "1.0", CurrentRing: phxv1.Ring_RING_CANARY,
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	})
	if err != nil || r.GetRevision() != 1 {
		t.Fatalf("announce: %v, %v", r, err)
	}
	if _, err := c.UpdateRollout(ctx, r.GetRolloutId(), 7, &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, "state"); !errors.Is(err, sdk.ErrFailedPrecondition) {
		t.Errorf("stale update: %v, want failed precondition", err)
	}
	st := c.OutboxStats()
	if st.Pending != 0 || st.Acknowledged != 3 || st.Refused != 2 || len(spoolFiles(t, dir)) != 0 {
		t.Errorf("stats %+v, files %v", st, spoolFiles(t, dir))
	}
}

// TestOutboxHubAway spools while the hub is down and delivers once it is
// back.
func TestOutboxHubAway(t *testing.T) {
	h := servertest.Start(t)
	dir := t.TempDir()
	c := client(t, h, "contoso", sdk.WithOutbox(dir), fastRetry)
	ctx := context.Background()
	h.Stop()
	run := unique()
	for i := range 3 {
		_, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell(fmt.Sprintf("away-%s-%d", run, i))})
		if !errors.Is(err, sdk.ErrQueued) || !errors.Is(err, sdk.ErrUnavailable) {
			t.Fatalf("publish %d with the hub down: %v, want queued and unavailable", i, err)
		}
	}
	inc, err := c.ReportIncident(ctx, &phxv1.Incident{
		Title: "away " + run, Severity: phxv1.Severity_SEVERITY_LOW,
		Affected: []*phxv1.Affected{{Product: "contoso-av"}},
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	})
	if !errors.Is(err, sdk.ErrQueued) || inc != nil {
		t.Fatalf("report with the hub down: %v, %v", inc, err)
	}
	// A context that ends first also leaves the request queued.
	dctx, cancel := context.WithTimeout(ctx, time.Millisecond)
	<-dctx.Done()
	_, err = c.PublishSignals(dctx, []*phxv1.HealthSignal{cell("away-" + run + "-late")})
	cancel()
	if !errors.Is(err, sdk.ErrDeadlineExceeded) || errors.Is(err, sdk.ErrQueued) {
		t.Fatalf("publish with an ended context: %v, want deadline exceeded, not queued", err)
	}
	st := c.OutboxStats()
	if st.Pending != 4 || !st.HubAway || st.LastError == nil || len(spoolFiles(t, dir)) != 4 {
		t.Fatalf("stats %+v, files %d", st, len(spoolFiles(t, dir)))
	}

	h.Restart(t)
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := c.FlushOutbox(fctx); err != nil {
		t.Fatal(err)
	}
	st = c.OutboxStats()
	if st.Pending != 0 || st.HubAway || st.Acknowledged != 4 || len(spoolFiles(t, dir)) != 0 {
		t.Fatalf("after flush: stats %+v", st)
	}
	got := stored(t, h, "away-"+run)
	if len(got) != 3 {
		t.Errorf("stored %v, want 3 signals", got)
	}
	// Once the hub is back, calls are acknowledged again.
	if _, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell("away-" + run + "-back")}); err != nil {
		t.Fatal(err)
	}
}

// TestOutboxRestartResends stores a request on the hub but loses the
// answer, closes the client as a crash would leave it, and opens the outbox
// again: the request is sent again with the same idempotency key, and the
// hub stores it once.
func TestOutboxRestartResends(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	run := unique()
	setup := client(t, h, "contoso")
	rollout := func(id string) *phxv1.Rollout {
		return &phxv1.Rollout{
			RolloutId: id, Product: "contoso-av", ContentVersion: "1.0", CurrentRing: phxv1.Ring_RING_CANARY,
			Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
		}
	}
	if _, err := setup.AnnounceRollout(ctx, rollout("resend-upd-"+run)); err != nil {
		t.Fatal(err)
	}
	incident := func(title string) *phxv1.Incident {
		return &phxv1.Incident{
			Title: title, Severity: phxv1.Severity_SEVERITY_LOW,
			Affected: []*phxv1.Affected{{Product: "contoso-av"}},
			Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
		}
	}
	inc, err := setup.ReportIncident(ctx, incident("resend-upd "+run))
	if err != nil {
		t.Fatal(err)
	}
	countIncidents := func(c *sdk.Client, title string) int {
		list, err := c.ListIncidents(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, inc := range list.GetIncidents() {
			if inc.GetTitle() == title {
				n++
			}
		}
		return n
	}

	tests := []struct {
		name  string
		call  func(c *sdk.Client) error
		check func(c *sdk.Client)
	}{
		{"signals", func(c *sdk.Client) error {
			_, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell("resend-" + run + "-0"), cell("resend-" + run + "-1")})
			return err
		}, func(c *sdk.Client) {
			if got := stored(t, h, "resend-"+run+"-"); len(got) != 2 || got["resend-"+run+"-0"] != 1 || got["resend-"+run+"-1"] != 1 {
				t.Errorf("stored %v, want each signal once", got)
			}
		}},
		{"announce rollout", func(c *sdk.Client) error {
			_, err := c.AnnounceRollout(ctx, rollout("resend-"+run))
			return err
		}, func(c *sdk.Client) {
			if r, err := c.GetRollout(ctx, "resend-"+run); err != nil || r.GetRevision() != 1 {
				t.Errorf("rollout: %v, %v", r, err)
			}
		}},
		{"update rollout", func(c *sdk.Client) error {
			_, err := c.UpdateRollout(ctx, "resend-upd-"+run, 1, &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, "state")
			return err
		}, func(c *sdk.Client) {
			if r, err := c.GetRollout(ctx, "resend-upd-"+run); err != nil || r.GetRevision() != 2 || r.GetState() != phxv1.RolloutState_ROLLOUT_PAUSED {
				t.Errorf("rollout: %v, %v", r, err)
			}
		}},
		{"report incident", func(c *sdk.Client) error {
			_, err := c.ReportIncident(ctx, incident("resend "+run))
			return err
		}, func(c *sdk.Client) {
			if n := countIncidents(c, "resend "+run); n != 1 {
				t.Errorf("%d incidents, want 1", n)
			}
		}},
		{"update incident", func(c *sdk.Client) error {
			_, err := c.UpdateIncident(ctx, inc.GetId(), 1, &phxv1.Incident{Status: phxv1.Status_STATUS_IDENTIFIED}, "status")
			return err
		}, func(c *sdk.Client) {
			if got, err := c.GetIncident(ctx, inc.GetId()); err != nil || got.GetRevision() != 2 || got.GetStatus() != phxv1.Status_STATUS_IDENTIFIED {
				t.Errorf("incident: %v, %v", got, err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var mu sync.Mutex
			var sent []string // idempotency keys as sent
			record := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				mu.Lock()
				switch r := req.(type) {
				case *phxv1.PublishSignalsRequest:
					for _, s := range r.GetSignals() {
						sent = append(sent, s.GetSignalId())
					}
				case interface{ GetRequestId() string }:
					sent = append(sent, r.GetRequestId())
				}
				mu.Unlock()
				return invoker(ctx, method, req, reply, cc, opts...)
			}
			keys := func() []string {
				mu.Lock()
				defer mu.Unlock()
				k := slices.Clone(sent)
				slices.Sort(k)
				sent = nil
				return slices.Compact(k)
			}

			a := client(t, h, "contoso", sdk.WithOutbox(dir), fastRetry,
				sdk.WithDialOptions(grpc.WithChainUnaryInterceptor(record, loseAnswers)))
			if err := tc.call(a); !errors.Is(err, sdk.ErrQueued) {
				t.Fatalf("call: %v, want queued", err)
			}
			a.Close()
			first := keys()
			if n := len(spoolFiles(t, dir)); n != 1 || len(first) == 0 || first[0] == "" {
				t.Fatalf("%d files after close, keys sent %v", n, first)
			}

			var refused []sdk.Refusal
			b := client(t, h, "contoso", sdk.WithOutbox(dir, sdk.OutboxOnRefused(func(r sdk.Refusal) { refused = append(refused, r) })),
				sdk.WithDialOptions(grpc.WithChainUnaryInterceptor(record)))
			if st := b.OutboxStats(); st.Recovered != 1 {
				t.Errorf("recovered %d, want 1", st.Recovered)
			}
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := b.FlushOutbox(fctx); err != nil {
				t.Fatal(err)
			}
			if again := keys(); !slices.Equal(again, first) {
				t.Errorf("sent again with %v, first with %v", again, first)
			}
			if st := b.OutboxStats(); st.Pending != 0 || st.Acknowledged != 1 || len(refused) != 0 || len(spoolFiles(t, dir)) != 0 {
				t.Errorf("stats %+v, refused %v", st, refused)
			}
			tc.check(b)
		})
	}
}

// TestOutboxDamagedFiles opens an outbox with a partial file, a file with
// a flipped byte, a stray temporary file and a good file.
func TestOutboxDamagedFiles(t *testing.T) {
	h := servertest.Start(t)
	dir := t.TempDir()
	ctx := context.Background()
	run := unique()
	h.Stop()
	a := client(t, h, "contoso", sdk.WithOutbox(dir), fastRetry)
	for i := range 3 {
		if _, err := a.PublishSignals(ctx, []*phxv1.HealthSignal{cell(fmt.Sprintf("dmg-%s-%d", run, i))}); !errors.Is(err, sdk.ErrQueued) {
			t.Fatal(err)
		}
	}
	a.Close()
	files := spoolFiles(t, dir)
	if len(files) != 3 {
		t.Fatalf("files %v", files)
	}
	slices.Sort(files)
	b, err := os.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[1], b[:len(b)/2], 0o600); err != nil { // a torn write
		t.Fatal(err)
	}
	b, err = os.ReadFile(files[2])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-3] ^= 0x40 // bit rot
	if err := os.WriteFile(files[2], b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".tmp-00000000000000000099"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}

	h.Restart(t)
	c := client(t, h, "contoso", sdk.WithOutbox(dir))
	st := c.OutboxStats()
	if st.Recovered != 1 || len(st.Quarantined) != 2 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("quarantined: %q", st.Quarantined)
	if q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*")); len(q) != 2 {
		t.Errorf("quarantine holds %v", q)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-00000000000000000099")); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.FlushOutbox(fctx); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, h, "dmg-"+run); len(got) != 1 || got["dmg-"+run+"-0"] != 1 {
		t.Errorf("stored %v, want only the intact entry", got)
	}
}

func TestOutboxFull(t *testing.T) {
	h := servertest.Start(t)
	h.Stop()
	ctx := context.Background()
	run := unique()
	tests := []struct {
		name   string
		opt    sdk.OutboxOption
		queued int // calls of one signal each that fit
		last   int // signals of the call that does not fit
	}{
		{"entries", sdk.OutboxMaxEntries(2), 2, 1},
		{"bytes", sdk.OutboxMaxBytes(100), 0, 1}, // one cell takes about 150 bytes
		{"all batches or none", sdk.OutboxMaxEntries(2), 0, 2*sdk.MaxBatch + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := client(t, h, "contoso", sdk.WithOutbox(dir, tc.opt), fastRetry)
			for i := range tc.queued {
				if _, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell(fmt.Sprintf("full-%s-%d", run, i))}); !errors.Is(err, sdk.ErrQueued) {
					t.Fatalf("publish %d: %v, want queued", i, err)
				}
			}
			last := make([]*phxv1.HealthSignal, tc.last)
			for i := range last {
				last[i] = cell(fmt.Sprintf("full-%s-x%d", run, i))
			}
			_, err := c.PublishSignals(ctx, last)
			var e *sdk.Error
			if !errors.Is(err, sdk.ErrOutboxFull) || !errors.Is(err, sdk.ErrResourceExhausted) || errors.Is(err, sdk.ErrQueued) || !errors.As(err, &e) {
				t.Fatalf("publish into a full outbox: %v", err)
			}
			t.Log(err)
			if n := c.OutboxPending(); n != tc.queued || len(spoolFiles(t, dir)) != tc.queued {
				t.Errorf("pending %d, want %d", n, tc.queued)
			}
		})
	}
}

// TestOutboxRefused queues requests the hub will refuse: they are reported
// to the handler once and removed, and the good ones are stored.
func TestOutboxRefused(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	run := unique()
	setup := client(t, h, "contoso")
	r, err := setup.AnnounceRollout(ctx, &phxv1.Rollout{
		RolloutId: "ref-" + run, Product: "contoso-av", ContentVersion: "1.0", CurrentRing: phxv1.Ring_RING_CANARY,
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Stop()

	var mu sync.Mutex
	var refused []sdk.Refusal
	c := client(t, h, "contoso", fastRetry, sdk.WithOutbox(t.TempDir(), sdk.OutboxOnRefused(func(r sdk.Refusal) {
		mu.Lock()
		refused = append(refused, r)
		mu.Unlock()
	})))
	bad := cell("ref-" + run + "-bad")
	bad.DevicesExposed = bad.DevicesActive + 1
	foreign := cell("ref-" + run + "-foreign")
	foreign.Product = "fabrikam-edr"
	if _, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell("ref-" + run + "-good"), bad, foreign}); !errors.Is(err, sdk.ErrQueued) {
		t.Fatal(err)
	}
	// Stale: the revision is 1.
	if _, err := c.UpdateRollout(ctx, r.GetRolloutId(), 5, &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, "state"); !errors.Is(err, sdk.ErrQueued) {
		t.Fatal(err)
	}
	if _, err := c.UpdateRollout(ctx, r.GetRolloutId(), 1, &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, "state"); !errors.Is(err, sdk.ErrQueued) {
		t.Fatal(err)
	}
	h.Restart(t)
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.FlushOutbox(fctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(refused)
	mu.Unlock()
	want := []struct {
		method, id string
		is         error
	}{
		{"PublishSignals", bad.GetSignalId(), sdk.ErrInvalidArgument},
		{"PublishSignals", foreign.GetSignalId(), sdk.ErrPermissionDenied},
		{"UpdateRollout", "", sdk.ErrFailedPrecondition},
	}
	if len(got) != len(want) {
		t.Fatalf("refusals %+v, want %d", got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Method != w.method || (w.id != "" && g.ID != w.id) || g.ID == "" || !errors.Is(g.Err, w.is) || g.Request == nil {
			t.Errorf("refusal %d = %+v, want %s %s %v", i, g, w.method, w.id, w.is)
		}
	}
	if st := c.OutboxStats(); st.Pending != 0 || st.Refused != 3 || st.Acknowledged != 2 {
		t.Errorf("stats %+v", st)
	}
	if got := stored(t, h, "ref-"+run); len(got) != 1 || got["ref-"+run+"-good"] != 1 {
		t.Errorf("stored %v", got)
	}
	if r, err := c.GetRollout(ctx, r.GetRolloutId()); err != nil || r.GetState() != phxv1.RolloutState_ROLLOUT_PAUSED || r.GetRevision() != 2 {
		t.Errorf("rollout after the queued update: %v, %v", r, err)
	}
}

// TestOutboxConcurrent publishes from many goroutines while the hub
// restarts: every call is acknowledged or queued, calls are acknowledged
// again once the hub is back, and every signal is stored exactly once.
func TestOutboxConcurrent(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	run := unique()
	c := client(t, h, "contoso", sdk.WithOutbox(t.TempDir()), sdk.WithRetry(3, 10*time.Millisecond, 100*time.Millisecond))
	const workers, maxCalls, per = 6, 400, 4
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		phase    int               // 0 before the restart, 1 after
		outcomes [2]map[string]int // per phase
		calls    int
		stop     = make(chan struct{})
		acked    = [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	)
	outcomes[0], outcomes[1] = map[string]int{}, map[string]int{}
	for w := range workers {
		wg.Go(func() {
			for i := range maxCalls {
				select {
				case <-stop:
					return
				default:
				}
				batch := make([]*phxv1.HealthSignal, per)
				for j := range batch {
					batch[j] = cell(fmt.Sprintf("conc-%s-%d-%d-%d", run, w, i, j))
				}
				_, err := c.PublishSignals(ctx, batch)
				mu.Lock()
				o := outcomes[phase]
				switch {
				case err == nil:
					o["acknowledged"]++
					if o["acknowledged"] == 10 {
						close(acked[phase])
					}
				case errors.Is(err, sdk.ErrQueued):
					o["queued"]++
				default:
					o[err.Error()]++
				}
				calls++
				mu.Unlock()
				_ = c.OutboxStats()
			}
		})
	}
	<-acked[0]
	h.Stop()
	mu.Lock()
	phase = 1
	mu.Unlock()
	h.Restart(t)
	select {
	case <-acked[1]:
	case <-time.After(30 * time.Second):
		t.Error("no call acknowledged after the restart")
	}
	close(stop)
	wg.Wait()
	t.Logf("%d calls; before the restart %v, from the restart on %v", calls, outcomes[0], outcomes[1])
	for _, o := range outcomes {
		for k := range o {
			if k != "acknowledged" && k != "queued" {
				t.Errorf("outcome %s", k)
			}
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.FlushOutbox(fctx); err != nil {
		t.Fatal(err)
	}
	got := stored(t, h, "conc-"+run)
	if len(got) != calls*per {
		t.Errorf("%d signals stored, want %d", len(got), calls*per)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
}

func TestOutboxDirInUse(t *testing.T) {
	dir := t.TempDir()
	client(t, hub, "contoso", sdk.WithOutbox(dir))
	_, err := sdk.New(hub.Addr, sdk.FromEnv(), sdk.WithOutbox(dir))
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second client on the same outbox: %v", err)
	}
}

// TestOutboxRefusedWholeCall publishes several batches as an org that may
// not publish: the first batch's refusal is the call's error, the later
// batches are withdrawn unsent, and nothing is left in the outbox.
func TestOutboxRefusedWholeCall(t *testing.T) {
	dir := t.TempDir()
	var refused int
	c := client(t, hub, "national-cert", sdk.WithOutbox(dir, sdk.OutboxOnRefused(func(sdk.Refusal) { refused++ })))
	run := unique()
	signals := make([]*phxv1.HealthSignal, 2*sdk.MaxBatch+1)
	for i := range signals {
		signals[i] = cell(fmt.Sprintf("cert-%s-%d", run, i))
	}
	resp, err := c.PublishSignals(context.Background(), signals)
	if !errors.Is(err, sdk.ErrPermissionDenied) || errors.Is(err, sdk.ErrQueued) || len(resp.GetResults()) != 0 {
		t.Fatalf("publish as a CERT: %d results, %v", len(resp.GetResults()), err)
	}
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.FlushOutbox(fctx); err != nil {
		t.Fatal(err)
	}
	if st := c.OutboxStats(); st.Pending != 0 || st.Acknowledged != 0 || st.Refused != sdk.MaxBatch || refused != 0 || len(spoolFiles(t, dir)) != 0 {
		t.Errorf("stats %+v, %d refusals reported", st, refused)
	}
}

// BenchmarkPublishSignals compares publishing with and without an outbox
// (one file written and synced per batch), by batch size.
func BenchmarkPublishSignals(b *testing.B) {
	for _, size := range []int{1, 100, sdk.MaxBatch} {
		for _, spool := range []bool{false, true} {
			name := fmt.Sprintf("batch=%d/outbox=%t", size, spool)
			b.Run(name, func(b *testing.B) {
				var opts []sdk.Option
				if spool {
					opts = append(opts, sdk.WithOutbox(b.TempDir()))
				}
				c := client(b, hub, "contoso", opts...)
				run := unique()
				ctx := context.Background()
				n := 0
				for b.Loop() {
					batch := make([]*phxv1.HealthSignal, size)
					for i := range batch {
						batch[i] = cell(fmt.Sprintf("bench-%s-%d", run, n))
						n++
					}
					if _, err := c.PublishSignals(ctx, batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "signals/s")
			})
		}
	}
}
