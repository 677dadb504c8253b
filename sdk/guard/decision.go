package guard

import (
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Cause says in one word why a Decision came out as it did. When several
// things stop a rollout, Cause is the first of them in the order of the
// constants below, from CauseClosed down to CauseAdvisory.
type Cause int

// Causes of a Decision. Every cause but CauseActive denies.
const (
	// CauseActive: the rollout is active and nothing stops it.
	CauseActive Cause = iota
	// CauseClosed: the guard was closed, or the context given to New ended.
	CauseClosed
	// CauseFeedFailed: the hub refused the guard's subscription (for
	// example the member's credentials were revoked); the guard keeps
	// trying.
	CauseFeedFailed
	// CauseSilent: nothing, not even a heartbeat, came from the hub for
	// longer than the maximum silence, or nothing came yet.
	CauseSilent
	// CauseCatchingUp: the guard has not yet read everything the hub
	// retained when it subscribed.
	CauseCatchingUp
	// CauseUnknown: the hub has shared no rollout with this id with the
	// member (never announced, or not in an audience the member is part of).
	CauseUnknown
	// CauseRolledBack: the rollout's state is ROLLOUT_ROLLED_BACK.
	CauseRolledBack
	// CausePaused: the rollout's state is ROLLOUT_PAUSED.
	CausePaused
	// CauseNotActive: the rollout's state is ROLLOUT_COMPLETED (nothing is
	// left to deploy) or one this guard does not know.
	CauseNotActive
	// CauseIncident: an unresolved incident asks to pause the rollout or
	// roll it back.
	CauseIncident
	// CauseAdvisory: a hub advisory recommends pausing the rollout, and the
	// rollout's state has not changed since.
	CauseAdvisory
)

var causeNames = [...]string{
	CauseActive:     "active",
	CauseClosed:     "closed",
	CauseFeedFailed: "feed failed",
	CauseSilent:     "silent",
	CauseCatchingUp: "catching up",
	CauseUnknown:    "unknown rollout",
	CauseRolledBack: "rolled back",
	CausePaused:     "paused",
	CauseNotActive:  "not active",
	CauseIncident:   "incident",
	CauseAdvisory:   "advisory",
}

// String returns the cause in lower case words, e.g. "paused".
func (c Cause) String() string {
	if c >= 0 && int(c) < len(causeNames) {
		return causeNames[c]
	}
	return "cause " + itoa(uint64(c))
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

// Decision is the guard's answer about one rollout.
type Decision struct {
	// RolloutID is the rollout asked about.
	RolloutID string
	// Allowed reports whether the rollout may go on to its next ring.
	Allowed bool
	// Cause is why, in one word; CauseActive exactly when Allowed.
	Cause Cause
	// Reason says why in words: "active" when Allowed, else every reason
	// that stops the rollout, separated by "; ", e.g. "paused by contoso at
	// revision 3: boot failures in canary; incident INC-7Q2M9XK4TB
	// (critical, investigating) reported by microsoft asks to pause the
	// rollout: Boot loops after channel 291".
	Reason string
	// State and Revision are the rollout's as the guard last heard them;
	// zero when the rollout is unknown.
	State    phxv1.RolloutState
	Revision uint64
	// IncidentIDs lists the unresolved incidents that ask to pause the
	// rollout or roll it back, in id order.
	IncidentIDs []string
	// AdvisoryIDs lists the hub advisories in force that recommend pausing
	// the rollout, in id order.
	AdvisoryIDs []string
	// HeardAt is when the guard last heard from the hub, an item or a
	// heartbeat, by the guard's clock; zero if never.
	HeardAt time.Time
}
