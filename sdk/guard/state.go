package guard

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// state is what the guard knows of rollouts, incidents and advisories. It
// is a pure state machine: envelopes go in through apply, decisions come
// out of decide, and time is an argument. It is not safe for concurrent
// use; the Guard locks around it.
type state struct {
	rollouts  map[string]*rolloutInfo
	incidents map[string]*incidentInfo
	// actions indexes incidents by the rollout their rollout_action names,
	// whatever their status.
	actions map[string]map[string]struct{}
	// advisories holds, per rollout, the hub's advisories that recommend
	// pausing it, by advisory id.
	advisories map[string]map[string]*advisoryInfo
}

type rolloutInfo struct {
	state     phxv1.RolloutState
	revision  uint64
	publisher string
	reason    string
	// stateSince is when the rollout entered its current state, by the
	// hub's clock (zero if the hub did not say).
	stateSince time.Time
}

type incidentInfo struct {
	id        string
	revision  uint64
	title     string
	severity  phxv1.Severity
	status    phxv1.Status
	reporter  string
	rolloutID string
	action    phxv1.RolloutActionKind
}

type advisoryInfo struct {
	id      string
	summary string
	// at is when the hub published it (zero if it did not say).
	at time.Time
}

func newState() *state {
	return &state{
		rollouts:   make(map[string]*rolloutInfo),
		incidents:  make(map[string]*incidentInfo),
		actions:    make(map[string]map[string]struct{}),
		advisories: make(map[string]map[string]*advisoryInfo),
	}
}

// apply takes in one envelope and reports whether it changed anything a
// decision rests on. Heartbeats, health cells and unknown kinds change
// nothing. Revisions older than, or equal to, the one known are ignored.
func (s *state) apply(env *phxv1.Envelope) bool {
	switch it := env.GetItem().(type) {
	case *phxv1.Envelope_Rollout:
		return s.applyRollout(env, it.Rollout)
	case *phxv1.Envelope_Incident:
		return s.applyIncident(env, it.Incident)
	case *phxv1.Envelope_Advisory:
		return s.applyAdvisory(env, it.Advisory)
	}
	return false
}

func (s *state) applyRollout(env *phxv1.Envelope, r *phxv1.Rollout) bool {
	id := r.GetRolloutId()
	if id == "" {
		return false
	}
	prev := s.rollouts[id]
	if prev != nil && r.GetRevision() <= prev.revision {
		return false
	}
	next := &rolloutInfo{
		state:     r.GetState(),
		revision:  r.GetRevision(),
		publisher: cmp.Or(r.GetPublisher(), env.GetPublisher()),
		reason:    r.GetReason(),
	}
	if prev != nil && prev.state == next.state {
		next.stateSince = prev.stateSince
	} else {
		next.stateSince = hubTime(r.GetUpdatedAt(), env.GetPublishedAt())
	}
	s.rollouts[id] = next
	return true
}

func (s *state) applyIncident(env *phxv1.Envelope, in *phxv1.Incident) bool {
	id := in.GetId()
	if id == "" {
		return false
	}
	prev := s.incidents[id]
	if prev != nil && in.GetRevision() <= prev.revision {
		return false
	}
	next := &incidentInfo{
		id:        id,
		revision:  in.GetRevision(),
		title:     in.GetTitle(),
		severity:  in.GetSeverity(),
		status:    in.GetStatus(),
		reporter:  cmp.Or(in.GetReporter(), env.GetPublisher()),
		rolloutID: in.GetRolloutAction().GetRolloutId(),
		action:    in.GetRolloutAction().GetAction(),
	}
	if next.action == phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_UNSPECIFIED {
		next.rolloutID = ""
	}
	if prev != nil && prev.rolloutID != "" && prev.rolloutID != next.rolloutID {
		delete(s.actions[prev.rolloutID], id)
		if len(s.actions[prev.rolloutID]) == 0 {
			delete(s.actions, prev.rolloutID)
		}
	}
	if next.rolloutID != "" {
		if s.actions[next.rolloutID] == nil {
			s.actions[next.rolloutID] = make(map[string]struct{})
		}
		s.actions[next.rolloutID][id] = struct{}{}
	}
	s.incidents[id] = next
	return true
}

func (s *state) applyAdvisory(env *phxv1.Envelope, a *phxv1.Advisory) bool {
	if a.GetRecommendation() != phxv1.Recommendation_RECOMMENDATION_PAUSE_ROLLOUT || a.GetRolloutId() == "" || a.GetId() == "" {
		return false
	}
	rid := a.GetRolloutId()
	if s.advisories[rid] == nil {
		s.advisories[rid] = make(map[string]*advisoryInfo)
	}
	s.advisories[rid][a.GetId()] = &advisoryInfo{
		id:      a.GetId(),
		summary: a.GetSummary(),
		at:      hubTime(env.GetPublishedAt(), a.GetEvidence().GetDetectedAt()),
	}
	return true
}

// decide answers for one rollout from what the state holds. It knows
// nothing of the feed's health; the Guard checks that first.
func (s *state) decide(rolloutID string) Decision {
	d := Decision{RolloutID: rolloutID}
	r := s.rollouts[rolloutID]
	if r == nil {
		d.Cause = CauseUnknown
		d.Reason = fmt.Sprintf("unknown rollout %q: the hub has shared no rollout with that id with this member", rolloutID)
		return d
	}
	d.State, d.Revision = r.state, r.revision
	var reasons []string
	deny := func(c Cause, reason string) {
		if len(reasons) == 0 {
			d.Cause = c
		}
		reasons = append(reasons, reason)
	}

	switch r.state {
	case phxv1.RolloutState_ROLLOUT_ACTIVE:
	case phxv1.RolloutState_ROLLOUT_ROLLED_BACK:
		deny(CauseRolledBack, "rolled back by "+r.publisher+" at revision "+itoa(r.revision)+because(r.reason))
	case phxv1.RolloutState_ROLLOUT_PAUSED:
		deny(CausePaused, "paused by "+r.publisher+" at revision "+itoa(r.revision)+because(r.reason))
	case phxv1.RolloutState_ROLLOUT_COMPLETED:
		deny(CauseNotActive, "completed at revision "+itoa(r.revision)+": nothing is left to deploy")
	default:
		deny(CauseNotActive, fmt.Sprintf("state %v at revision %d is not active", r.state, r.revision))
	}

	for _, id := range sortedKeys(s.actions[rolloutID]) {
		in := s.incidents[id]
		if in.status == phxv1.Status_STATUS_RESOLVED {
			continue
		}
		d.IncidentIDs = append(d.IncidentIDs, id)
		deny(CauseIncident, fmt.Sprintf("incident %s (%s, %s) reported by %s asks to %s the rollout: %s",
			id, lower(in.severity.String(), "SEVERITY_"), lower(in.status.String(), "STATUS_"), in.reporter, actionVerb(in.action), in.title))
	}

	for _, id := range sortedKeys(s.advisories[rolloutID]) {
		a := s.advisories[rolloutID][id]
		// Changing the rollout's state after the advice (pausing it, or
		// resuming it after looking into it) is the publisher's answer to
		// it; progress updates are not. Without the times to compare, the
		// advice stands.
		if !a.at.IsZero() && !r.stateSince.IsZero() && r.stateSince.After(a.at) {
			continue
		}
		d.AdvisoryIDs = append(d.AdvisoryIDs, id)
		deny(CauseAdvisory, fmt.Sprintf("hub advisory %s recommends pausing the rollout: %s", id, a.summary))
	}

	if len(reasons) == 0 {
		d.Allowed, d.Cause, d.Reason = true, CauseActive, "active"
		return d
	}
	d.Reason = strings.Join(reasons, "; ")
	return d
}

// because formats a rollout's reason text after its state.
func because(reason string) string {
	if reason == "" {
		return " (no reason given)"
	}
	return ": " + reason
}

func actionVerb(a phxv1.RolloutActionKind) string {
	switch a {
	case phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_PAUSE:
		return "pause"
	case phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_ROLLBACK:
		return "roll back"
	}
	// An action this guard does not know yet still stops the rollout.
	return "act on (" + a.String() + ")"
}

// lower turns an enum name like SEVERITY_CRITICAL into "critical".
func lower(name, prefix string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, prefix), "_", " "))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// hubTime returns the first of the timestamps that is set, or zero.
func hubTime(ts ...*timestamppb.Timestamp) time.Time {
	for _, t := range ts {
		if t != nil && t.IsValid() {
			return t.AsTime()
		}
	}
	return time.Time{}
}
