package grpcapi

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/pki"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// fuzzNow is the hub clock of FuzzValidateSignal; fuzzMaxAge the health
// retention (the bus default).
var (
	fuzzNow    = time.Date(2024, 7, 19, 5, 0, 0, 0, time.UTC)
	fuzzMaxAge = 7 * 24 * time.Hour
)

// signalFields are the field paths validateSignal may name in an error.
var signalFields = regexp.MustCompile(`^(signal_id|product|product_version|content_channel|content_version|rollout_id|ring|` +
	`os_family|os_build|arch|region|window_seconds|window_start|devices_active|devices_exposed|devices_silent|` +
	`distinct_tenants|kernel_crash_devices|boot_failure_devices|hang_devices|agent_crash_devices|` +
	`top_failures|top_failures\[(1?[0-9])\](\.(bugcheck_code|module|module_version|devices))?|` +
	`audience|audience\.tlp|audience\.orgs|audience\.orgs\[[0-9]+\])$`)

// fuzzSignal is the fuzzed content of one health cell.
type fuzzSignal struct {
	signalID, product, productVersion, contentChannel, contentVersion, rolloutID string
	ring                                                                         int32
	osFamily, osBuild, arch, region                                              string
	windowUnix                                                                   int64
	windowNanos                                                                  int32
	windowSeconds                                                                uint32
	active, exposed, silent, tenants, kernel, boot, hang, agent                  uint32
	tfBugcheck, tfModule, tfModuleVersion                                        string
	tfDevices                                                                    uint32
	tfCount                                                                      uint8
	tlp                                                                          int32
	orgs                                                                         string
	noWindow, noAudience                                                         bool
}

func (f fuzzSignal) build() *phxv1.HealthSignal {
	s := &phxv1.HealthSignal{
		SignalId: f.signalID, Product: f.product, ProductVersion: f.productVersion,
		ContentChannel: f.contentChannel, ContentVersion: f.contentVersion, RolloutId: f.rolloutID,
		Ring: phxv1.Ring(f.ring), OsFamily: f.osFamily, OsBuild: f.osBuild, Arch: f.arch, Region: f.region,
		WindowSeconds: f.windowSeconds, DevicesActive: f.active, DevicesExposed: f.exposed,
		DevicesSilent: f.silent, DistinctTenants: f.tenants, KernelCrashDevices: f.kernel,
		BootFailureDevices: f.boot, HangDevices: f.hang, AgentCrashDevices: f.agent,
	}
	if !f.noWindow {
		s.WindowStart = &timestamppb.Timestamp{Seconds: f.windowUnix, Nanos: f.windowNanos}
	}
	// Up to 31 buckets: the limit is 20. Each one counts a device fewer,
	// so that a later bucket may fail where an earlier one passed.
	for i := 0; i < int(f.tfCount%32); i++ {
		s.TopFailures = append(s.TopFailures, &phxv1.TopFailure{
			BugcheckCode: f.tfBugcheck, Module: f.tfModule, ModuleVersion: f.tfModuleVersion,
			Devices: f.tfDevices - uint32(i),
		})
	}
	if !f.noAudience {
		a := &phxv1.Audience{Tlp: phxv1.Tlp(f.tlp)}
		if f.orgs != "" {
			a.Orgs = strings.Split(f.orgs, ",")
		}
		s.Audience = a
	}
	return s
}

// valid is a cell of the README's tour: every check passes.
var validFuzzSignal = fuzzSignal{
	signalID: "cell-0001", product: "contoso-av", productVersion: "7.16.18", contentChannel: "channel-291",
	contentVersion: "291.1", rolloutID: "cs-291", ring: int32(phxv1.Ring_RING_CANARY), osFamily: "windows",
	osBuild: "10.0.22631.3880", arch: "x64", region: "global",
	windowUnix: fuzzNow.Add(-2 * time.Minute).Unix(), windowSeconds: 60,
	active: 1000, exposed: 900, silent: 312, tenants: 40, kernel: 10, boot: 87, hang: 3, agent: 5,
	tfBugcheck: "0x50", tfModule: "csagent.sys", tfModuleVersion: "7.16.18", tfDevices: 80, tfCount: 2,
	tlp: int32(phxv1.Tlp_TLP_GREEN),
}

// signalCase is a cell and the field its refusal names ("" if accepted).
type signalCase struct {
	name  string
	sig   fuzzSignal
	field string
}

func signalCases() []signalCase {
	v := validFuzzSignal
	with := func(change func(*fuzzSignal)) fuzzSignal {
		s := v
		change(&s)
		return s
	}
	max := ^uint32(0)
	return []signalCase{
		{"valid", v, ""},
		{"exposed above active", with(func(s *fuzzSignal) { s.exposed, s.active = 1001, 1000 }), "devices_exposed"},
		{"boot failures above exposed", with(func(s *fuzzSignal) { s.boot = s.exposed + 1 }), "boot_failure_devices"},
		{"tenants above exposed", with(func(s *fuzzSignal) { s.tenants = s.exposed + 1 }), "distinct_tenants"},
		{"silent above active", with(func(s *fuzzSignal) { s.silent = s.active + 1 }), "devices_silent"},
		{"silent above exposed", with(func(s *fuzzSignal) { s.silent = s.exposed + 1 }), ""},
		{"no devices", with(func(s *fuzzSignal) {
			s.active, s.exposed, s.silent, s.tenants, s.kernel, s.boot, s.hang, s.agent, s.tfCount = 0, 0, 0, 0, 0, 0, 0, 0, 0
		}), "devices_active"},
		{"none exposed", with(func(s *fuzzSignal) {
			s.exposed, s.tenants, s.kernel, s.boot, s.hang, s.agent, s.tfCount = 0, 0, 0, 0, 0, 0, 0
		}), ""},
		{"every count at its maximum", with(func(s *fuzzSignal) {
			s.active, s.exposed, s.silent, s.tenants, s.kernel, s.boot, s.hang, s.agent, s.tfDevices = max, max, max, max, max, max, max, max, max
		}), ""},
		{"window not aligned", with(func(s *fuzzSignal) { s.windowUnix++ }), "window_start"},
		{"window with nanoseconds", with(func(s *fuzzSignal) { s.windowNanos = 1 }), "window_start"},
		{"window with negative nanoseconds", with(func(s *fuzzSignal) { s.windowNanos = -1 }), "window_start"},
		{"window length 59", with(func(s *fuzzSignal) { s.windowSeconds = 59 }), "window_seconds"},
		{"window length 0", with(func(s *fuzzSignal) { s.windowSeconds = 0 }), "window_seconds"},
		{"hour window just ended", with(func(s *fuzzSignal) { s.windowSeconds = 3600; s.windowUnix = fuzzNow.Unix() - 3600 }), ""},
		{"window not ended", with(func(s *fuzzSignal) { s.windowUnix = fuzzNow.Unix() }), "window_start"},
		{"oldest window retained", with(func(s *fuzzSignal) { s.windowUnix = fuzzNow.Add(-fuzzMaxAge).Unix() }), ""},
		{"window past retention", with(func(s *fuzzSignal) { s.windowUnix = fuzzNow.Add(-fuzzMaxAge).Unix() - 60 }), "window_start"},
		{"window after year 9999", with(func(s *fuzzSignal) { s.windowUnix = 253402300800 }), "window_start"},
		{"window before year 1", with(func(s *fuzzSignal) { s.windowUnix = -62135596801 }), "window_start"},
		{"no window", with(func(s *fuzzSignal) { s.noWindow = true }), "window_start"},
		{"20 buckets", with(func(s *fuzzSignal) { s.tfCount = 20; s.tfDevices = 100 }), ""},
		{"21 buckets", with(func(s *fuzzSignal) { s.tfCount = 21; s.tfDevices = 100 }), "top_failures"},
		{"empty bucket", with(func(s *fuzzSignal) { s.tfCount = 3; s.tfDevices = 2 }), "top_failures[2].devices"},
		{"bucket above exposed", with(func(s *fuzzSignal) { s.tfDevices = s.exposed + 1 }), "top_failures[0].devices"},
		{"bucket without code or module", with(func(s *fuzzSignal) { s.tfBugcheck, s.tfModule = "", "" }), "top_failures[0]"},
		{"bad bugcheck", with(func(s *fuzzSignal) { s.tfBugcheck = "0x" }), "top_failures[0].bugcheck_code"},
		{"module is a path", with(func(s *fuzzSignal) { s.tfModule = `C:\Users\jdoe\x.sys` }), "top_failures[0].module"},
		{"bad module version", with(func(s *fuzzSignal) { s.tfModuleVersion = "7 16" }), "top_failures[0].module_version"},
		{"channel without version", with(func(s *fuzzSignal) { s.contentVersion = "" }), "content_version"},
		{"no channel", with(func(s *fuzzSignal) { s.contentChannel, s.contentVersion = "", "" }), ""},
		{"signal id is an e-mail", with(func(s *fuzzSignal) { s.signalID = "jdoe@contoso.com" }), "signal_id"},
		{"product with a space", with(func(s *fuzzSignal) { s.product = "Contoso AV" }), "product"},
		{"version with a newline", with(func(s *fuzzSignal) { s.productVersion = "7.16.18\n" }), "product_version"},
		{"os build not UTF-8", with(func(s *fuzzSignal) { s.osBuild = "\xff" }), "os_build"},
		{"bad rollout id", with(func(s *fuzzSignal) { s.rolloutID = "CS-291" }), "rollout_id"},
		{"no ring", with(func(s *fuzzSignal) { s.ring = 0 }), "ring"},
		{"unknown ring", with(func(s *fuzzSignal) { s.ring = 99 }), "ring"},
		{"os family in capitals", with(func(s *fuzzSignal) { s.osFamily = "Windows" }), "os_family"},
		{"unknown arch", with(func(s *fuzzSignal) { s.arch = "amd64" }), "arch"},
		{"country", with(func(s *fuzzSignal) { s.region = "DE" }), ""},
		{"country in lower case", with(func(s *fuzzSignal) { s.region = "de" }), "region"},
		{"continent", with(func(s *fuzzSignal) { s.region = "north-america" }), ""},
		{"no audience", with(func(s *fuzzSignal) { s.noAudience = true }), "audience"},
		{"no label", with(func(s *fuzzSignal) { s.tlp = 0 }), "audience.tlp"},
		{"unknown label", with(func(s *fuzzSignal) { s.tlp = 6 }), "audience.tlp"},
		{"red without orgs", with(func(s *fuzzSignal) { s.tlp = int32(phxv1.Tlp_TLP_RED) }), "audience.orgs"},
		{"red with orgs", with(func(s *fuzzSignal) { s.tlp, s.orgs = int32(phxv1.Tlp_TLP_RED), "fabrikam,national-cert" }), ""},
		{"org twice", with(func(s *fuzzSignal) { s.orgs = "fabrikam,fabrikam" }), "audience.orgs[1]"},
		{"unknown org", with(func(s *fuzzSignal) { s.orgs = "nobody" }), "audience.orgs[0]"},
		{"empty org", with(func(s *fuzzSignal) { s.orgs = "," }), "audience.orgs[0]"},
	}
}

func devRegistry(t testing.TB) *members.Registry {
	t.Helper()
	reg, err := members.New(members.File{TrustDomain: pki.DevTrustDomain, Members: pki.DevMembers})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestValidateSignalCases runs the fuzz seeds as a table: each is accepted
// or refused on the field it names.
func TestValidateSignalCases(t *testing.T) {
	reg := devRegistry(t)
	for _, c := range signalCases() {
		t.Run(c.name, func(t *testing.T) {
			sig := c.sig.build()
			err := validateSignal(sig, fuzzNow, fuzzMaxAge, reg)
			var fe *fieldError
			switch {
			case c.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.field == "":
				checkInvariants(t, sig, reg)
			case !errors.As(err, &fe) || fe.field != c.field:
				t.Fatalf("error %v, want a refusal of %s", err, c.field)
			default:
				checkRefusal(t, err)
			}
		})
	}
	// A nil cell is the one refusal without a field: the caller names it
	// (signals[i]).
	var fe *fieldError
	if err := validateSignal(nil, fuzzNow, fuzzMaxAge, reg); !errors.As(err, &fe) || fe.field != "" {
		t.Fatalf("validateSignal(nil) = %v", err)
	}
}

// FuzzValidateSignal builds health cells from fuzzed fields and checks
// that validateSignal never panics, refuses with a field error naming the
// field, and accepts only cells that hold every invariant the fan-out and
// the detector rely on. The seeds in testdata/fuzz/FuzzValidateSignal run
// with every go test.
func FuzzValidateSignal(f *testing.F) {
	reg := devRegistry(f)
	for _, c := range signalCases() {
		s := c.sig
		f.Add(s.signalID, s.product, s.productVersion, s.contentChannel, s.contentVersion, s.rolloutID, s.ring,
			s.osFamily, s.osBuild, s.arch, s.region, s.windowUnix, s.windowNanos, s.windowSeconds,
			s.active, s.exposed, s.silent, s.tenants, s.kernel, s.boot, s.hang, s.agent,
			s.tfBugcheck, s.tfModule, s.tfModuleVersion, s.tfDevices, s.tfCount, s.tlp, s.orgs, s.noWindow, s.noAudience)
	}
	f.Fuzz(func(t *testing.T, signalID, product, productVersion, contentChannel, contentVersion, rolloutID string, ring int32,
		osFamily, osBuild, arch, region string, windowUnix int64, windowNanos int32, windowSeconds uint32,
		active, exposed, silent, tenants, kernel, boot, hang, agent uint32,
		tfBugcheck, tfModule, tfModuleVersion string, tfDevices uint32, tfCount uint8, tlp int32, orgs string, noWindow, noAudience bool) {
		sig := fuzzSignal{
			signalID, product, productVersion, contentChannel, contentVersion, rolloutID, ring,
			osFamily, osBuild, arch, region, windowUnix, windowNanos, windowSeconds,
			active, exposed, silent, tenants, kernel, boot, hang, agent,
			tfBugcheck, tfModule, tfModuleVersion, tfDevices, tfCount, tlp, orgs, noWindow, noAudience,
		}.build()
		before := proto.Clone(sig)
		err := validateSignal(sig, fuzzNow, fuzzMaxAge, reg)
		if !proto.Equal(before, sig) {
			t.Fatalf("validateSignal changed the cell")
		}
		if err != nil {
			checkRefusal(t, err)
			return
		}
		checkInvariants(t, sig, reg)
	})
}

// checkRefusal: a refusal is an InvalidArgument field error whose path is a
// field of the cell, and the gRPC status names that field.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	var fe *fieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *fieldError", err, err)
	}
	if fe.code != codes.InvalidArgument {
		t.Fatalf("error %v has code %s, want InvalidArgument", err, fe.code)
	}
	if !signalFields.MatchString(fe.field) {
		t.Fatalf("error %v names field %q, which is not a field of a health cell", err, fe.field)
	}
	st := toStatus(err)
	if status.Code(st) != codes.InvalidArgument || fieldOf(t, st) != fe.field {
		t.Fatalf("status %v does not carry field %q", st, fe.field)
	}
}

// checkInvariants: what an accepted cell guarantees to the code after
// validation.
func checkInvariants(t *testing.T, s *phxv1.HealthSignal, reg *members.Registry) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("accepted cell %v: "+format, append([]any{s}, args...)...)
	}
	for _, c := range []struct {
		name string
		re   *regexp.Regexp
		v    string
		opt  bool
	}{
		{"signal_id", reSignalID, s.SignalId, false},
		{"product", reID, s.Product, false},
		{"product_version", reVersion, s.ProductVersion, false},
		{"content_channel", reID, s.ContentChannel, true},
		{"content_version", reVersion, s.ContentVersion, s.ContentChannel == ""},
		{"rollout_id", reRollout, s.RolloutId, true},
		{"os_build", reVersion, s.OsBuild, false},
	} {
		if !(c.opt && c.v == "") && !c.re.MatchString(c.v) {
			fail("%s %q does not match %s", c.name, c.v, c.re)
		}
	}
	if _, ok := phxv1.Ring_name[int32(s.Ring)]; !ok || s.Ring == phxv1.Ring_RING_UNSPECIFIED {
		fail("ring %d", s.Ring)
	}
	if !slices.Contains(osFamilies, s.OsFamily) || !slices.Contains(arches, s.Arch) {
		fail("os_family %q or arch %q", s.OsFamily, s.Arch)
	}
	if validRegion("region", s.Region) != nil {
		fail("region %q", s.Region)
	}
	// The window: a known length, aligned, ended, retained.
	ws := s.WindowSeconds
	if ws != 60 && ws != 300 && ws != 3600 {
		fail("window_seconds %d", ws)
	}
	if s.WindowStart == nil || s.WindowStart.CheckValid() != nil {
		fail("window_start %v", s.WindowStart)
	}
	start := s.WindowStart.AsTime()
	if start.Nanosecond() != 0 || start.Unix()%int64(ws) != 0 {
		fail("window_start %s not aligned to %d s", start, ws)
	}
	if end := start.Add(time.Duration(ws) * time.Second); end.After(fuzzNow.Add(clockSkew)) {
		fail("window ends at %s, after the hub's now %s", end, fuzzNow)
	}
	if start.Before(fuzzNow.Add(-fuzzMaxAge)) {
		fail("window_start %s is older than the retention", start)
	}
	// The counts: the detector divides by exposed (and active) and adds
	// failure counts; every count of a failure is within exposed.
	if s.DevicesActive < 1 || s.DevicesExposed > s.DevicesActive || s.DevicesSilent > s.DevicesActive {
		fail("active %d, exposed %d, silent %d", s.DevicesActive, s.DevicesExposed, s.DevicesSilent)
	}
	for _, c := range []uint32{s.DistinctTenants, s.KernelCrashDevices, s.BootFailureDevices, s.HangDevices, s.AgentCrashDevices} {
		if c > s.DevicesExposed {
			fail("a count %d above exposed %d", c, s.DevicesExposed)
		}
	}
	if len(s.TopFailures) > maxTopFailures {
		fail("%d top failures", len(s.TopFailures))
	}
	for i, tf := range s.TopFailures {
		if tf == nil || tf.BugcheckCode == "" && tf.Module == "" || tf.Devices < 1 || tf.Devices > s.DevicesExposed {
			fail("top_failures[%d] %v", i, tf)
		}
		if tf.BugcheckCode != "" && !reBugcheck.MatchString(tf.BugcheckCode) || tf.Module != "" && !reModule.MatchString(tf.Module) {
			fail("top_failures[%d] %v", i, tf)
		}
	}
	// The audience: a label the policy knows, named orgs that exist.
	a := s.Audience
	if a == nil || a.Tlp == phxv1.Tlp_TLP_UNSPECIFIED {
		fail("audience %v", a)
	}
	if _, ok := phxv1.Tlp_name[int32(a.Tlp)]; !ok {
		fail("tlp %d", a.Tlp)
	}
	if a.Tlp == phxv1.Tlp_TLP_RED && len(a.Orgs) == 0 {
		fail("TLP_RED without orgs")
	}
	for i, o := range a.Orgs {
		if _, ok := reg.Lookup(o); !ok || slices.Contains(a.Orgs[:i], o) {
			fail("orgs[%d] %q", i, o)
		}
	}
	// It can be stored: every string is valid UTF-8, so it marshals.
	if _, err := proto.Marshal(s); err != nil {
		fail("does not marshal: %v", err)
	}
}
