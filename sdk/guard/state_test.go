package guard

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// t0 is the hub time the envelopes of these tests are published around.
var t0 = time.Date(2024, 7, 19, 4, 9, 0, 0, time.UTC)

func at(min int) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(min) * time.Minute))
}

const rid = "channel-291"

// ro is a revision of a contoso rollout, updated at minute min.
func ro(id string, rev uint64, st phxv1.RolloutState, reason string, min int) *phxv1.Envelope {
	return &phxv1.Envelope{
		Kind:        phxv1.Kind_KIND_ROLLOUT,
		Publisher:   "contoso",
		PublishedAt: at(min),
		Item: &phxv1.Envelope_Rollout{Rollout: &phxv1.Rollout{
			RolloutId: id, State: st, Revision: rev, Reason: reason, Publisher: "contoso", UpdatedAt: at(min),
		}},
	}
}

// progress is a revision that moves the rollout on without changing state.
func progress(id string, rev uint64, min int) *phxv1.Envelope {
	env := ro(id, rev, phxv1.RolloutState_ROLLOUT_ACTIVE, "", min)
	env.GetRollout().PercentDeployed = 10
	return env
}

// inc is a revision of an incident the platform reported.
func inc(id string, rev uint64, rolloutID string, action phxv1.RolloutActionKind, st phxv1.Status) *phxv1.Envelope {
	in := &phxv1.Incident{
		Id: id, Revision: rev, Title: "Boot loops after channel 291", Severity: phxv1.Severity_SEVERITY_CRITICAL,
		Status: st, Reporter: "microsoft",
	}
	if rolloutID != "" {
		in.RolloutAction = &phxv1.RolloutAction{RolloutId: rolloutID, Action: action}
	}
	return &phxv1.Envelope{Kind: phxv1.Kind_KIND_INCIDENT, Publisher: "microsoft", Item: &phxv1.Envelope_Incident{Incident: in}}
}

// adv is a hub advisory published at minute min.
func adv(id, rolloutID string, rec phxv1.Recommendation, min int) *phxv1.Envelope {
	return &phxv1.Envelope{
		Kind:        phxv1.Kind_KIND_ADVISORY,
		PublishedAt: at(min),
		Item: &phxv1.Envelope_Advisory{Advisory: &phxv1.Advisory{
			Id: id, Kind: phxv1.AdvisoryKind_ADVISORY_KIND_CATASTROPHE, Recommendation: rec, RolloutId: rolloutID,
			Product: "contoso-av", Summary: "boot failures 40x control in canary", Severity: phxv1.Severity_SEVERITY_CRITICAL,
		}},
	}
}

const (
	active     = phxv1.RolloutState_ROLLOUT_ACTIVE
	paused     = phxv1.RolloutState_ROLLOUT_PAUSED
	rolledBack = phxv1.RolloutState_ROLLOUT_ROLLED_BACK
	completed  = phxv1.RolloutState_ROLLOUT_COMPLETED
	pause      = phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_PAUSE
	rollback   = phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_ROLLBACK
	open       = phxv1.Status_STATUS_INVESTIGATING
	resolved   = phxv1.Status_STATUS_RESOLVED
	recPause   = phxv1.Recommendation_RECOMMENDATION_PAUSE_ROLLOUT
	recLook    = phxv1.Recommendation_RECOMMENDATION_INVESTIGATE
)

// TestStateDecide feeds envelopes into the state machine and checks the
// decision about rollout rid.
func TestStateDecide(t *testing.T) {
	tests := []struct {
		name      string
		envs      []*phxv1.Envelope
		cause     Cause
		reason    []string // substrings of Reason, in order
		incidents []string
		advisory  []string
		revision  uint64
	}{
		{name: "unknown", cause: CauseUnknown, reason: []string{`unknown rollout "channel-291"`}},
		{name: "other rollout only", envs: []*phxv1.Envelope{ro("other", 1, active, "", 0)}, cause: CauseUnknown},
		{name: "announced", envs: []*phxv1.Envelope{ro(rid, 1, active, "", 0)}, cause: CauseActive, reason: []string{"active"}, revision: 1},
		{
			name:     "paused",
			envs:     []*phxv1.Envelope{ro(rid, 1, active, "", 0), ro(rid, 2, paused, "boot failures in canary", 1)},
			cause:    CausePaused,
			reason:   []string{"paused by contoso at revision 2: boot failures in canary"},
			revision: 2,
		},
		{
			name:   "paused without a reason",
			envs:   []*phxv1.Envelope{ro(rid, 1, active, "", 0), ro(rid, 2, paused, "", 1)},
			cause:  CausePaused,
			reason: []string{"paused by contoso at revision 2 (no reason given)"},
		},
		{
			name:     "resumed",
			envs:     []*phxv1.Envelope{ro(rid, 1, active, "", 0), ro(rid, 2, paused, "x", 1), ro(rid, 3, active, "fixed", 2)},
			cause:    CauseActive,
			revision: 3,
		},
		{
			name:   "rolled back",
			envs:   []*phxv1.Envelope{ro(rid, 1, active, "", 0), ro(rid, 2, rolledBack, "bad content", 1)},
			cause:  CauseRolledBack,
			reason: []string{"rolled back by contoso at revision 2: bad content"},
		},
		{
			name:   "completed",
			envs:   []*phxv1.Envelope{ro(rid, 1, active, "", 0), ro(rid, 2, completed, "", 1)},
			cause:  CauseNotActive,
			reason: []string{"completed at revision 2"},
		},
		{
			name:   "unspecified state",
			envs:   []*phxv1.Envelope{ro(rid, 1, phxv1.RolloutState_ROLLOUT_STATE_UNSPECIFIED, "", 0)},
			cause:  CauseNotActive,
			reason: []string{"ROLLOUT_STATE_UNSPECIFIED at revision 1 is not active"},
		},
		{
			name:     "older revision ignored",
			envs:     []*phxv1.Envelope{ro(rid, 2, paused, "x", 1), ro(rid, 1, active, "", 0), ro(rid, 2, active, "", 0)},
			cause:    CausePaused,
			revision: 2,
		},
		{
			name:      "incident asks to pause",
			envs:      []*phxv1.Envelope{ro(rid, 1, active, "", 0), inc("INC-1", 1, rid, pause, open)},
			cause:     CauseIncident,
			reason:    []string{"incident INC-1 (critical, investigating) reported by microsoft asks to pause the rollout: Boot loops after channel 291"},
			incidents: []string{"INC-1"},
		},
		{
			name:      "incident asks to roll back",
			envs:      []*phxv1.Envelope{ro(rid, 1, active, "", 0), inc("INC-1", 1, rid, rollback, open)},
			cause:     CauseIncident,
			reason:    []string{"asks to roll back the rollout"},
			incidents: []string{"INC-1"},
		},
		{
			name:      "incident before the rollout",
			envs:      []*phxv1.Envelope{inc("INC-1", 1, rid, pause, open), ro(rid, 1, active, "", 0)},
			cause:     CauseIncident,
			incidents: []string{"INC-1"},
		},
		{
			name:  "incident resolved",
			envs:  []*phxv1.Envelope{ro(rid, 1, active, "", 0), inc("INC-1", 1, rid, pause, open), inc("INC-1", 2, rid, pause, resolved)},
			cause: CauseActive,
		},
		{
			name: "incident reopened",
			envs: []*phxv1.Envelope{
				ro(rid, 1, active, "", 0), inc("INC-1", 1, rid, pause, open), inc("INC-1", 2, rid, pause, resolved), inc("INC-1", 3, rid, pause, open),
			},
			cause:     CauseIncident,
			incidents: []string{"INC-1"},
		},
		{
			name:  "stale incident revision ignored",
			envs:  []*phxv1.Envelope{ro(rid, 1, active, "", 0), inc("INC-1", 2, rid, pause, resolved), inc("INC-1", 1, rid, pause, open)},
			cause: CauseActive,
		},
		{
			name:  "incident action moved to another rollout",
			envs:  []*phxv1.Envelope{ro(rid, 1, active, "", 0), inc("INC-1", 1, rid, pause, open), inc("INC-1", 2, "other", pause, open)},
			cause: CauseActive,
		},
		{
			name:  "incident action withdrawn",
			envs:  []*phxv1.Envelope{ro(rid, 1, active, "", 0), inc("INC-1", 1, rid, pause, open), inc("INC-1", 2, "", 0, open)},
			cause: CauseActive,
		},
		{
			name:  "incident about another rollout",
			envs:  []*phxv1.Envelope{ro(rid, 1, active, "", 0), inc("INC-1", 1, "other", pause, open)},
			cause: CauseActive,
		},
		{
			name: "two incidents in id order",
			envs: []*phxv1.Envelope{
				ro(rid, 1, active, "", 0), inc("INC-B", 1, rid, rollback, open), inc("INC-A", 1, rid, pause, open),
			},
			cause:     CauseIncident,
			reason:    []string{"incident INC-A", "; incident INC-B"},
			incidents: []string{"INC-A", "INC-B"},
		},
		{
			name:     "advisory recommends pausing",
			envs:     []*phxv1.Envelope{ro(rid, 1, active, "", 0), adv("ADV-1", rid, recPause, 5)},
			cause:    CauseAdvisory,
			reason:   []string{"hub advisory ADV-1 recommends pausing the rollout: boot failures 40x control in canary"},
			advisory: []string{"ADV-1"},
		},
		{
			name:  "advisory recommends investigating",
			envs:  []*phxv1.Envelope{ro(rid, 1, active, "", 0), adv("ADV-1", rid, recLook, 5)},
			cause: CauseActive,
		},
		{
			name:  "advisory about another rollout",
			envs:  []*phxv1.Envelope{ro(rid, 1, active, "", 0), adv("ADV-1", "other", recPause, 5)},
			cause: CauseActive,
		},
		{
			name:     "advisory outlives progress updates",
			envs:     []*phxv1.Envelope{ro(rid, 1, active, "", 0), adv("ADV-1", rid, recPause, 5), progress(rid, 2, 6)},
			cause:    CauseAdvisory,
			advisory: []string{"ADV-1"},
		},
		{
			name: "advisory answered by a pause and a resume",
			envs: []*phxv1.Envelope{
				ro(rid, 1, active, "", 0), adv("ADV-1", rid, recPause, 5), ro(rid, 2, paused, "per advisory", 6), ro(rid, 3, active, "not ours", 9),
			},
			cause: CauseActive,
		},
		{
			name: "advisory replayed after the resume that answered it",
			envs: []*phxv1.Envelope{
				ro(rid, 1, active, "", 0), ro(rid, 2, paused, "per advisory", 6), ro(rid, 3, active, "not ours", 9), adv("ADV-1", rid, recPause, 5),
			},
			cause: CauseActive,
		},
		{
			name: "advisory while paused, then resumed",
			envs: []*phxv1.Envelope{
				ro(rid, 1, active, "", 0), ro(rid, 2, paused, "own metrics", 4), adv("ADV-1", rid, recPause, 5), ro(rid, 3, active, "", 9),
			},
			cause: CauseActive,
		},
		{
			name: "paused, incident and advisory together",
			envs: []*phxv1.Envelope{
				ro(rid, 1, active, "", 0), ro(rid, 2, paused, "own metrics", 4), adv("ADV-1", rid, recPause, 5), inc("INC-1", 1, rid, pause, open),
			},
			cause:     CausePaused,
			reason:    []string{"paused by contoso at revision 2: own metrics", "; incident INC-1", "; hub advisory ADV-1"},
			incidents: []string{"INC-1"},
			advisory:  []string{"ADV-1"},
		},
		{
			name:     "advisory without times",
			envs:     []*phxv1.Envelope{ro(rid, 1, active, "", 0), noTimes(adv("ADV-1", rid, recPause, 5))},
			cause:    CauseAdvisory,
			advisory: []string{"ADV-1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newState()
			for _, env := range tt.envs {
				s.apply(env)
			}
			d := s.decide(rid)
			if d.Cause != tt.cause || d.Allowed != (tt.cause == CauseActive) {
				t.Fatalf("decision = %v (%v): %s; want %v", d.Allowed, d.Cause, d.Reason, tt.cause)
			}
			rest := d.Reason
			for _, want := range tt.reason {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("reason %q lacks %q (in order)", d.Reason, want)
				}
				rest = rest[i+len(want):]
			}
			if !slices.Equal(d.IncidentIDs, tt.incidents) || !slices.Equal(d.AdvisoryIDs, tt.advisory) {
				t.Errorf("incidents %v, advisories %v; want %v, %v", d.IncidentIDs, d.AdvisoryIDs, tt.incidents, tt.advisory)
			}
			if tt.revision != 0 && d.Revision != tt.revision {
				t.Errorf("revision %d, want %d", d.Revision, tt.revision)
			}
			if d.RolloutID != rid {
				t.Errorf("rollout id %q", d.RolloutID)
			}
		})
	}
}

func noTimes(env *phxv1.Envelope) *phxv1.Envelope {
	env.PublishedAt = nil
	return env
}

// TestStateApplyIgnores checks what apply reports as a change.
func TestStateApplyIgnores(t *testing.T) {
	tests := []struct {
		name string
		env  *phxv1.Envelope
		want bool
	}{
		{"heartbeat", &phxv1.Envelope{Kind: phxv1.Kind_KIND_HEARTBEAT, Cursor: "h1.r1.i1.a1"}, false},
		{"health cell", &phxv1.Envelope{Kind: phxv1.Kind_KIND_HEALTH_SIGNAL, Item: &phxv1.Envelope_HealthSignal{HealthSignal: &phxv1.HealthSignal{}}}, false},
		{"rollout without id", ro("", 1, active, "", 0), false},
		{"incident without id", inc("", 1, rid, pause, open), false},
		{"advisory to investigate", adv("ADV-1", rid, recLook, 0), false},
		{"advisory without rollout", adv("ADV-1", "", recPause, 0), false},
		{"rollout", ro(rid, 1, active, "", 0), true},
		{"incident", inc("INC-1", 1, rid, pause, open), true},
		{"advisory", adv("ADV-1", rid, recPause, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newState().apply(tt.env); got != tt.want {
				t.Errorf("apply = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestGuardFailsClosed checks the feed-level rules of Allowed on a Guard
// that is not connected, with a clock the test moves.
func TestGuardFailsClosed(t *testing.T) {
	now := t0
	o := defaultOptions()
	o.maxSilence = 2 * time.Second
	o.now = func() time.Time { return now }
	tests := []struct {
		name    string
		set     func(g *Guard)
		cause   Cause
		reason  string
		allowed bool
	}{
		{name: "never heard", set: func(g *Guard) {}, cause: CauseSilent, reason: "no word from the hub yet"},
		{name: "catching up", set: func(g *Guard) { g.heard = now }, cause: CauseCatchingUp, reason: "catching up with what the hub retains"},
		{name: "fresh", set: func(g *Guard) { g.heard, g.ready = now, true }, cause: CauseActive, reason: "active", allowed: true},
		{name: "at the limit", set: func(g *Guard) { g.heard, g.ready = now.Add(-2*time.Second), true }, cause: CauseActive, allowed: true},
		{
			name:   "silent",
			set:    func(g *Guard) { g.heard, g.ready = now.Add(-2100*time.Millisecond), true },
			cause:  CauseSilent,
			reason: "no word from the hub for 2.1s (at most 2s allowed) (last heard: active)",
		},
		{
			name:   "silent while catching up",
			set:    func(g *Guard) { g.heard = now.Add(-time.Minute) },
			cause:  CauseSilent,
			reason: "no word from the hub for 1m0s (at most 2s allowed)",
		},
		{
			name:   "feed refused",
			set:    func(g *Guard) { g.heard, g.ready, g.feedErr = now, true, errors.New("permission denied: revoked") },
			cause:  CauseFeedFailed,
			reason: "the hub refused the guard's feed: permission denied: revoked (last heard: active)",
		},
		{name: "closed", set: func(g *Guard) { g.heard, g.ready, g.closed = now, true, true }, cause: CauseClosed, reason: "the guard is closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &Guard{o: o, st: newState(), changed: make(chan struct{})}
			g.st.apply(ro(rid, 1, active, "", 0))
			tt.set(g)
			d := g.decideLocked(rid, now)
			if d.Allowed != tt.allowed || d.Cause != tt.cause || !strings.HasPrefix(d.Reason, tt.reason) {
				t.Errorf("decision = %v (%v): %q; want %v (%v): %q", d.Allowed, d.Cause, d.Reason, tt.allowed, tt.cause, tt.reason)
			}
			if d.State != active || d.Revision != 1 || !d.HeardAt.Equal(g.heard) {
				t.Errorf("state %v revision %d heard %v; want the rollout's and %v", d.State, d.Revision, d.HeardAt, g.heard)
			}
		})
	}
}

// TestCaughtUp checks when the first catch-up ends.
func TestCaughtUp(t *testing.T) {
	head := parseCursor("h90.r10.i5.a0")
	tests := []struct {
		name   string
		cursor string
		head   map[byte]uint64
		beats  int
		want   bool
	}{
		{"behind on rollouts", "h0.r9.i5.a0", head, 1, false},
		{"behind on incidents", "h0.r10.i4.a0", head, 5, false},
		{"at the head", "h0.r10.i5.a0", head, 0, true},
		{"past the head", "h0.r12.i7.a1", head, 0, true},
		{"health is not followed", "h3.r10.i5.a0", head, 0, true},
		{"unreadable cursor, one heartbeat", "x", head, 1, false},
		{"unreadable cursor, two heartbeats", "x", head, 2, true},
		{"no head, items", "h0.r10.i5.a0", nil, 0, false},
		{"no head, two heartbeats", "h0.r10.i5.a0", nil, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := caughtUp(parseCursor(tt.cursor), tt.head, tt.beats); got != tt.want {
				t.Errorf("caughtUp = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestParseCursor reads hub cursors.
func TestParseCursor(t *testing.T) {
	tests := []struct {
		in   string
		want map[byte]uint64
	}{
		{"h12.r3.i4.a0", map[byte]uint64{'h': 12, 'r': 3, 'i': 4, 'a': 0}},
		{"r3.i4.a0", map[byte]uint64{'r': 3, 'i': 4, 'a': 0}},
		{"", nil},
		{"h12.r3.i4", nil}, // no advisories
		{"h12.rx.i4.a0", nil},
		{"h12..i4.a0", nil},
	}
	for _, tt := range tests {
		got := parseCursor(tt.in)
		if len(got) != len(tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("parseCursor(%q) = %v, want %v", tt.in, got, tt.want)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("parseCursor(%q) = %v, want %v", tt.in, got, tt.want)
			}
		}
	}
}
