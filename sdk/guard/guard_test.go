package guard_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/sdk/guard"
	"github.com/phx-exchange/phx/server/servertest"
)

// hub is the hub the Example and most tests share. Its address and the dev
// certificates of contoso are in PHX_HUB, PHX_CA, PHX_CERT and PHX_KEY.
var hub *servertest.Hub

func TestMain(m *testing.M) {
	h, stop, err := servertest.StartMain()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start hub:", err)
		os.Exit(1)
	}
	hub = h
	os.Setenv("PHX_HUB", h.Addr)
	os.Setenv("PHX_CA", h.PKI.CACert())
	os.Setenv("PHX_CERT", h.PKI.OrgCert("contoso"))
	os.Setenv("PHX_KEY", h.PKI.OrgKey("contoso"))
	os.Unsetenv("PHX_TOKEN")
	code := m.Run()
	stop()
	os.Exit(code)
}

// patience bounds every wait for the guard to hear of a change.
const patience = 45 * time.Second

// unique returns a short random suffix, so that ids differ between runs
// against the same hub (go test -count=2).
func unique() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// client connects to h as a dev org.
func client(t testing.TB, h *servertest.Hub, org string, opts ...sdk.Option) *sdk.Client {
	t.Helper()
	opts = append([]sdk.Option{sdk.WithCertFiles(h.PKI.CACert(), h.PKI.OrgCert(org), h.PKI.OrgKey(org))}, opts...)
	c, err := sdk.New(h.Addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// start starts a guard with a short heartbeat, closed when the test ends,
// and waits until it has caught up.
func start(t testing.TB, c *sdk.Client, opts ...guard.Option) *guard.Guard {
	t.Helper()
	opts = append([]guard.Option{guard.WithHeartbeat(time.Second)}, opts...)
	g, err := guard.New(context.Background(), c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := g.Ready(ctx); err != nil {
		t.Fatalf("guard not caught up: %v", err)
	}
	return g
}

// await waits, within patience, until the decision about id satisfies
// cond, and checks that Allowed, the hot path, agrees.
func await(t testing.TB, g *guard.Guard, id, what string, cond func(guard.Decision) bool) guard.Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	d, err := g.Wait(ctx, id, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v; last decision %v (%v): %s", what, err, d.Allowed, d.Cause, d.Reason)
	}
	if now, err := g.Allowed(ctx, id); err != nil || now.Allowed != d.Allowed || now.Cause != d.Cause {
		t.Fatalf("Allowed = %v (%v): %s, %v; Wait returned %v (%v)", now.Allowed, now.Cause, now.Reason, err, d.Allowed, d.Cause)
	}
	return d
}

// rollout is a contoso-av rollout in its canary ring.
func rollout(id string, tlp phxv1.Tlp, orgs ...string) *phxv1.Rollout {
	return &phxv1.Rollout{
		RolloutId:       id,
		Product:         "contoso-av",
		ContentChannel:  "channel-291",
		ContentVersion:  "291.1",
		PreviousVersion: "291.0",
		CurrentRing:     phxv1.Ring_RING_CANARY,
		PercentDeployed: 1,
		Audience:        &phxv1.Audience{Tlp: tlp, Orgs: orgs},
	}
}

// incident is a critical incident about contoso-av asking to pause rollout.
func incident(title, rolloutID string, aud *phxv1.Audience) *phxv1.Incident {
	return &phxv1.Incident{
		Title:          title,
		Classification: phxv1.Classification_CLASSIFICATION_INCIDENT,
		Severity:       phxv1.Severity_SEVERITY_CRITICAL,
		Status:         phxv1.Status_STATUS_INVESTIGATING,
		Affected:       []*phxv1.Affected{{Product: "contoso-av", ContentChannel: "channel-291", ContentVersion: "291.1"}},
		RolloutAction:  &phxv1.RolloutAction{RolloutId: rolloutID, Action: phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_PAUSE},
		Audience:       aud,
	}
}

// TestGuardFollowsRollout walks one rollout through its states and an
// incident of the platform, and checks that the guard's answer follows each
// step, while other goroutines ask all along (run with -race).
func TestGuardFollowsRollout(t *testing.T) {
	ctx := context.Background()
	contoso := client(t, hub, "contoso")
	microsoft := client(t, hub, "microsoft")
	g := start(t, contoso)
	id := "guard-" + unique()

	// Deployment controllers ask concurrently, from memory.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var asked atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := g.Allowed(ctx, id); err != nil {
					t.Error(err)
					return
				}
				asked.Add(1)
				time.Sleep(time.Millisecond)
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
		if asked.Load() == 0 {
			t.Error("nobody asked")
		}
	}()

	var r *phxv1.Rollout
	var inc *phxv1.Incident
	update := func(st phxv1.RolloutState, reason string) func(t *testing.T) {
		return func(t *testing.T) {
			var err error
			r, err = contoso.UpdateRollout(ctx, id, r.GetRevision(), &phxv1.Rollout{State: st, Reason: reason}, "state", "reason")
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	steps := []struct {
		name    string
		do      func(t *testing.T)
		allowed bool
		cause   guard.Cause
		reason  func() []string // substrings of the reason
	}{
		{
			name: "unknown before it is announced",
			do:   func(t *testing.T) {},
			// Already caught up: nobody announced it yet.
			cause:  guard.CauseUnknown,
			reason: func() []string { return []string{"unknown rollout", id} },
		},
		{
			name: "announced",
			do: func(t *testing.T) {
				var err error
				if r, err = contoso.AnnounceRollout(ctx, rollout(id, phxv1.Tlp_TLP_GREEN)); err != nil {
					t.Fatal(err)
				}
			},
			allowed: true,
			cause:   guard.CauseActive,
			reason:  func() []string { return []string{"active"} },
		},
		{
			name:   "paused",
			do:     update(phxv1.RolloutState_ROLLOUT_PAUSED, "canary crash rate 4x control"),
			cause:  guard.CausePaused,
			reason: func() []string { return []string{"paused by contoso at revision 2: canary crash rate 4x control"} },
		},
		{
			name:    "resumed",
			do:      update(phxv1.RolloutState_ROLLOUT_ACTIVE, "crashes were a telemetry bug"),
			allowed: true,
			cause:   guard.CauseActive,
			reason:  func() []string { return []string{"active"} },
		},
		{
			name: "incident of the platform asks to pause",
			do: func(t *testing.T) {
				var err error
				inc, err = microsoft.ReportIncident(ctx, incident("Boot loops after channel 291", id, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}))
				if err != nil {
					t.Fatal(err)
				}
			},
			cause: guard.CauseIncident,
			reason: func() []string {
				return []string{"incident " + inc.GetId(), "critical", "reported by microsoft", "asks to pause", "Boot loops after channel 291"}
			},
		},
		{
			name: "incident resolved",
			do: func(t *testing.T) {
				var err error
				inc, err = microsoft.UpdateIncident(ctx, inc.GetId(), inc.GetRevision(), &phxv1.Incident{Status: phxv1.Status_STATUS_RESOLVED}, "status")
				if err != nil {
					t.Fatal(err)
				}
			},
			allowed: true,
			cause:   guard.CauseActive,
			reason:  func() []string { return []string{"active"} },
		},
		{
			name:   "rolled back",
			do:     update(phxv1.RolloutState_ROLLOUT_ROLLED_BACK, "reverted to 291.0"),
			cause:  guard.CauseRolledBack,
			reason: func() []string { return []string{"rolled back by contoso at revision 4: reverted to 291.0"} },
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do(t)
			rev := r.GetRevision()
			d := await(t, g, id, st.name, func(d guard.Decision) bool {
				return d.Allowed == st.allowed && d.Cause == st.cause && d.Revision >= rev
			})
			for _, want := range st.reason() {
				if !strings.Contains(d.Reason, want) {
					t.Errorf("reason %q lacks %q", d.Reason, want)
				}
			}
			if d.Revision != rev {
				t.Errorf("decision rests on revision %d, want %d", d.Revision, rev)
			}
		})
	}
}

// TestGuardCatchesUp starts a guard after a rollout was paused and an
// incident opened against another: once Ready, the guard answers from what
// the hub retained, without waiting for anything new.
func TestGuardCatchesUp(t *testing.T) {
	ctx := context.Background()
	contoso := client(t, hub, "contoso")
	microsoft := client(t, hub, "microsoft")
	run := unique()
	pausedID, incidentID, activeID := "caught-paused-"+run, "caught-incident-"+run, "caught-active-"+run
	for _, id := range []string{pausedID, incidentID, activeID} {
		if _, err := contoso.AnnounceRollout(ctx, rollout(id, phxv1.Tlp_TLP_GREEN)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := contoso.UpdateRollout(ctx, pausedID, 1, &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED, Reason: "own metrics"}, "state", "reason"); err != nil {
		t.Fatal(err)
	}
	inc, err := microsoft.ReportIncident(ctx, incident("Hangs after channel 291", incidentID, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}))
	if err != nil {
		t.Fatal(err)
	}

	g := start(t, contoso)
	tests := []struct {
		id    string
		cause guard.Cause
	}{
		{pausedID, guard.CausePaused},
		{incidentID, guard.CauseIncident},
		{activeID, guard.CauseActive},
		{"caught-never-" + run, guard.CauseUnknown},
	}
	for _, tt := range tests {
		d, err := g.Allowed(ctx, tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if d.Cause != tt.cause || d.Allowed != (tt.cause == guard.CauseActive) {
			t.Errorf("%s: %v (%v): %s; want %v", tt.id, d.Allowed, d.Cause, d.Reason, tt.cause)
		}
	}
	if d, _ := g.Allowed(ctx, incidentID); len(d.IncidentIDs) != 1 || d.IncidentIDs[0] != inc.GetId() {
		t.Errorf("incidents %v, want [%s]", d.IncidentIDs, inc.GetId())
	}
}

// TestGuardVisibility checks that the guard knows only what the hub shows
// the member: a TLP_RED rollout not naming it is unknown, and an incident
// it may not see does not stop a rollout it may see.
func TestGuardVisibility(t *testing.T) {
	ctx := context.Background()
	contoso := client(t, hub, "contoso")
	fabrikam := client(t, hub, "fabrikam")
	microsoft := client(t, hub, "microsoft")
	run := unique()
	redID, greenID := "red-"+run, "green-"+run

	// A rollout only northwind may see.
	if _, err := fabrikam.AnnounceRollout(ctx, &phxv1.Rollout{
		RolloutId: redID, Product: "fabrikam-edr", ContentVersion: "5.2", CurrentRing: phxv1.Ring_RING_CANARY,
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"northwind"}},
	}); err != nil {
		t.Fatal(err)
	}
	// A rollout everyone may see, and an incident against it that only
	// fabrikam may see.
	if _, err := contoso.AnnounceRollout(ctx, rollout(greenID, phxv1.Tlp_TLP_GREEN)); err != nil {
		t.Fatal(err)
	}
	inc, err := microsoft.ReportIncident(ctx, incident("Seen by fabrikam only", greenID, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam"}}))
	if err != nil {
		t.Fatal(err)
	}

	guards := map[string]*guard.Guard{
		"contoso":   start(t, contoso),
		"fabrikam":  start(t, fabrikam),
		"northwind": start(t, client(t, hub, "northwind")),
	}
	tests := []struct {
		org, id string
		cause   guard.Cause
	}{
		{"contoso", redID, guard.CauseUnknown},
		{"fabrikam", redID, guard.CauseActive}, // its own
		{"northwind", redID, guard.CauseActive},
		{"contoso", greenID, guard.CauseActive},
		{"fabrikam", greenID, guard.CauseIncident},
		{"northwind", greenID, guard.CauseActive},
	}
	for _, tt := range tests {
		t.Run(tt.org+"/"+strings.TrimSuffix(tt.id, "-"+run), func(t *testing.T) {
			// Each guard caught up after everything above was published.
			d, err := guards[tt.org].Allowed(ctx, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if d.Cause != tt.cause || d.Allowed != (tt.cause == guard.CauseActive) {
				t.Errorf("%v (%v): %s; want %v", d.Allowed, d.Cause, d.Reason, tt.cause)
			}
			if tt.cause == guard.CauseIncident && !strings.Contains(d.Reason, inc.GetId()) {
				t.Errorf("reason %q does not name %s", d.Reason, inc.GetId())
			}
		})
	}
}

// TestGuardFailsClosedWhileHubIsDown stops a hub under a guard: the guard
// denies once it has heard nothing for longer than its maximum silence, and
// allows again once its feed has resumed on the restarted hub.
func TestGuardFailsClosedWhileHubIsDown(t *testing.T) {
	ctx := context.Background()
	h := servertest.Start(t)
	c := client(t, h, "contoso", sdk.WithRetry(3, 50*time.Millisecond, 500*time.Millisecond))
	const maxSilence = 3 * time.Second
	g := start(t, c, guard.WithMaxSilence(maxSilence))
	id := "outage-" + unique()
	r, err := c.AnnounceRollout(ctx, rollout(id, phxv1.Tlp_TLP_GREEN))
	if err != nil {
		t.Fatal(err)
	}
	allowed := func(d guard.Decision) bool { return d.Allowed }
	await(t, g, id, "the announced rollout", allowed)

	h.Stop()
	d := await(t, g, id, "silence", func(d guard.Decision) bool { return d.Cause == guard.CauseSilent })
	if silence := time.Since(d.HeardAt); silence <= maxSilence {
		t.Errorf("denied after %v of silence, want more than %v", silence, maxSilence)
	}
	if d.Allowed || !strings.HasPrefix(d.Reason, "no word from the hub for ") || !strings.Contains(d.Reason, "last heard: active") {
		t.Errorf("decision %v: %s", d.Allowed, d.Reason)
	}

	h.Restart(t)
	await(t, g, id, "recovery after the restart", allowed)

	// The resumed feed carries what happens next.
	if _, err := c.UpdateRollout(ctx, id, r.GetRevision(), &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED, Reason: "after restart"}, "state", "reason"); err != nil {
		t.Fatal(err)
	}
	d = await(t, g, id, "the pause after the restart", func(d guard.Decision) bool { return d.Cause == guard.CausePaused })
	if !strings.Contains(d.Reason, "after restart") {
		t.Errorf("reason %q", d.Reason)
	}
}

// TestGuardFeedRefused revokes the token (of an incident responder acting
// for contoso) that a guard subscribed with: the hub ends its feed and
// refuses it from then on, and the guard denies, naming the refusal, while
// it keeps trying.
func TestGuardFeedRefused(t *testing.T) {
	ctx := context.Background()
	op := client(t, hub, "operator")
	tok, err := op.IssueToken(ctx, &phxv1.IssueTokenRequest{Org: "contoso", Role: phxv1.Role_ROLE_RESPONDER, Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := sdk.New(hub.Addr, sdk.WithCAFile(hub.PKI.CACert()), sdk.WithToken(tok.GetToken()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := start(t, c)
	id := "refused-" + unique()
	if _, err := client(t, hub, "contoso").AnnounceRollout(ctx, rollout(id, phxv1.Tlp_TLP_GREEN)); err != nil {
		t.Fatal(err)
	}
	await(t, g, id, "the announced rollout", func(d guard.Decision) bool { return d.Allowed })

	if _, err := op.RevokeToken(ctx, tok.GetJti()); err != nil {
		t.Fatal(err)
	}
	d := await(t, g, id, "the refusal", func(d guard.Decision) bool { return d.Cause == guard.CauseFeedFailed })
	if d.Allowed || !strings.HasPrefix(d.Reason, "the hub refused the guard's feed: ") {
		t.Errorf("decision %v: %s", d.Allowed, d.Reason)
	}
}

// TestGuardClock moves the guard's clock past the maximum silence: the
// guard denies at once, and allows again at the next heartbeat.
func TestGuardClock(t *testing.T) {
	ctx := context.Background()
	c := client(t, hub, "contoso")
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	g := start(t, c, guard.WithClock(clock), guard.WithMaxSilence(time.Minute))
	id := "clock-" + unique()
	if _, err := c.AnnounceRollout(ctx, rollout(id, phxv1.Tlp_TLP_GREEN)); err != nil {
		t.Fatal(err)
	}
	await(t, g, id, "the announced rollout", func(d guard.Decision) bool { return d.Allowed })

	// An hour passes for the guard; the hub's last heartbeat is an hour old.
	skew.Store(int64(time.Hour))
	d, err := g.Allowed(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.Cause != guard.CauseSilent || !strings.Contains(d.Reason, "no word from the hub for 1h0m") {
		t.Errorf("after an hour: %v (%v): %s", d.Allowed, d.Cause, d.Reason)
	}
	d = await(t, g, id, "the next heartbeat", func(d guard.Decision) bool { return d.Allowed })
	if time.Since(d.HeardAt) > -59*time.Minute {
		t.Errorf("heard at %v, want by the guard's clock", d.HeardAt)
	}
}

// TestGuardFromCursor starts a second guard from the first one's cursor:
// it knows only what came after. A cursor the hub cannot serve makes the
// guard read everything from the beginning.
func TestGuardFromCursor(t *testing.T) {
	ctx := context.Background()
	c := client(t, hub, "contoso")
	run := unique()
	before, after := "before-"+run, "after-"+run
	if _, err := c.AnnounceRollout(ctx, rollout(before, phxv1.Tlp_TLP_GREEN)); err != nil {
		t.Fatal(err)
	}
	first := start(t, c)
	await(t, first, before, "the first rollout", func(d guard.Decision) bool { return d.Allowed })
	cursor := first.Cursor()
	if cursor == "" {
		t.Fatal("no cursor")
	}
	if _, err := c.AnnounceRollout(ctx, rollout(after, phxv1.Tlp_TLP_GREEN)); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		cursor string
		before guard.Cause
	}{
		{"from the first guard's cursor", cursor, guard.CauseUnknown},
		{"from a cursor ahead of the hub", "h0.r999999999.i0.a0", guard.CauseActive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := start(t, c, guard.WithCursor(tt.cursor))
			await(t, g, after, "the later rollout", func(d guard.Decision) bool { return d.Allowed })
			d, err := g.Allowed(ctx, before)
			if err != nil {
				t.Fatal(err)
			}
			if d.Cause != tt.before {
				t.Errorf("earlier rollout: %v (%v): %s; want %v", d.Allowed, d.Cause, d.Reason, tt.before)
			}
		})
	}
}

// TestGuardClose ends a guard by Close and by its context: it then denies
// with ErrClosed, and Wait and Ready return at once.
func TestGuardClose(t *testing.T) {
	c := client(t, hub, "contoso")
	tests := []struct {
		name string
		end  func(g *guard.Guard, cancel context.CancelFunc)
	}{
		{"Close", func(g *guard.Guard, _ context.CancelFunc) { g.Close() }},
		{"context", func(_ *guard.Guard, cancel context.CancelFunc) { cancel() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			g, err := guard.New(ctx, c, guard.WithHeartbeat(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			if err := g.Ready(ctx); err != nil {
				t.Fatal(err)
			}
			tt.end(g, cancel)
			wctx, wcancel := context.WithTimeout(context.Background(), patience)
			defer wcancel()
			d, err := g.Wait(wctx, "any", func(guard.Decision) bool { return false })
			if !errors.Is(err, guard.ErrClosed) || d.Cause != guard.CauseClosed {
				t.Fatalf("Wait: %v (%v), %v; want closed", d.Cause, d.Reason, err)
			}
			if err := g.Ready(wctx); !errors.Is(err, guard.ErrClosed) {
				t.Errorf("Ready: %v", err)
			}
			d, err = g.Allowed(wctx, "any")
			if !errors.Is(err, guard.ErrClosed) || d.Allowed || d.Cause != guard.CauseClosed {
				t.Errorf("Allowed: %v (%v), %v", d.Allowed, d.Cause, err)
			}
			if g.Close() != nil {
				t.Error("second Close failed")
			}
		})
	}
	// A context that ended makes Allowed deny with its error.
	g := start(t, c)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if d, err := g.Allowed(done, "any"); !errors.Is(err, context.Canceled) || d.Allowed {
		t.Errorf("Allowed with an ended context: %v, %v", d.Allowed, err)
	}
}

// TestNewRejectsOptions checks New's validation.
func TestNewRejectsOptions(t *testing.T) {
	c := client(t, hub, "contoso")
	tests := []struct {
		name string
		c    *sdk.Client
		opts []guard.Option
		want string
	}{
		{"nil client", nil, nil, "nil client"},
		{"silence not above heartbeat", c, []guard.Option{guard.WithHeartbeat(5 * time.Second), guard.WithMaxSilence(5 * time.Second)}, "must be longer than the heartbeat"},
		{"silence below default heartbeat", c, []guard.Option{guard.WithMaxSilence(2 * time.Second)}, "must be longer than the heartbeat"},
		{"zero silence", c, []guard.Option{guard.WithMaxSilence(0)}, "WithMaxSilence"},
		{"zero heartbeat", c, []guard.Option{guard.WithHeartbeat(0)}, "WithHeartbeat"},
		{"long heartbeat", c, []guard.Option{guard.WithHeartbeat(301 * time.Second)}, "WithHeartbeat"},
		{"nil clock", c, []guard.Option{guard.WithClock(nil)}, "WithClock"},
		{"nil logger", c, []guard.Option{guard.WithLogger(nil)}, "WithLogger"},
		{"empty cursor", c, []guard.Option{guard.WithCursor("")}, "WithCursor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := guard.New(context.Background(), tt.c, tt.opts...)
			if err == nil {
				g.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
