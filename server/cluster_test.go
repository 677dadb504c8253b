package server_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestClusterCompareAndSet: on a 3-node JetStream cluster with two hub
// replicas, concurrent writes at the same revision through both hubs still
// have exactly one winner, and every caller is told the truth about its own
// write. (A clustered JetStream checks Nats-Msg-Id before the expected
// sequence, unlike a single server.)
func TestClusterCompareAndSet(t *testing.T) {
	url := extStartNATS(t, 3)
	a := servertest.Start(t, servertest.WithNATSURL(url, 3))
	b := servertest.Start(t, servertest.WithNATSURL(url, 3), servertest.WithDataDir(a.DataDir))
	callers := []*clients{as(t, a, "contoso"), as(t, b, "contoso"), as(t, a, "contoso"), as(t, b, "contoso")}
	platform := []*clients{as(t, a, "microsoft"), as(t, b, "microsoft"), as(t, a, "microsoft"), as(t, b, "microsoft")}

	t.Run("rollout updates", func(t *testing.T) {
		r := announce(t, callers[0], rollout(uniq("r-cluster"), "contoso-av", green()))
		rev := r.Revision
		for round := range 20 {
			got := make([]*phxv1.UpdateRolloutResponse, len(callers))
			errs := make([]error, len(callers))
			race(len(callers), func(i int) {
				got[i], errs[i] = callers[i].rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: rev,
					Rollout: &phxv1.Rollout{PercentDeployed: float64(round*4 + i)}, UpdateMask: mask("percent_deployed")})
			})
			winners := 0
			for i, err := range errs {
				if err != nil {
					if !isCode(err, codes.FailedPrecondition) {
						t.Fatalf("round %d, caller %d: %v", round, i, status.Convert(err))
					}
					continue
				}
				winners++
				if p := got[i].Rollout.PercentDeployed; p != float64(round*4+i) || got[i].Rollout.Revision != rev+1 {
					t.Fatalf("round %d, caller %d sent %d and was answered %v at revision %d", round, i, round*4+i, p, got[i].Rollout.Revision)
				}
			}
			if winners != 1 {
				t.Fatalf("round %d: %d winners", round, winners)
			}
			rev++
		}
	})

	t.Run("incident updates", func(t *testing.T) {
		in := report(t, callers[0], incident("raced on a cluster", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green()))
		rev := in.Revision
		for round := range 20 {
			got := make([]*phxv1.UpdateIncidentResponse, len(platform))
			errs := make([]error, len(platform))
			race(len(platform), func(i int) {
				c := callers[i]
				if i%2 == 1 {
					c = platform[i]
				}
				got[i], errs[i] = c.incident.UpdateIncident(testCtx(t), &phxv1.UpdateIncidentRequest{Id: in.Id, ExpectedRevision: rev,
					Incident: &phxv1.Incident{Impact: uniq("impact")}, UpdateMask: mask("impact")})
			})
			winners := 0
			for i, err := range errs {
				if err != nil {
					if !isCode(err, codes.FailedPrecondition) {
						t.Fatalf("round %d, caller %d: %v", round, i, status.Convert(err))
					}
					continue
				}
				winners++
				if got[i].Incident.Revision != rev+1 {
					t.Fatalf("round %d, caller %d answered revision %d", round, i, got[i].Incident.Revision)
				}
			}
			if winners != 1 {
				t.Fatalf("round %d: %d winners", round, winners)
			}
			rev++
		}
	})
}
