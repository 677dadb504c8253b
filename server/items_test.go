package server_test

import (
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/jsread"
	"github.com/phx-exchange/phx/server/servertest"
)

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

func announce(t *testing.T, c *clients, r *phxv1.Rollout) *phxv1.Rollout {
	t.Helper()
	res, err := c.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: r})
	if err != nil {
		t.Fatal(err)
	}
	return res.Rollout
}

func TestRollouts(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	contoso, fabrikam, northwind, microsoft, cert := as(t, h, "contoso"), as(t, h, "fabrikam"), as(t, h, "northwind"), as(t, h, "microsoft"), as(t, h, "national-cert")

	t.Run("announce", func(t *testing.T) {
		in := rollout("r-announce", "contoso-av", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER})
		got := announce(t, contoso, in)
		if got.Revision != 1 || got.Publisher != "contoso" || got.State != phxv1.RolloutState_ROLLOUT_ACTIVE ||
			got.CreatedAt == nil || got.UpdatedAt == nil || got.RolloutId != in.RolloutId || got.ContentVersion != in.ContentVersion {
			t.Fatalf("announced %v", got)
		}
		// Readers see the same state.
		for _, c := range []*clients{contoso, fabrikam, microsoft} {
			g, err := c.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: in.RolloutId})
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(g.Rollout, got) {
				t.Fatalf("get: %v, announced %v", g.Rollout, got)
			}
		}
	})

	t.Run("duplicate rollout_id", func(t *testing.T) {
		announce(t, contoso, rollout("r-dup", "contoso-av", green()))
		_, err := contoso.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: rollout("r-dup", "contoso-av", green())})
		wantStatus(t, err, codes.AlreadyExists, "")
		// The id is unique on the hub, not per publisher.
		_, err = fabrikam.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: rollout("r-dup", "fabrikam-edr", green())})
		wantStatus(t, err, codes.AlreadyExists, "")
		// Also when the other vendor cannot see the existing rollout.
		announce(t, contoso, rollout("r-dup-red", "contoso-av", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"microsoft"}}))
		_, err = fabrikam.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: rollout("r-dup-red", "fabrikam-edr", green())})
		wantStatus(t, err, codes.AlreadyExists, "")
		g, err := microsoft.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: "r-dup"})
		if err != nil || g.Rollout.Publisher != "contoso" || g.Rollout.Revision != 1 {
			t.Fatalf("the first announcement must stand: %v %v", g, err)
		}
	})

	t.Run("retry with the same request_id", func(t *testing.T) {
		req := &phxv1.AnnounceRolloutRequest{Rollout: rollout("r-retry", "contoso-av", green()), RequestId: uniq("req")}
		first, err := contoso.rollouts.AnnounceRollout(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := contoso.rollouts.AnnounceRollout(testCtx(t), req)
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if !proto.Equal(first.Rollout, again.Rollout) {
			t.Fatalf("retry answered %v, first %v", again.Rollout, first.Rollout)
		}
		// The same request_id from another org is another request.
		other := &phxv1.AnnounceRolloutRequest{Rollout: rollout("r-retry", "fabrikam-edr", green()), RequestId: req.RequestId}
		_, err = fabrikam.rollouts.AnnounceRollout(testCtx(t), other)
		wantStatus(t, err, codes.AlreadyExists, "")
		// An update retried with its request_id is applied once.
		up := &phxv1.UpdateRolloutRequest{RolloutId: "r-retry", ExpectedRevision: 1, RequestId: uniq("req"),
			Rollout: &phxv1.Rollout{PercentDeployed: 10}, UpdateMask: mask("percent_deployed")}
		u1, err := contoso.rollouts.UpdateRollout(testCtx(t), up)
		if err != nil {
			t.Fatal(err)
		}
		u2, err := contoso.rollouts.UpdateRollout(testCtx(t), up)
		if err != nil {
			t.Fatalf("update retry: %v", err)
		}
		if u1.Rollout.Revision != 2 || !proto.Equal(u1.Rollout, u2.Rollout) {
			t.Fatalf("update retry: %v then %v", u1.Rollout, u2.Rollout)
		}
	})

	t.Run("validation", func(t *testing.T) {
		cases := []struct {
			name  string
			edit  func(*phxv1.Rollout)
			field string
		}{
			{"rollout_id missing", func(r *phxv1.Rollout) { r.RolloutId = "" }, "rollout.rollout_id"},
			{"rollout_id upper case", func(r *phxv1.Rollout) { r.RolloutId = "R-1" }, "rollout.rollout_id"},
			{"product missing", func(r *phxv1.Rollout) { r.Product = "" }, "rollout.product"},
			{"content_version missing", func(r *phxv1.Rollout) { r.ContentVersion = "" }, "rollout.content_version"},
			{"current_ring 99", func(r *phxv1.Rollout) { r.CurrentRing = 99 }, "rollout.current_ring"},
			{"percent_deployed 101", func(r *phxv1.Rollout) { r.PercentDeployed = 101 }, "rollout.percent_deployed"},
			{"incident_id not an incident id", func(r *phxv1.Rollout) { r.IncidentId = "INC-1" }, "rollout.incident_id"},
			{"schedule target 0", func(r *phxv1.Rollout) { r.Schedule[1].TargetPercent = 0 }, "rollout.schedule[1].target_percent"},
			{"schedule ring missing", func(r *phxv1.Rollout) { r.Schedule[0].Ring = 0 }, "rollout.schedule[0].ring"},
			{"state 99", func(r *phxv1.Rollout) { r.State = 99 }, "rollout.state"},
			{"announced rolled back", func(r *phxv1.Rollout) { r.State = phxv1.RolloutState_ROLLOUT_ROLLED_BACK }, "rollout.state"},
			{"revision set", func(r *phxv1.Rollout) { r.Revision = 7 }, "rollout.revision"},
			{"audience missing", func(r *phxv1.Rollout) { r.Audience = nil }, "rollout.audience"},
			{"audience RED without orgs", func(r *phxv1.Rollout) { r.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED} }, "rollout.audience.orgs"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := rollout(uniq("r-val"), "contoso-av", green())
				tc.edit(r)
				_, err := contoso.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: r})
				wantStatus(t, err, codes.InvalidArgument, tc.field)
			})
		}
		_, err := contoso.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{})
		wantStatus(t, err, codes.InvalidArgument, "rollout")
		_, err = contoso.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: rollout("r-val-req", "contoso-av", green()), RequestId: "a b"})
		wantStatus(t, err, codes.InvalidArgument, "request_id")
	})

	t.Run("another vendor's product", func(t *testing.T) {
		_, err := fabrikam.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: rollout("r-not-mine", "contoso-av", green())})
		wantStatus(t, err, codes.PermissionDenied, "rollout.product")
		_, err = microsoft.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: rollout("r-not-mine", "contoso-av", green())})
		wantStatus(t, err, codes.PermissionDenied, "rollout.product")
		_, err = contoso.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: "r-not-mine"})
		wantStatus(t, err, codes.NotFound, "")
		announce(t, microsoft, rollout("r-windows", "windows", green()))
	})

	t.Run("update", func(t *testing.T) {
		r := announce(t, contoso, rollout("r-update", "contoso-av", green()))
		up := func(c *clients, rev uint64, in *phxv1.Rollout, paths ...string) (*phxv1.Rollout, error) {
			res, err := c.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: rev, Rollout: in, UpdateMask: mask(paths...)})
			return res.GetRollout(), err
		}
		got, err := up(contoso, 1, &phxv1.Rollout{CurrentRing: phxv1.Ring_RING_EARLY, PercentDeployed: 20, Reason: "canary healthy"}, "current_ring", "percent_deployed", "reason")
		if err != nil {
			t.Fatal(err)
		}
		if got.Revision != 2 || got.CurrentRing != phxv1.Ring_RING_EARLY || got.PercentDeployed != 20 || got.Reason != "canary healthy" ||
			got.ContentVersion != r.ContentVersion || !got.CreatedAt.AsTime().Equal(r.CreatedAt.AsTime()) {
			t.Fatalf("updated %v", got)
		}
		_, err = up(contoso, 1, &phxv1.Rollout{PercentDeployed: 30}, "percent_deployed")
		wantStatus(t, err, codes.FailedPrecondition, "expected_revision")
		_, err = up(contoso, 3, &phxv1.Rollout{PercentDeployed: 30}, "percent_deployed")
		wantStatus(t, err, codes.FailedPrecondition, "expected_revision")
		_, err = up(fabrikam, 2, &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, "state")
		wantStatus(t, err, codes.PermissionDenied, "rollout_id")
		_, err = up(microsoft, 2, &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, "state")
		wantStatus(t, err, codes.PermissionDenied, "rollout_id")
		_, err = up(contoso, 2, &phxv1.Rollout{CurrentRing: phxv1.Ring_RING_CANARY}, "current_ring")
		wantStatus(t, err, codes.FailedPrecondition, "rollout.current_ring")
		_, err = up(contoso, 2, &phxv1.Rollout{PercentDeployed: 30}, "content_version")
		wantStatus(t, err, codes.InvalidArgument, "update_mask.paths[0]")
		_, err = up(contoso, 2, &phxv1.Rollout{PercentDeployed: 130}, "percent_deployed")
		wantStatus(t, err, codes.InvalidArgument, "rollout.percent_deployed")
		_, err = up(contoso, 2, &phxv1.Rollout{PercentDeployed: 30})
		wantStatus(t, err, codes.InvalidArgument, "update_mask")
		_, err = contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, Rollout: &phxv1.Rollout{}, UpdateMask: mask("reason")})
		wantStatus(t, err, codes.InvalidArgument, "expected_revision")
		_, err = contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: "r-no-such", ExpectedRevision: 1, Rollout: &phxv1.Rollout{}, UpdateMask: mask("reason")})
		wantStatus(t, err, codes.NotFound, "")
		// Refused updates changed nothing.
		g, err := contoso.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: r.RolloutId})
		if err != nil || !proto.Equal(g.Rollout, got) {
			t.Fatalf("after refused updates: %v %v", g, err)
		}
	})

	t.Run("state machine", func(t *testing.T) {
		const (
			active   = phxv1.RolloutState_ROLLOUT_ACTIVE
			paused   = phxv1.RolloutState_ROLLOUT_PAUSED
			rolled   = phxv1.RolloutState_ROLLOUT_ROLLED_BACK
			complete = phxv1.RolloutState_ROLLOUT_COMPLETED
		)
		cases := []struct {
			path []phxv1.RolloutState // applied in order from ACTIVE
			last codes.Code           // the code of the last move
		}{
			{[]phxv1.RolloutState{paused}, codes.OK},
			{[]phxv1.RolloutState{paused, active}, codes.OK},
			{[]phxv1.RolloutState{paused, rolled}, codes.OK},
			{[]phxv1.RolloutState{rolled}, codes.OK},
			{[]phxv1.RolloutState{complete}, codes.OK},
			{[]phxv1.RolloutState{paused, complete}, codes.FailedPrecondition},
			{[]phxv1.RolloutState{rolled, active}, codes.FailedPrecondition},
			{[]phxv1.RolloutState{rolled, paused}, codes.FailedPrecondition},
			{[]phxv1.RolloutState{rolled, complete}, codes.FailedPrecondition},
			{[]phxv1.RolloutState{rolled, rolled}, codes.FailedPrecondition},
			{[]phxv1.RolloutState{complete, active}, codes.FailedPrecondition},
			{[]phxv1.RolloutState{complete, rolled}, codes.FailedPrecondition},
		}
		for _, tc := range cases {
			var name string
			for _, s := range tc.path {
				name += "→" + s.String()
			}
			t.Run(name, func(t *testing.T) {
				r := announce(t, contoso, rollout(uniq("r-sm"), "contoso-av", green()))
				rev := r.Revision
				for i, s := range tc.path {
					res, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: rev,
						Rollout: &phxv1.Rollout{State: s, Reason: "step"}, UpdateMask: mask("state", "reason")})
					if i < len(tc.path)-1 || tc.last == codes.OK {
						if err != nil {
							t.Fatalf("move %d to %s: %v", i, s, err)
						}
						if res.Rollout.State != s || res.Rollout.Revision != rev+1 {
							t.Fatalf("move %d: %v", i, res.Rollout)
						}
						rev++
						continue
					}
					wantStatus(t, err, tc.last, "rollout.state")
				}
			})
		}
		t.Run("final states change nothing else either", func(t *testing.T) {
			for _, final := range []phxv1.RolloutState{rolled, complete} {
				r := announce(t, contoso, rollout(uniq("r-final"), "contoso-av", green()))
				if _, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 1,
					Rollout: &phxv1.Rollout{State: final}, UpdateMask: mask("state")}); err != nil {
					t.Fatal(err)
				}
				_, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 2,
					Rollout: &phxv1.Rollout{Reason: "late note"}, UpdateMask: mask("reason")})
				wantStatus(t, err, codes.FailedPrecondition, "rollout.state")
			}
		})
		t.Run("a rollback may return to an earlier ring", func(t *testing.T) {
			r := announce(t, contoso, rollout(uniq("r-back"), "contoso-av", green()))
			_, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 1,
				Rollout: &phxv1.Rollout{State: rolled, CurrentRing: phxv1.Ring_RING_INTERNAL}, UpdateMask: mask("state", "current_ring")})
			if err != nil {
				t.Fatal(err)
			}
		})
	})

	t.Run("audience", func(t *testing.T) {
		amber := func(orgs ...string) *phxv1.Audience { return &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: orgs} }
		cases := []struct {
			name string
			from *phxv1.Audience
			to   *phxv1.Audience
			code codes.Code
		}{
			{"AMBER to GREEN", amber(), green(), codes.PermissionDenied},
			{"AMBER to CLEAR", amber(), &phxv1.Audience{Tlp: phxv1.Tlp_TLP_CLEAR}, codes.PermissionDenied},
			{"RED to AMBER_STRICT", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam"}}, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT, Orgs: []string{"fabrikam"}}, codes.PermissionDenied},
			{"dropping the named orgs", amber("fabrikam"), amber(), codes.PermissionDenied},
			{"adding an org", amber("fabrikam"), amber("fabrikam", "northwind"), codes.PermissionDenied},
			{"revealing a pseudonymous publisher", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Pseudonymous: true}, amber(), codes.PermissionDenied},
			{"GREEN to AMBER", green(), amber(), codes.OK},
			{"AMBER to AMBER_STRICT", amber(), &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT}, codes.OK},
			{"AMBER to RED", amber("fabrikam", "northwind"), &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam"}}, codes.OK},
			{"fewer orgs", amber("fabrikam", "northwind"), amber("northwind"), codes.OK},
			{"naming orgs", green(), &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN, Orgs: []string{"microsoft"}}, codes.OK},
			{"going pseudonymous", amber(), &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Pseudonymous: true}, codes.OK},
			{"unchanged", amber("fabrikam"), amber("fabrikam"), codes.OK},
			// Under AMBER a CERT sees an item only when named: naming one
			// lets it in.
			{"AMBER naming a CERT", amber(), amber("national-cert"), codes.PermissionDenied},
			{"AMBER_STRICT naming a CERT", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT},
				&phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT, Orgs: []string{"fabrikam", "national-cert"}}, codes.PermissionDenied},
			{"AMBER to RED for a CERT", amber(), &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"national-cert"}}, codes.PermissionDenied},
			{"AMBER to RED for the operator", amber(), &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"operator"}}, codes.PermissionDenied},
			{"GREEN to AMBER for a CERT", green(), amber("national-cert"), codes.OK},
			{"AMBER for a CERT to RED for it", amber("national-cert", "fabrikam"), &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"national-cert"}}, codes.OK},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := announce(t, contoso, rollout(uniq("r-aud"), "contoso-av", tc.from))
				res, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 1,
					Rollout: &phxv1.Rollout{Audience: tc.to}, UpdateMask: mask("audience")})
				if tc.code != codes.OK {
					wantStatus(t, err, tc.code, "rollout.audience")
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(res.Rollout.Audience, tc.to) {
					t.Fatalf("audience %v, want %v", res.Rollout.Audience, tc.to)
				}
			})
		}
		t.Run("a refused widening shows nothing", func(t *testing.T) {
			r := announce(t, contoso, rollout(uniq("r-aud"), "contoso-av", amber()))
			_, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 1,
				Rollout: &phxv1.Rollout{Audience: amber("national-cert")}, UpdateMask: mask("audience")})
			wantStatus(t, err, codes.PermissionDenied, "rollout.audience")
			_, err = cert.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: r.RolloutId})
			wantStatus(t, err, codes.NotFound, "")
		})
		r := announce(t, contoso, rollout(uniq("r-aud"), "contoso-av", amber()))
		_, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 1,
			Rollout: &phxv1.Rollout{}, UpdateMask: mask("audience")})
		wantStatus(t, err, codes.InvalidArgument, "rollout.audience")
		_, err = contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 1,
			Rollout: &phxv1.Rollout{Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED}}, UpdateMask: mask("audience")})
		wantStatus(t, err, codes.InvalidArgument, "rollout.audience.orgs")
	})

	t.Run("visibility", func(t *testing.T) {
		red := announce(t, contoso, rollout("r-red", "contoso-av", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam"}}))
		amber := announce(t, contoso, rollout("r-amber", "contoso-av", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}))
		amberCERT := announce(t, contoso, rollout("r-amber-cert", "contoso-av", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: []string{"national-cert", "fabrikam"}}))
		cases := []struct {
			who     *clients
			name    string
			rollout *phxv1.Rollout
			code    codes.Code
		}{
			{contoso, "publisher/red", red, codes.OK},
			{fabrikam, "named/red", red, codes.OK},
			{northwind, "not named/red", red, codes.NotFound},
			{microsoft, "platform not named/red", red, codes.NotFound},
			{cert, "cert/red", red, codes.NotFound},
			{northwind, "vendor/amber", amber, codes.OK},
			{microsoft, "platform/amber", amber, codes.OK},
			{cert, "cert not named/amber", amber, codes.NotFound},
			{cert, "cert named/amber", amberCERT, codes.OK},
			{northwind, "vendor not named/amber", amberCERT, codes.NotFound},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				g, err := tc.who.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: tc.rollout.RolloutId})
				wantStatus(t, err, tc.code, "")
				if err == nil && !proto.Equal(g.Rollout, tc.rollout) {
					t.Fatalf("got %v", g.Rollout)
				}
				// Listing agrees with getting.
				l, err := tc.who.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{PageSize: 1000})
				if err != nil {
					t.Fatal(err)
				}
				listed := slices.ContainsFunc(l.Rollouts, func(r *phxv1.Rollout) bool { return r.RolloutId == tc.rollout.RolloutId })
				if listed != (tc.code == codes.OK) {
					t.Fatalf("listed = %v", listed)
				}
			})
		}
		// A rollout that is not visible cannot be updated either: it does
		// not exist for the caller.
		_, err := northwind.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: red.RolloutId, ExpectedRevision: 1,
			Rollout: &phxv1.Rollout{Reason: "x"}, UpdateMask: mask("reason")})
		wantStatus(t, err, codes.NotFound, "")
		_, err = contoso.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: "r-unknown"})
		wantStatus(t, err, codes.NotFound, "")
		_, err = contoso.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: "Not An Id"})
		wantStatus(t, err, codes.InvalidArgument, "rollout_id")
	})

	t.Run("pseudonymous publisher", func(t *testing.T) {
		r := announce(t, contoso, rollout("r-anon", "contoso-av", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN, Pseudonymous: true}))
		if r.Publisher != "contoso" {
			t.Fatalf("the publisher sees %q", r.Publisher)
		}
		for _, tc := range []struct {
			c    *clients
			want string
		}{{contoso, "contoso"}, {microsoft, "contoso"}, {fabrikam, "anon-"}, {northwind, "anon-"}, {cert, "anon-"}} {
			g, err := tc.c.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: r.RolloutId})
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "anon-" {
				if !regexp.MustCompile(`^anon-[a-z2-7]{12}$`).MatchString(g.Rollout.Publisher) {
					t.Fatalf("a peer sees publisher %q", g.Rollout.Publisher)
				}
			} else if g.Rollout.Publisher != tc.want {
				t.Fatalf("sees publisher %q, want %q", g.Rollout.Publisher, tc.want)
			}
		}
	})

	t.Run("list pagination", func(t *testing.T) {
		var want []string
		for range 7 {
			want = append(want, announce(t, northwind, rollout(uniq("r-page"), "northwind-sensor", green())).RolloutId)
		}
		slices.Sort(want)
		all, err := northwind.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{Products: []string{"northwind-sensor"}})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range all.Rollouts {
			got = append(got, r.RolloutId)
		}
		wantIDs(t, "unpaged", got, want)
		if all.NextPageToken != "" {
			t.Fatalf("one page, yet next_page_token %q", all.NextPageToken)
		}
		for _, size := range []uint32{1, 2, 3, 7} {
			var paged []string
			token := ""
			pages := 0
			for {
				res, err := fabrikam.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{Products: []string{"northwind-sensor"}, PageSize: size, PageToken: token})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(res.Rollouts) > int(size) {
					t.Fatalf("page of %d with page_size %d", len(res.Rollouts), size)
				}
				for _, r := range res.Rollouts {
					paged = append(paged, r.RolloutId)
				}
				if res.NextPageToken == "" {
					break
				}
				token = res.NextPageToken
			}
			wantIDs(t, "paged", paged, want)
			if wantPages := (len(want) + int(size) - 1) / int(size); pages != wantPages {
				t.Fatalf("page_size %d: %d pages, want %d", size, pages, wantPages)
			}
		}
		// Filters by state.
		_, err = northwind.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: want[3], ExpectedRevision: 1,
			Rollout: &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, UpdateMask: mask("state")})
		if err != nil {
			t.Fatal(err)
		}
		paused, err := fabrikam.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{Products: []string{"northwind-sensor"}, States: []phxv1.RolloutState{phxv1.RolloutState_ROLLOUT_PAUSED}})
		if err != nil {
			t.Fatal(err)
		}
		if len(paused.Rollouts) != 1 || paused.Rollouts[0].RolloutId != want[3] || paused.Rollouts[0].Revision != 2 {
			t.Fatalf("paused: %v", paused.Rollouts)
		}
		_, err = fabrikam.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{PageSize: 1001})
		wantStatus(t, err, codes.InvalidArgument, "page_size")
		_, err = fabrikam.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{Products: []string{"ok", "Not OK"}})
		wantStatus(t, err, codes.InvalidArgument, "products[1]")
	})
}

func report(t *testing.T, c *clients, in *phxv1.Incident) *phxv1.Incident {
	t.Helper()
	res, err := c.incident.ReportIncident(testCtx(t), &phxv1.ReportIncidentRequest{Incident: in})
	if err != nil {
		t.Fatal(err)
	}
	return res.Incident
}

var incidentID = regexp.MustCompile(`^INC-[0-9A-Z]{10}$`)

func TestIncidents(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	contoso, fabrikam, northwind, microsoft, cert := as(t, h, "contoso"), as(t, h, "fabrikam"), as(t, h, "northwind"), as(t, h, "microsoft"), as(t, h, "national-cert")
	const (
		investigating = phxv1.Status_STATUS_INVESTIGATING
		identified    = phxv1.Status_STATUS_IDENTIFIED
		mitigating    = phxv1.Status_STATUS_MITIGATING
		monitoring    = phxv1.Status_STATUS_MONITORING
		resolved      = phxv1.Status_STATUS_RESOLVED
	)
	update := func(c *clients, id string, rev uint64, in *phxv1.Incident, paths ...string) (*phxv1.Incident, error) {
		res, err := c.incident.UpdateIncident(testCtx(t), &phxv1.UpdateIncidentRequest{Id: id, ExpectedRevision: rev, Incident: in, UpdateMask: mask(paths...)})
		return res.GetIncident(), err
	}

	t.Run("report", func(t *testing.T) {
		in := incident("boot loop after channel 291", "contoso-av", phxv1.Severity_SEVERITY_CRITICAL, green())
		got := report(t, contoso, in)
		if !incidentID.MatchString(got.Id) || got.Revision != 1 || got.Reporter != "contoso" || got.Status != investigating ||
			got.CreatedAt == nil || got.UpdatedAt == nil || got.ResolvedAt != nil || got.Title != in.Title {
			t.Fatalf("reported %v", got)
		}
		other := report(t, contoso, in)
		if other.Id == got.Id {
			t.Fatalf("two reports share id %s", got.Id)
		}
		g, err := fabrikam.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: got.Id})
		if err != nil || !proto.Equal(g.Incident, got) {
			t.Fatalf("get: %v %v", g, err)
		}
	})

	t.Run("retry with the same request_id", func(t *testing.T) {
		req := &phxv1.ReportIncidentRequest{Incident: incident("retried", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green()), RequestId: uniq("req")}
		first, err := contoso.incident.ReportIncident(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := contoso.incident.ReportIncident(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		if again.Incident.Id != first.Incident.Id || !proto.Equal(again.Incident, first.Incident) {
			t.Fatalf("retry: %v, first %v", again.Incident, first.Incident)
		}
		// The same key from another org is another request.
		req2 := &phxv1.ReportIncidentRequest{Incident: incident("retried", "fabrikam-edr", phxv1.Severity_SEVERITY_HIGH, green()), RequestId: req.RequestId}
		other, err := fabrikam.incident.ReportIncident(testCtx(t), req2)
		if err != nil {
			t.Fatal(err)
		}
		if other.Incident.Id == first.Incident.Id || other.Incident.Reporter != "fabrikam" {
			t.Fatalf("another org's request: %v", other.Incident)
		}
		// An update retried with its request_id is applied once.
		up := &phxv1.UpdateIncidentRequest{Id: first.Incident.Id, ExpectedRevision: 1, RequestId: uniq("req"),
			Incident: &phxv1.Incident{Status: identified}, UpdateMask: mask("status")}
		u1, err := contoso.incident.UpdateIncident(testCtx(t), up)
		if err != nil {
			t.Fatal(err)
		}
		u2, err := contoso.incident.UpdateIncident(testCtx(t), up)
		if err != nil {
			t.Fatalf("update retry: %v", err)
		}
		if u1.Incident.Revision != 2 || !proto.Equal(u1.Incident, u2.Incident) {
			t.Fatalf("update retry: %v then %v", u1.Incident, u2.Incident)
		}
	})

	t.Run("ownership", func(t *testing.T) {
		_, err := fabrikam.incident.ReportIncident(testCtx(t), &phxv1.ReportIncidentRequest{Incident: incident("about a peer", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green())})
		wantStatus(t, err, codes.PermissionDenied, "incident.affected[0].product")
		mixed := incident("mixed", "fabrikam-edr", phxv1.Severity_SEVERITY_HIGH, green())
		mixed.Affected = append(mixed.Affected, &phxv1.Affected{Product: "northwind-sensor"})
		_, err = fabrikam.incident.ReportIncident(testCtx(t), &phxv1.ReportIncidentRequest{Incident: mixed})
		wantStatus(t, err, codes.PermissionDenied, "incident.affected[1].product")
		// The platform coordinates: it may report about any product.
		got := report(t, microsoft, incident("ecosystem boot loops", "contoso-av", phxv1.Severity_SEVERITY_CRITICAL, green()))
		if got.Reporter != "microsoft" {
			t.Fatalf("reporter %q", got.Reporter)
		}
		// Only the reporter or the platform updates.
		_, err = update(contoso, got.Id, 1, &phxv1.Incident{Status: identified}, "status")
		wantStatus(t, err, codes.PermissionDenied, "id")
		mine := report(t, contoso, incident("own", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green()))
		_, err = update(fabrikam, mine.Id, 1, &phxv1.Incident{Status: identified}, "status")
		wantStatus(t, err, codes.PermissionDenied, "id")
		u, err := update(microsoft, mine.Id, 1, &phxv1.Incident{Status: identified}, "status")
		if err != nil || u.Reporter != "contoso" || u.Revision != 2 {
			t.Fatalf("platform update: %v %v", u, err)
		}
		// A vendor cannot widen the affected products to a peer's.
		_, err = update(contoso, mine.Id, 2, &phxv1.Incident{Affected: []*phxv1.Affected{{Product: "contoso-av"}, {Product: "fabrikam-edr"}}}, "affected")
		wantStatus(t, err, codes.PermissionDenied, "incident.affected[1].product")
		_, err = cert.incident.ReportIncident(testCtx(t), &phxv1.ReportIncidentRequest{Incident: incident("cert", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green())})
		wantStatus(t, err, codes.PermissionDenied, "")
	})

	t.Run("validation", func(t *testing.T) {
		cases := []struct {
			name  string
			edit  func(*phxv1.Incident)
			field string
		}{
			{"title missing", func(in *phxv1.Incident) { in.Title = "" }, "incident.title"},
			{"title too long", func(in *phxv1.Incident) { in.Title = string(make([]byte, 201)) }, "incident.title"},
			{"severity missing", func(in *phxv1.Incident) { in.Severity = 0 }, "incident.severity"},
			{"severity 99", func(in *phxv1.Incident) { in.Severity = 99 }, "incident.severity"},
			{"status 99", func(in *phxv1.Incident) { in.Status = 99 }, "incident.status"},
			{"no affected product", func(in *phxv1.Incident) { in.Affected = nil }, "incident.affected"},
			{"unknown product", func(in *phxv1.Incident) { in.Affected[0].Product = "acme-av" }, "incident.affected[0].product"},
			{"bad os build", func(in *phxv1.Incident) { in.Affected[0].OsBuilds = []string{"10.0", "a b"} }, "incident.affected[0].os_builds[1]"},
			{"remediation without category", func(in *phxv1.Incident) {
				in.Remediations = []*phxv1.Remediation{{Details: "reboot"}}
			}, "incident.remediations[0].category"},
			{"remediation http url", func(in *phxv1.Incident) {
				in.Remediations = []*phxv1.Remediation{{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_WORKAROUND, Details: "x", Url: "http://example.com"}}
			}, "incident.remediations[0].url"},
			{"rollout action without kind", func(in *phxv1.Incident) { in.RolloutAction = &phxv1.RolloutAction{RolloutId: "r-1"} }, "incident.rollout_action.action"},
			{"id set", func(in *phxv1.Incident) { in.Id = "INC-0000000000" }, "incident.id"},
			{"posts set", func(in *phxv1.Incident) { in.Posts = []*phxv1.Post{{Text: "x"}} }, "incident.posts"},
			{"audience missing", func(in *phxv1.Incident) { in.Audience = nil }, "incident.audience"},
			{"audience unknown org", func(in *phxv1.Incident) {
				in.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"acme"}}
			}, "incident.audience.orgs[0]"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				in := incident("validation", "contoso-av", phxv1.Severity_SEVERITY_LOW, green())
				tc.edit(in)
				_, err := contoso.incident.ReportIncident(testCtx(t), &phxv1.ReportIncidentRequest{Incident: in})
				wantStatus(t, err, codes.InvalidArgument, tc.field)
			})
		}
		_, err := contoso.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: "INC-1"})
		wantStatus(t, err, codes.InvalidArgument, "id")
		_, err = contoso.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: "INC-0000000000"})
		wantStatus(t, err, codes.NotFound, "")
	})

	t.Run("update", func(t *testing.T) {
		in := report(t, contoso, incident("update me", "contoso-av", phxv1.Severity_SEVERITY_MEDIUM, green()))
		u, err := update(contoso, in.Id, 1, &phxv1.Incident{Severity: phxv1.Severity_SEVERITY_HIGH, Title: "renamed", Impact: "ignored: not in the mask"}, "severity", "title")
		if err != nil {
			t.Fatal(err)
		}
		if u.Revision != 2 || u.Severity != phxv1.Severity_SEVERITY_HIGH || u.Title != "renamed" || u.Impact != in.Impact || u.Id != in.Id ||
			!u.CreatedAt.AsTime().Equal(in.CreatedAt.AsTime()) {
			t.Fatalf("updated %v", u)
		}
		_, err = update(contoso, in.Id, 1, &phxv1.Incident{Title: "stale"}, "title")
		wantStatus(t, err, codes.FailedPrecondition, "expected_revision")
		_, err = update(contoso, in.Id, 2, &phxv1.Incident{Title: "x"}, "reporter")
		wantStatus(t, err, codes.InvalidArgument, "update_mask.paths[0]")
		_, err = update(contoso, in.Id, 2, &phxv1.Incident{Title: ""}, "title")
		wantStatus(t, err, codes.InvalidArgument, "incident.title")
		_, err = update(contoso, in.Id, 2, &phxv1.Incident{Audience: green()})
		wantStatus(t, err, codes.InvalidArgument, "update_mask")
		_, err = update(contoso, in.Id, 0, &phxv1.Incident{Title: "x"}, "title")
		wantStatus(t, err, codes.InvalidArgument, "expected_revision")
		_, err = update(contoso, "INC-0000000000", 1, &phxv1.Incident{Title: "x"}, "title")
		wantStatus(t, err, codes.NotFound, "")
		_, err = update(contoso, in.Id, 2, &phxv1.Incident{Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_CLEAR}}, "audience")
		wantStatus(t, err, codes.PermissionDenied, "incident.audience")
		g, err := contoso.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: in.Id})
		if err != nil || !proto.Equal(g.Incident, u) {
			t.Fatalf("after refused updates: %v %v", g, err)
		}
	})

	t.Run("status moves", func(t *testing.T) {
		cases := []struct {
			path []phxv1.Status
			last codes.Code
		}{
			{[]phxv1.Status{identified, mitigating, monitoring, resolved}, codes.OK},
			{[]phxv1.Status{monitoring, investigating}, codes.OK},
			{[]phxv1.Status{resolved}, codes.OK},
			{[]phxv1.Status{resolved, investigating}, codes.OK},
			{[]phxv1.Status{resolved, investigating, resolved}, codes.OK},
			{[]phxv1.Status{resolved, mitigating}, codes.FailedPrecondition},
			{[]phxv1.Status{resolved, identified}, codes.FailedPrecondition},
			{[]phxv1.Status{resolved, monitoring}, codes.FailedPrecondition},
		}
		for _, tc := range cases {
			name := ""
			for _, s := range tc.path {
				name += "→" + s.String()
			}
			t.Run(name, func(t *testing.T) {
				in := report(t, contoso, incident("moves", "contoso-av", phxv1.Severity_SEVERITY_LOW, green()))
				rev := in.Revision
				for i, s := range tc.path {
					u, err := update(contoso, in.Id, rev, &phxv1.Incident{Status: s}, "status")
					if i == len(tc.path)-1 && tc.last != codes.OK {
						wantStatus(t, err, tc.last, "incident.status")
						return
					}
					if err != nil {
						t.Fatalf("move %d to %s: %v", i, s, err)
					}
					rev++
					if u.Status != s || u.Revision != rev {
						t.Fatalf("move %d: %v", i, u)
					}
					if (s == resolved) != (u.ResolvedAt != nil) {
						t.Fatalf("status %s with resolved_at %v", s, u.ResolvedAt)
					}
				}
			})
		}
		in := report(t, contoso, incident("bad status", "contoso-av", phxv1.Severity_SEVERITY_LOW, green()))
		_, err := update(contoso, in.Id, 1, &phxv1.Incident{Status: 0}, "status")
		wantStatus(t, err, codes.InvalidArgument, "incident.status")
	})

	t.Run("concurrent updates", func(t *testing.T) {
		in := report(t, contoso, incident("raced", "contoso-av", phxv1.Severity_SEVERITY_LOW, green()))
		rev := in.Revision
		for round := range 5 {
			var (
				wg    sync.WaitGroup
				start = make(chan struct{})
				errs  [2]error
				got   [2]*phxv1.Incident
			)
			for i, who := range []*clients{contoso, microsoft} {
				impact := []string{"contoso's view", "microsoft's view"}[i]
				wg.Go(func() {
					<-start
					got[i], errs[i] = update(who, in.Id, rev, &phxv1.Incident{Impact: impact}, "impact")
				})
			}
			close(start)
			wg.Wait()
			winners := 0
			for i := range errs {
				if errs[i] == nil {
					winners++
					if got[i].Revision != rev+1 {
						t.Fatalf("round %d: winner at revision %d", round, got[i].Revision)
					}
					continue
				}
				wantStatus(t, errs[i], codes.FailedPrecondition, "expected_revision")
			}
			if winners != 1 {
				t.Fatalf("round %d: %d winners (%v, %v)", round, winners, status.Convert(errs[0]), status.Convert(errs[1]))
			}
			rev++
			g, err := contoso.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: in.Id})
			if err != nil {
				t.Fatal(err)
			}
			winner := got[0]
			if winner == nil {
				winner = got[1]
			}
			if g.Incident.Revision != rev || g.Incident.Impact != winner.Impact {
				t.Fatalf("round %d: stored %v, winner %v", round, g.Incident, winner)
			}
		}
	})

	t.Run("list filters", func(t *testing.T) {
		type key struct {
			sev     phxv1.Severity
			status  phxv1.Status
			product string
		}
		known := map[string]key{}
		for _, k := range []key{
			{phxv1.Severity_SEVERITY_LOW, investigating, "northwind-sensor"},
			{phxv1.Severity_SEVERITY_MEDIUM, resolved, "northwind-sensor"},
			{phxv1.Severity_SEVERITY_HIGH, mitigating, "northwind-sensor"},
			{phxv1.Severity_SEVERITY_CRITICAL, investigating, "northwind-sensor"},
			{phxv1.Severity_SEVERITY_CRITICAL, resolved, "defender"},
		} {
			in := incident("listed", k.product, k.sev, green())
			in.Status = k.status
			c := northwind
			if k.product == "defender" {
				c = microsoft
			}
			known[report(t, c, in).Id] = k
		}
		list := func(c *clients, req *phxv1.ListIncidentsRequest) []*phxv1.Incident {
			t.Helper()
			req.PageSize = 1000
			res, err := c.incident.ListIncidents(testCtx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			return res.Incidents
		}
		all := list(fabrikam, &phxv1.ListIncidentsRequest{})
		cases := []struct {
			name string
			req  *phxv1.ListIncidentsRequest
			keep func(*phxv1.Incident) bool
		}{
			{"min_severity HIGH", &phxv1.ListIncidentsRequest{MinSeverity: phxv1.Severity_SEVERITY_HIGH},
				func(in *phxv1.Incident) bool { return in.Severity >= phxv1.Severity_SEVERITY_HIGH }},
			{"min_severity CRITICAL", &phxv1.ListIncidentsRequest{MinSeverity: phxv1.Severity_SEVERITY_CRITICAL},
				func(in *phxv1.Incident) bool { return in.Severity == phxv1.Severity_SEVERITY_CRITICAL }},
			{"status RESOLVED", &phxv1.ListIncidentsRequest{Statuses: []phxv1.Status{resolved}},
				func(in *phxv1.Incident) bool { return in.Status == resolved }},
			{"status open", &phxv1.ListIncidentsRequest{Statuses: []phxv1.Status{investigating, mitigating}},
				func(in *phxv1.Incident) bool { return in.Status == investigating || in.Status == mitigating }},
			{"product", &phxv1.ListIncidentsRequest{Products: []string{"northwind-sensor"}},
				func(in *phxv1.Incident) bool { return in.Affected[0].Product == "northwind-sensor" }},
			{"all three", &phxv1.ListIncidentsRequest{Products: []string{"northwind-sensor", "defender"}, Statuses: []phxv1.Status{investigating}, MinSeverity: phxv1.Severity_SEVERITY_CRITICAL},
				func(in *phxv1.Incident) bool {
					return in.Severity == phxv1.Severity_SEVERITY_CRITICAL && in.Status == investigating &&
						(in.Affected[0].Product == "northwind-sensor" || in.Affected[0].Product == "defender")
				}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got := list(fabrikam, tc.req)
				var want []*phxv1.Incident
				for _, in := range all {
					if tc.keep(in) {
						want = append(want, in)
					}
				}
				if len(got) != len(want) {
					t.Fatalf("%d incidents, want %d", len(got), len(want))
				}
				for i := range got {
					if !proto.Equal(got[i], want[i]) {
						t.Fatalf("incident %d: %v, want %v", i, got[i], want[i])
					}
				}
				// Each known incident is in or out as its fields say.
				for id, k := range known {
					in := &phxv1.Incident{Severity: k.sev, Status: k.status, Affected: []*phxv1.Affected{{Product: k.product}}}
					listed := slices.ContainsFunc(got, func(x *phxv1.Incident) bool { return x.Id == id })
					if listed != tc.keep(in) {
						t.Fatalf("%s %v: listed = %v", id, k, listed)
					}
				}
			})
		}
		t.Run("newest first, paged", func(t *testing.T) {
			for i := 1; i < len(all); i++ {
				if all[i].CreatedAt.AsTime().After(all[i-1].CreatedAt.AsTime()) {
					t.Fatalf("not newest first at %d", i)
				}
			}
			var paged []*phxv1.Incident
			token := ""
			for {
				res, err := fabrikam.incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{PageSize: 2, PageToken: token})
				if err != nil {
					t.Fatal(err)
				}
				paged = append(paged, res.Incidents...)
				if res.NextPageToken == "" {
					break
				}
				token = res.NextPageToken
			}
			if len(paged) != len(all) {
				t.Fatalf("paged %d, unpaged %d", len(paged), len(all))
			}
			for i := range paged {
				if paged[i].Id != all[i].Id {
					t.Fatalf("page order differs at %d", i)
				}
			}
		})
		t.Run("a page token outlives a change to its incident", func(t *testing.T) {
			var made []*phxv1.Incident
			for range 3 {
				made = append(made, report(t, microsoft, incident("paged", "windows", phxv1.Severity_SEVERITY_LOW, green())))
			}
			req := &phxv1.ListIncidentsRequest{Products: []string{"windows"}, Statuses: []phxv1.Status{investigating}, PageSize: 1}
			page, err := fabrikam.incident.ListIncidents(testCtx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Incidents) != 1 || page.NextPageToken == "" {
				t.Fatalf("first page: %v", page)
			}
			first := page.Incidents[0]
			// The incident the token names leaves the filter before the
			// next page is read.
			if _, err := update(microsoft, first.Id, first.Revision, &phxv1.Incident{Status: identified}, "status"); err != nil {
				t.Fatal(err)
			}
			var rest []string
			req.PageToken = page.NextPageToken
			for {
				page, err := fabrikam.incident.ListIncidents(testCtx(t), req)
				if err != nil {
					t.Fatal(err)
				}
				for _, in := range page.Incidents {
					rest = append(rest, in.Id)
				}
				if page.NextPageToken == "" {
					break
				}
				req.PageToken = page.NextPageToken
			}
			var want []string
			for _, in := range made {
				if in.Id != first.Id {
					want = append([]string{in.Id}, want...) // newest first
				}
			}
			if !slices.Contains([]string{made[0].Id, made[1].Id, made[2].Id}, first.Id) {
				t.Fatalf("first page %s is none of %v", first.Id, made)
			}
			// Same created_at is possible: compare as sets, then order.
			gotSorted, wantSorted := slices.Sorted(slices.Values(rest)), slices.Sorted(slices.Values(want))
			wantIDs(t, "the rest", gotSorted, wantSorted)
		})
		_, err := fabrikam.incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{MinSeverity: 99})
		wantStatus(t, err, codes.InvalidArgument, "min_severity")
		_, err = fabrikam.incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{PageToken: "x"})
		wantStatus(t, err, codes.InvalidArgument, "page_token")
	})

	t.Run("visibility", func(t *testing.T) {
		red := report(t, contoso, incident("red", "contoso-av", phxv1.Severity_SEVERITY_HIGH, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"microsoft"}}))
		for _, tc := range []struct {
			c    *clients
			code codes.Code
		}{{contoso, codes.OK}, {microsoft, codes.OK}, {fabrikam, codes.NotFound}, {cert, codes.NotFound}} {
			_, err := tc.c.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: red.Id})
			wantStatus(t, err, tc.code, "")
			res, err := tc.c.incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{PageSize: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if listed := slices.ContainsFunc(res.Incidents, func(x *phxv1.Incident) bool { return x.Id == red.Id }); listed != (tc.code == codes.OK) {
				t.Fatalf("listed = %v", listed)
			}
		}
		_, err := update(fabrikam, red.Id, 1, &phxv1.Incident{Title: "x"}, "title")
		wantStatus(t, err, codes.NotFound, "")
		anon := report(t, contoso, incident("anon", "contoso-av", phxv1.Severity_SEVERITY_HIGH, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN, Pseudonymous: true}))
		for _, tc := range []struct {
			c    *clients
			anon bool
		}{{contoso, false}, {microsoft, false}, {fabrikam, true}, {cert, true}} {
			g, err := tc.c.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: anon.Id})
			if err != nil {
				t.Fatal(err)
			}
			if got := g.Incident.Reporter; (tc.anon && !regexp.MustCompile(`^anon-[a-z2-7]{12}$`).MatchString(got)) || (!tc.anon && got != "contoso") {
				t.Fatalf("reporter %q", got)
			}
		}
	})
}

// TestListPastOneRead: a listing longer than one read of the stream (the
// hub reads JetStream a batch of jsread.Batch at a time) still lists each
// item once, in its current revision.
func TestListPastOneRead(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	northwind := as(t, h, "northwind")
	const n = jsread.Batch + 44
	var want []string
	race(4, func(w int) {
		for i := w; i < n; i += 4 {
			r := announce(t, northwind, rollout(fmt.Sprintf("r-list-%03d", i), "northwind-sensor", green()))
			_, err := northwind.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 1,
				Rollout: &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, UpdateMask: mask("state")})
			if err != nil {
				t.Error(err)
				return
			}
		}
	})
	for i := range n {
		want = append(want, fmt.Sprintf("r-list-%03d", i))
	}
	all, err := northwind.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range all.Rollouts {
		got = append(got, r.RolloutId)
		if r.Revision != 2 || r.State != phxv1.RolloutState_ROLLOUT_PAUSED {
			t.Errorf("%s listed at revision %d, %s; want its current revision 2, paused", r.RolloutId, r.Revision, r.State)
		}
	}
	wantIDs(t, "listed", got, want)
	active, err := northwind.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{States: []phxv1.RolloutState{phxv1.RolloutState_ROLLOUT_ACTIVE}})
	if err != nil {
		t.Fatal(err)
	}
	if len(active.Rollouts) != 0 {
		t.Errorf("%d rollouts listed as active, all are paused", len(active.Rollouts))
	}
}
