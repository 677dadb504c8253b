// Package guard is a rollout guard for a vendor's deployment controller:
// before each ring, the controller asks Allowed and stops when the answer
// is no.
//
// A Guard subscribes through an sdk.Client to the rollouts, incidents and
// advisories the member may see, from the beginning of what the hub
// retains, builds the current state of every rollout from them, and follows
// the live feed. A change of a rollout's state to paused or rolled back, or
// an incident asking to pause a rollout, reaches every subscriber in its
// audience at once, so the guard knows within moments; Allowed answers from
// memory, without a call to the hub.
//
// The guard fails closed. It denies when the rollout is paused, rolled
// back or completed, when an unresolved incident asks to pause it or roll it
// back, when a hub advisory recommends pausing it; and also when the
// rollout is unknown to it, before it has caught up with the hub, and when
// it has heard nothing from the hub, not even a heartbeat, for longer than
// the maximum silence (WithMaxSilence). A hub outage therefore stops
// rollouts; they go on once the guard hears from the hub again.
//
//	g, err := guard.New(ctx, client)
//	if err != nil {
//		return err
//	}
//	defer g.Close()
//	for _, ring := range rings {
//		d, err := g.Allowed(ctx, rolloutID)
//		if err != nil {
//			return err
//		}
//		if !d.Allowed {
//			return fmt.Errorf("stopped before %v: %s", ring, d.Reason)
//		}
//		deploy(ring)
//	}
package guard
