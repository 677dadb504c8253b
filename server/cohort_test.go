package server_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestMinimumCohort: cells under the hub's minimum cohorts are refused
// with FailedPrecondition naming the rule, item by item, and nothing of them
// is stored; the thresholds are hub settings shown by WhoAmI.
func TestMinimumCohort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		kDev, kTen uint32
	}{
		{"defaults", 0, 0},
		{"stricter", 200, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.KDevices, c.KTenants = tc.kDev, tc.kTen }))
			kDev, kTen := tc.kDev, tc.kTen
			if kDev == 0 {
				kDev, kTen = 50, 5
			}
			contoso := as(t, h, "contoso")
			who, err := contoso.identity.WhoAmI(testCtx(t), &phxv1.WhoAmIRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if p := who.GetPrivacy(); p.GetKDevices() != kDev || p.GetKTenants() != kTen {
				t.Fatalf("WhoAmI privacy = %v, want k_devices %d, k_tenants %d", p, kDev, kTen)
			}
			base := func() *phxv1.HealthSignal {
				s := cell("contoso-av")
				s.DevicesActive, s.DevicesExposed, s.DistinctTenants = 1000, kDev, kTen
				s.DevicesSilent, s.KernelCrashDevices = 0, 0
				return s
			}
			cases := []struct {
				name  string
				edit  func(*phxv1.HealthSignal)
				field string
				rule  string
			}{
				{"exactly at the thresholds", func(*phxv1.HealthSignal) {}, "", ""},
				{"one exposed device short", func(s *phxv1.HealthSignal) { s.DevicesExposed = kDev - 1 }, "devices_exposed", "k_devices"},
				{"one exposed device", func(s *phxv1.HealthSignal) { s.DevicesExposed, s.DistinctTenants = 1, 1 }, "devices_exposed", "k_devices"},
				{"one tenant short", func(s *phxv1.HealthSignal) { s.DistinctTenants = kTen - 1 }, "distinct_tenants", "k_tenants"},
				{"a small failure bucket", func(s *phxv1.HealthSignal) {
					s.KernelCrashDevices = kDev
					s.TopFailures = []*phxv1.TopFailure{{BugcheckCode: "0x50", Devices: kDev}, {BugcheckCode: "0x7E", Module: "csagent.sys", Devices: kDev - 1}}
				}, "top_failures[1].devices", "k_devices"},
			}
			cells := make([]*phxv1.HealthSignal, len(cases))
			for i, c := range cases {
				cells[i] = base()
				c.edit(cells[i])
			}
			res, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: cells})
			if err != nil {
				t.Fatal(err)
			}
			if res.Accepted != 1 || res.Rejected != uint32(len(cases)-1) {
				t.Errorf("accepted %d, rejected %d", res.Accepted, res.Rejected)
			}
			for i, c := range cases {
				r := res.Results[i]
				if c.field == "" {
					if r.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED {
						t.Errorf("%s: %s %v", c.name, r.Outcome, r.Error)
					}
					continue
				}
				wantItemError(t, r, codes.FailedPrecondition, c.field)
				if want := c.rule + "="; !strings.HasPrefix(r.Error.GetRule(), want) || !strings.Contains(r.Error.GetMessage(), "minimum cohort") {
					t.Errorf("%s: error %v, want the rule %s named", c.name, r.Error, want)
				}
			}

			// Nothing refused reached a subscriber.
			f := open(t, as(t, h, "microsoft"), &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
			if env := f.next(); env.GetHealthSignal().GetSignalId() != cells[0].SignalId {
				t.Fatalf("first stored cell is %v, want %s", env, cells[0].SignalId)
			}

		})
	}
}
