package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// Spool health cells in an outbox directory before sending them: a call
// returns nil once the hub has stored them, or ErrQueued when they are
// safely on disk but the hub has not answered yet. A process restarted with
// the same directory sends what is still pending.
func ExampleWithOutbox() {
	dir, err := os.MkdirTemp("", "phx-outbox-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c, err := sdk.New("", sdk.FromEnv(), sdk.WithOutbox(dir,
		sdk.OutboxMaxEntries(50_000),
		sdk.OutboxOnRefused(func(r sdk.Refusal) {
			log.Printf("the hub refused %s %s: %v", r.Method, r.ID, r.Err)
		})))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	resp, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell("outbox-" + unique())})
	switch {
	case errors.Is(err, sdk.ErrQueued):
		fmt.Println("spooled; sent when the hub is back")
	case errors.Is(err, sdk.ErrOutboxFull):
		fmt.Println("outbox full: slow down or drop")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("acknowledged: accepted", resp.GetAccepted())
	}
	fmt.Println("pending:", c.OutboxPending())
	// Output:
	// acknowledged: accepted 1
	// pending: 0
}
