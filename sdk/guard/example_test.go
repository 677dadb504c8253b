package guard_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/sdk/guard"
)

// A deployment controller asks the guard before each ring and bakes each
// ring while watching it. Here the vendor's own monitoring pauses the
// rollout during the early ring's bake time; the guard hears of it at once,
// and the controller stops before the broad ring. A pause by an incident of
// another member, or a hub advisory, stops it the same way.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := sdk.New("", sdk.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// A short heartbeat ends the first catch-up sooner when the last items
	// the hub holds are not for this member; the default is 10 seconds.
	g, err := guard.New(ctx, c, guard.WithHeartbeat(2*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer g.Close()
	if err := g.Ready(ctx); err != nil {
		log.Fatal(err)
	}

	r, err := c.AnnounceRollout(ctx, rollout("channel-291-"+unique(), phxv1.Tlp_TLP_GREEN))
	if err != nil {
		log.Fatal(err)
	}
	// The announcement reaches the guard through the hub's feed.
	if _, err := g.Wait(ctx, r.GetRolloutId(), func(d guard.Decision) bool { return d.Revision > 0 }); err != nil {
		log.Fatal(err)
	}

	stages := []struct {
		ring    phxv1.Ring
		percent float64
	}{{phxv1.Ring_RING_CANARY, 1}, {phxv1.Ring_RING_EARLY, 10}, {phxv1.Ring_RING_BROAD, 100}}
	for _, st := range stages {
		d, err := g.Allowed(ctx, r.GetRolloutId())
		if err != nil {
			log.Fatal(err)
		}
		if !d.Allowed {
			fmt.Printf("not deploying %v: %s\n", st.ring, d.Reason)
			break
		}
		fmt.Println("deploying", st.ring)
		r, err = c.UpdateRollout(ctx, r.GetRolloutId(), r.GetRevision(),
			&phxv1.Rollout{CurrentRing: st.ring, PercentDeployed: st.percent}, "current_ring", "percent_deployed")
		if err != nil {
			log.Fatal(err)
		}
		if st.ring == phxv1.Ring_RING_EARLY {
			// The vendor's monitoring sees crashes in the early ring.
			r, err = c.UpdateRollout(ctx, r.GetRolloutId(), r.GetRevision(),
				&phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED, Reason: "kernel crashes in the early ring"}, "state", "reason")
			if err != nil {
				log.Fatal(err)
			}
		}

		// Bake: wait out the bake time, unless the rollout is stopped first.
		bake, stopBake := context.WithTimeout(ctx, 300*time.Millisecond)
		d, err = g.Wait(bake, r.GetRolloutId(), func(d guard.Decision) bool { return !d.Allowed })
		stopBake()
		switch {
		case err == nil:
			fmt.Printf("stopped while baking %v: %v\n", st.ring, d.Cause)
		case !errors.Is(err, context.DeadlineExceeded):
			log.Fatal(err)
		}
	}
	// Output:
	// deploying RING_CANARY
	// deploying RING_EARLY
	// stopped while baking RING_EARLY: paused
	// not deploying RING_BROAD: paused by contoso at revision 4: kernel crashes in the early ring
}
