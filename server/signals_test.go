package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestPublishSignalsValidation sends, for every validation rule of a health
// cell, a batch of [invalid cell, valid cell]: the invalid one is rejected
// with InvalidArgument and the exact field path, and the valid one is still
// stored (items of a batch are independent).
func TestPublishSignalsValidation(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	contoso := as(t, h, "contoso")
	now := time.Now()
	minute := now.Add(-2 * time.Minute).Truncate(time.Minute)
	// A window that has started but not ended (or, in the last minutes of
	// the hour, the next one): either way it has not ended.
	openHour := now.Truncate(time.Hour)
	if now.Sub(openHour) > 50*time.Minute {
		openHour = openHour.Add(time.Hour)
	}
	failure := func(f ...func(*phxv1.TopFailure)) []*phxv1.TopFailure {
		tf := &phxv1.TopFailure{BugcheckCode: "0x50", Module: "csagent.sys", ModuleVersion: "7.16.18", Devices: 60}
		for _, fn := range f {
			fn(tf)
		}
		return []*phxv1.TopFailure{{BugcheckCode: "0x7E", Devices: 50}, tf}
	}
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("org-%d", i)
		}
		return out
	}

	cases := []struct {
		name  string
		edit  func(s *phxv1.HealthSignal)
		field string
	}{
		{"signal_id missing", func(s *phxv1.HealthSignal) { s.SignalId = "" }, "signal_id"},
		{"signal_id with a space", func(s *phxv1.HealthSignal) { s.SignalId = "a b" }, "signal_id"},
		{"signal_id starting with a dash", func(s *phxv1.HealthSignal) { s.SignalId = "-a" }, "signal_id"},
		{"signal_id too long", func(s *phxv1.HealthSignal) { s.SignalId = strings.Repeat("a", 129) }, "signal_id"},
		{"product missing", func(s *phxv1.HealthSignal) { s.Product = "" }, "product"},
		{"product upper case", func(s *phxv1.HealthSignal) { s.Product = "Contoso-AV" }, "product"},
		{"product with a dot", func(s *phxv1.HealthSignal) { s.Product = "contoso.av" }, "product"},
		{"product_version missing", func(s *phxv1.HealthSignal) { s.ProductVersion = "" }, "product_version"},
		{"product_version with a slash", func(s *phxv1.HealthSignal) { s.ProductVersion = "7/16" }, "product_version"},
		{"product_version too long", func(s *phxv1.HealthSignal) { s.ProductVersion = strings.Repeat("7", 65) }, "product_version"},
		{"content_channel upper case", func(s *phxv1.HealthSignal) { s.ContentChannel = "Channel-291" }, "content_channel"},
		{"content_version with a space", func(s *phxv1.HealthSignal) { s.ContentVersion = "291 1" }, "content_version"},
		{"content_version missing with a channel", func(s *phxv1.HealthSignal) { s.ContentVersion = "" }, "content_version"},
		{"rollout_id upper case", func(s *phxv1.HealthSignal) { s.RolloutId = "R-291" }, "rollout_id"},
		{"rollout_id with a dot", func(s *phxv1.HealthSignal) { s.RolloutId = "r.291" }, "rollout_id"},
		{"ring missing", func(s *phxv1.HealthSignal) { s.Ring = phxv1.Ring_RING_UNSPECIFIED }, "ring"},
		{"ring 99", func(s *phxv1.HealthSignal) { s.Ring = phxv1.Ring(99) }, "ring"},
		{"ring negative", func(s *phxv1.HealthSignal) { s.Ring = phxv1.Ring(-1) }, "ring"},
		{"os_family missing", func(s *phxv1.HealthSignal) { s.OsFamily = "" }, "os_family"},
		{"os_family unknown", func(s *phxv1.HealthSignal) { s.OsFamily = "beos" }, "os_family"},
		{"os_family upper case", func(s *phxv1.HealthSignal) { s.OsFamily = "Windows" }, "os_family"},
		{"os_build missing", func(s *phxv1.HealthSignal) { s.OsBuild = "" }, "os_build"},
		{"os_build with a host name", func(s *phxv1.HealthSignal) { s.OsBuild = "pc@corp" }, "os_build"},
		{"arch unknown", func(s *phxv1.HealthSignal) { s.Arch = "mips" }, "arch"},
		{"arch missing", func(s *phxv1.HealthSignal) { s.Arch = "" }, "arch"},
		{"region missing", func(s *phxv1.HealthSignal) { s.Region = "" }, "region"},
		{"region lower-case country", func(s *phxv1.HealthSignal) { s.Region = "de" }, "region"},
		{"region three-letter country", func(s *phxv1.HealthSignal) { s.Region = "DEU" }, "region"},
		{"region unknown continent", func(s *phxv1.HealthSignal) { s.Region = "atlantis" }, "region"},
		{"window_seconds 0", func(s *phxv1.HealthSignal) { s.WindowSeconds = 0 }, "window_seconds"},
		{"window_seconds 120", func(s *phxv1.HealthSignal) { s.WindowSeconds = 120 }, "window_seconds"},
		{"window_seconds 86400", func(s *phxv1.HealthSignal) { s.WindowSeconds = 86400 }, "window_seconds"},
		{"window_start missing", func(s *phxv1.HealthSignal) { s.WindowStart = nil }, "window_start"},
		{"window_start invalid timestamp", func(s *phxv1.HealthSignal) {
			s.WindowStart = &timestamppb.Timestamp{Seconds: minute.Unix(), Nanos: 2_000_000_000}
		}, "window_start"},
		{"window_start off by a second", func(s *phxv1.HealthSignal) { s.WindowStart = ts(minute.Add(time.Second)) }, "window_start"},
		{"window_start with nanoseconds", func(s *phxv1.HealthSignal) { s.WindowStart = ts(minute.Add(time.Millisecond)) }, "window_start"},
		{"window_start minute-aligned for 300s", func(s *phxv1.HealthSignal) {
			s.WindowSeconds = 300
			s.WindowStart = ts(now.Add(-time.Hour).Truncate(5 * time.Minute).Add(time.Minute))
		}, "window_start"},
		{"window_start not hour-aligned for 3600s", func(s *phxv1.HealthSignal) {
			s.WindowSeconds = 3600
			s.WindowStart = ts(now.Add(-3 * time.Hour).Truncate(time.Hour).Add(5 * time.Minute))
		}, "window_start"},
		{"window not ended yet", func(s *phxv1.HealthSignal) {
			s.WindowSeconds = 3600
			s.WindowStart = ts(openHour)
		}, "window_start"},
		{"window in the future", func(s *phxv1.HealthSignal) { s.WindowStart = ts(now.Truncate(time.Minute).Add(time.Hour)) }, "window_start"},
		{"window older than retention", func(s *phxv1.HealthSignal) { s.WindowStart = ts(now.Add(-8 * 24 * time.Hour).Truncate(time.Minute)) }, "window_start"},
		{"devices_active 0", func(s *phxv1.HealthSignal) {
			s.DevicesActive, s.DevicesExposed, s.DevicesSilent, s.DistinctTenants, s.KernelCrashDevices = 0, 0, 0, 0, 0
		}, "devices_active"},
		{"devices_exposed > devices_active", func(s *phxv1.HealthSignal) { s.DevicesExposed = s.DevicesActive + 1 }, "devices_exposed"},
		{"devices_silent > devices_active", func(s *phxv1.HealthSignal) { s.DevicesSilent = s.DevicesActive + 1 }, "devices_silent"},
		{"distinct_tenants > devices_exposed", func(s *phxv1.HealthSignal) { s.DistinctTenants = s.DevicesExposed + 1 }, "distinct_tenants"},
		{"kernel_crash_devices > devices_exposed", func(s *phxv1.HealthSignal) { s.KernelCrashDevices = s.DevicesExposed + 1 }, "kernel_crash_devices"},
		{"boot_failure_devices > devices_exposed", func(s *phxv1.HealthSignal) { s.BootFailureDevices = s.DevicesExposed + 1 }, "boot_failure_devices"},
		{"hang_devices > devices_exposed", func(s *phxv1.HealthSignal) { s.HangDevices = s.DevicesExposed + 1 }, "hang_devices"},
		{"agent_crash_devices > devices_exposed", func(s *phxv1.HealthSignal) { s.AgentCrashDevices = s.DevicesExposed + 1 }, "agent_crash_devices"},
		{"top_failures more than 20", func(s *phxv1.HealthSignal) {
			for range 21 {
				s.TopFailures = append(s.TopFailures, &phxv1.TopFailure{BugcheckCode: "0x50", Devices: 1})
			}
		}, "top_failures"},
		{"top_failures bucket without code or module", func(s *phxv1.HealthSignal) {
			s.TopFailures = failure(func(tf *phxv1.TopFailure) { tf.BugcheckCode, tf.Module = "", "" })
		}, "top_failures[1]"},
		{"top_failures bugcheck_code not hex", func(s *phxv1.HealthSignal) {
			s.TopFailures = failure(func(tf *phxv1.TopFailure) { tf.BugcheckCode = "0xZZ" })
		}, "top_failures[1].bugcheck_code"},
		{"top_failures bugcheck_code without 0x", func(s *phxv1.HealthSignal) {
			s.TopFailures = failure(func(tf *phxv1.TopFailure) { tf.BugcheckCode = "50" })
		}, "top_failures[1].bugcheck_code"},
		{"top_failures module with a path", func(s *phxv1.HealthSignal) {
			s.TopFailures = failure(func(tf *phxv1.TopFailure) { tf.Module = `C:\Users\alice\x.sys` })
		}, "top_failures[1].module"},
		{"top_failures module_version with a space", func(s *phxv1.HealthSignal) {
			s.TopFailures = failure(func(tf *phxv1.TopFailure) { tf.ModuleVersion = "7 16" })
		}, "top_failures[1].module_version"},
		{"top_failures devices 0", func(s *phxv1.HealthSignal) {
			s.TopFailures = failure(func(tf *phxv1.TopFailure) { tf.Devices = 0 })
		}, "top_failures[1].devices"},
		{"top_failures devices > devices_exposed", func(s *phxv1.HealthSignal) {
			s.TopFailures = failure(func(tf *phxv1.TopFailure) { tf.Devices = s.DevicesExposed + 1 })
		}, "top_failures[1].devices"},
		{"audience missing", func(s *phxv1.HealthSignal) { s.Audience = nil }, "audience"},
		{"audience TLP_UNSPECIFIED", func(s *phxv1.HealthSignal) { s.Audience = &phxv1.Audience{Orgs: []string{"fabrikam"}} }, "audience.tlp"},
		{"audience TLP 99", func(s *phxv1.HealthSignal) { s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp(99)} }, "audience.tlp"},
		{"audience TLP_RED without orgs", func(s *phxv1.HealthSignal) { s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED} }, "audience.orgs"},
		{"audience unknown org", func(s *phxv1.HealthSignal) {
			s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam", "acme"}}
		}, "audience.orgs[1]"},
		{"audience org not an id", func(s *phxv1.HealthSignal) {
			s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: []string{"Fabrikam"}}
		}, "audience.orgs[0]"},
		{"audience org listed twice", func(s *phxv1.HealthSignal) {
			s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: []string{"fabrikam", "northwind", "fabrikam"}}
		}, "audience.orgs[2]"},
		{"audience more than 200 orgs", func(s *phxv1.HealthSignal) {
			s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: many(201)}
		}, "audience.orgs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad, good := cell("contoso-av"), cell("contoso-av")
			tc.edit(bad)
			res, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{bad, good}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Results) != 2 || res.Accepted != 1 || res.Rejected != 1 || res.Duplicates != 0 {
				t.Fatalf("response %v", res)
			}
			r0, r1 := res.Results[0], res.Results[1]
			if r0.Index != 0 || r0.SignalId != bad.SignalId {
				t.Fatalf("result 0 is %v", r0)
			}
			wantItemError(t, r0, codes.InvalidArgument, tc.field)
			if r1.Index != 1 || r1.SignalId != good.SignalId || r1.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED || r1.Cursor == "" || r1.Error != nil {
				t.Fatalf("the valid item of the batch: %v", r1)
			}
		})
	}

	// Every shape the rules allow is accepted.
	valid := []struct {
		name string
		edit func(s *phxv1.HealthSignal)
	}{
		{"300s window", func(s *phxv1.HealthSignal) {
			s.WindowSeconds, s.WindowStart = 300, ts(now.Add(-10*time.Minute).Truncate(5*time.Minute))
		}},
		{"3600s window", func(s *phxv1.HealthSignal) {
			s.WindowSeconds, s.WindowStart = 3600, ts(now.Add(-2*time.Hour).Truncate(time.Hour))
		}},
		{"six days old", func(s *phxv1.HealthSignal) { s.WindowStart = ts(now.Add(-6 * 24 * time.Hour).Truncate(time.Minute)) }},
		{"country region", func(s *phxv1.HealthSignal) { s.Region = "DE" }},
		{"continent region", func(s *phxv1.HealthSignal) { s.Region = "north-america" }},
		{"no content channel", func(s *phxv1.HealthSignal) { s.ContentChannel, s.ContentVersion = "", "" }},
		{"content version without channel", func(s *phxv1.HealthSignal) { s.ContentChannel = "" }},
		{"rollout and top failures", func(s *phxv1.HealthSignal) {
			s.RolloutId = "r-291_2"
			s.BootFailureDevices, s.HangDevices, s.AgentCrashDevices = 5, 1, 2
			s.TopFailures = failure()
			s.TopFailures = append(s.TopFailures, &phxv1.TopFailure{Module: "csagent.sys", Devices: s.DevicesExposed})
		}},
		{"all exposed, all silent", func(s *phxv1.HealthSignal) {
			s.DevicesExposed, s.DevicesSilent, s.DistinctTenants = s.DevicesActive, s.DevicesActive, s.DevicesActive
		}},
		{"macos arm64", func(s *phxv1.HealthSignal) { s.OsFamily, s.Arch, s.OsBuild = "macos", "arm64", "14.5" }},
		{"TLP_RED to two orgs", func(s *phxv1.HealthSignal) {
			s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam", "microsoft"}}
		}},
		{"AMBER_STRICT pseudonymous", func(s *phxv1.HealthSignal) {
			s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT, Pseudonymous: true}
		}},
		{"CLEAR", func(s *phxv1.HealthSignal) { s.Audience = &phxv1.Audience{Tlp: phxv1.Tlp_TLP_CLEAR} }},
	}
	for _, tc := range valid {
		t.Run("valid/"+tc.name, func(t *testing.T) {
			s := cell("contoso-av")
			tc.edit(s)
			publish(t, contoso, s)
		})
	}
}

// TestPublishSignals covers batch limits, ownership, and idempotency.
func TestPublishSignals(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	contoso, fabrikam, microsoft := as(t, h, "contoso"), as(t, h, "fabrikam"), as(t, h, "microsoft")

	t.Run("empty batch", func(t *testing.T) {
		_, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{})
		wantStatus(t, err, codes.InvalidArgument, "signals")
	})
	t.Run("1001 items", func(t *testing.T) {
		_, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: cells("contoso-av", 1001)})
		wantStatus(t, err, codes.ResourceExhausted, "signals")
	})
	t.Run("1000 items", func(t *testing.T) {
		batch := cells("contoso-av", 1000)
		res, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: batch})
		if err != nil {
			t.Fatal(err)
		}
		if res.Accepted != 1000 || len(res.Results) != 1000 {
			t.Fatalf("accepted %d of %d", res.Accepted, len(res.Results))
		}
		seen := map[string]bool{}
		for i, r := range res.Results {
			if int(r.Index) != i || r.SignalId != batch[i].SignalId || r.Cursor == "" || seen[r.Cursor] {
				t.Fatalf("result %d: %v", i, r)
			}
			seen[r.Cursor] = true
		}
	})

	t.Run("another vendor's product", func(t *testing.T) {
		mine, theirs := cell("fabrikam-edr"), cell("contoso-av")
		res, err := fabrikam.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{theirs, mine}})
		if err != nil {
			t.Fatal(err)
		}
		wantItemError(t, res.Results[0], codes.PermissionDenied, "product")
		if res.Results[1].Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED || res.Accepted != 1 || res.Rejected != 1 {
			t.Fatalf("response %v", res)
		}
	})
	t.Run("a product nobody owns", func(t *testing.T) {
		res, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{cell("acme-av")}})
		if err != nil {
			t.Fatal(err)
		}
		wantItemError(t, res.Results[0], codes.PermissionDenied, "product")
	})
	t.Run("the platform publishes only for its own products", func(t *testing.T) {
		res, err := microsoft.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{cell("defender"), cell("contoso-av")}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Results[0].Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED {
			t.Fatalf("own product: %v", res.Results[0])
		}
		wantItemError(t, res.Results[1], codes.PermissionDenied, "product")
	})

	t.Run("same signal_id twice", func(t *testing.T) {
		// Watch the health stream from here on, to count what is stored.
		f := open(t, fabrikam, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}, Products: []string{"contoso-av"}})
		dup := cell("contoso-av")
		res, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{dup, proto.Clone(dup).(*phxv1.HealthSignal)}})
		if err != nil {
			t.Fatal(err)
		}
		first, second := res.Results[0], res.Results[1]
		if first.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED || second.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE ||
			first.Cursor == "" || second.Cursor != first.Cursor || res.Accepted != 1 || res.Duplicates != 1 || res.Rejected != 0 {
			t.Fatalf("in one batch: %v", res)
		}
		// Across calls, even with other content: the id decides.
		again := proto.Clone(dup).(*phxv1.HealthSignal)
		again.DevicesActive++
		for range 2 {
			res, err = contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{again}})
			if err != nil {
				t.Fatal(err)
			}
			if r := res.Results[0]; r.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE || r.Cursor != first.Cursor || res.Duplicates != 1 {
				t.Fatalf("across calls: %v", res)
			}
		}
		marker := publish(t, contoso, cell("contoso-av"))[0]
		got := f.until(signalID, marker.SignalId)
		wantIDs(t, "stored", signalIDs(got), []string{dup.SignalId, marker.SignalId})
		if got[0].GetHealthSignal().DevicesActive != dup.DevicesActive {
			t.Fatalf("the stored cell is not the first one: %v", got[0].GetHealthSignal())
		}
	})

	t.Run("same signal_id from two vendors", func(t *testing.T) {
		a, b := cell("contoso-av"), cell("fabrikam-edr")
		b.SignalId = a.SignalId
		ra := publish(t, contoso, a)[0]
		rb := publish(t, fabrikam, b)[0]
		if ra.Cursor == rb.Cursor {
			t.Fatalf("two orgs' cells share cursor %s", ra.Cursor)
		}
	})

	t.Run("a rejected item does not reserve its id", func(t *testing.T) {
		s := cell("contoso-av")
		bad := proto.Clone(s).(*phxv1.HealthSignal)
		bad.Arch = "mips"
		res, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{bad}})
		if err != nil {
			t.Fatal(err)
		}
		wantItemError(t, res.Results[0], codes.InvalidArgument, "arch")
		publish(t, contoso, s)
	})
}
