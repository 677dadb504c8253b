package server_test

import (
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// race runs fn(i) for i in [0, n) at once and waits for all of them.
func race(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}

// TestConcurrentWrites: idempotency keys and compare-and-set hold when the
// same write arrives several times at once.
func TestConcurrentWrites(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	contoso, fabrikam := as(t, h, "contoso"), as(t, h, "fabrikam")

	t.Run("the same cells from four callers", func(t *testing.T) {
		f := open(t, fabrikam, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}})
		batch := cells("contoso-av", 50)
		const callers = 4
		res := make([]*phxv1.PublishSignalsResponse, callers)
		errs := make([]error, callers)
		race(callers, func(i int) {
			res[i], errs[i] = contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: batch})
		})
		for j, s := range batch {
			accepted, cursor := 0, ""
			for i := range callers {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				r := res[i].Results[j]
				switch r.Outcome {
				case phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED:
					accepted++
				case phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE:
				default:
					t.Fatalf("%s: %v", s.SignalId, r)
				}
				if cursor == "" {
					cursor = r.Cursor
				}
				if r.Cursor != cursor {
					t.Fatalf("%s: cursors %q and %q", s.SignalId, cursor, r.Cursor)
				}
			}
			if accepted != 1 {
				t.Fatalf("%s accepted %d times", s.SignalId, accepted)
			}
		}
		marker := publish(t, contoso, cell("contoso-av"))[0]
		got := f.until(signalID, marker.SignalId)
		stored := map[string]int{}
		for _, env := range got {
			stored[signalID(env)]++
		}
		for _, s := range batch {
			if stored[s.SignalId] != 1 {
				t.Fatalf("%s stored %d times", s.SignalId, stored[s.SignalId])
			}
		}
		if len(got) != len(batch)+1 {
			t.Fatalf("%d items stored, want %d", len(got), len(batch)+1)
		}
	})

	t.Run("two vendors announce the same rollout_id", func(t *testing.T) {
		for range 5 {
			id := uniq("r-race")
			var errs [2]error
			race(2, func(i int) {
				c, product := contoso, "contoso-av"
				if i == 1 {
					c, product = fabrikam, "fabrikam-edr"
				}
				_, errs[i] = c.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: rollout(id, product, green())})
			})
			switch {
			case errs[0] == nil:
				wantStatus(t, errs[1], codes.AlreadyExists, "")
			case errs[1] == nil:
				wantStatus(t, errs[0], codes.AlreadyExists, "")
			default:
				t.Fatalf("nobody won: %v, %v", errs[0], errs[1])
			}
		}
	})

	t.Run("one announcement retried at once", func(t *testing.T) {
		req := &phxv1.AnnounceRolloutRequest{Rollout: rollout(uniq("r-retry-race"), "contoso-av", green()), RequestId: uniq("req")}
		var got [3]*phxv1.AnnounceRolloutResponse
		var errs [3]error
		race(3, func(i int) { got[i], errs[i] = contoso.rollouts.AnnounceRollout(testCtx(t), req) })
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("attempt %d: %v", i, errs[i])
			}
			if !proto.Equal(got[i].Rollout, got[0].Rollout) || got[i].Rollout.Revision != 1 {
				t.Fatalf("attempt %d: %v, attempt 0: %v", i, got[i].Rollout, got[0].Rollout)
			}
		}
	})

	t.Run("one incident report retried at once", func(t *testing.T) {
		req := &phxv1.ReportIncidentRequest{Incident: incident("retried at once", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green()), RequestId: uniq("req")}
		var got [3]*phxv1.ReportIncidentResponse
		var errs [3]error
		race(3, func(i int) { got[i], errs[i] = contoso.incident.ReportIncident(testCtx(t), req) })
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("attempt %d: %v", i, errs[i])
			}
			if !proto.Equal(got[i].Incident, got[0].Incident) {
				t.Fatalf("attempt %d: %v, attempt 0: %v", i, got[i].Incident, got[0].Incident)
			}
		}
		l, err := contoso.incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, in := range l.Incidents {
			if in.Title == "retried at once" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d incidents stored", n)
		}
	})

	t.Run("rollout updates at the same revision", func(t *testing.T) {
		r := announce(t, contoso, rollout(uniq("r-cas"), "contoso-av", green()))
		rev := r.Revision
		for round := range 5 {
			var errs [3]error
			var got [3]*phxv1.UpdateRolloutResponse
			race(3, func(i int) {
				got[i], errs[i] = contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: rev,
					Rollout: &phxv1.Rollout{PercentDeployed: float64(10*round + i)}, UpdateMask: mask("percent_deployed")})
			})
			winners := 0
			for i := range errs {
				if errs[i] == nil {
					winners++
					if got[i].Rollout.Revision != rev+1 {
						t.Fatalf("round %d: winner at revision %d", round, got[i].Rollout.Revision)
					}
					continue
				}
				wantStatus(t, errs[i], codes.FailedPrecondition, "expected_revision")
			}
			if winners != 1 {
				t.Fatalf("round %d: %d winners", round, winners)
			}
			rev++
		}
	})
}
