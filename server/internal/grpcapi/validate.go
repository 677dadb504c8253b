package grpcapi

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Patterns of identifier fields. Identifiers never carry free text.
var (
	reID       = members.IDPattern // products, channels, orgs
	reVersion  = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_~-]{0,63}$`)
	reSignalID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	reRollout  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	reBugcheck = regexp.MustCompile(`^0x[0-9A-Fa-f]{1,16}$`)
	reModule   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	reCountry  = regexp.MustCompile(`^[A-Z]{2}$`)
	reRequest  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	reIncident = regexp.MustCompile(`^INC-[0-9A-Z]{10}$`)
	reRange    = regexp.MustCompile(`^[0-9A-Za-z.+_~<>=*, -]{1,64}$`)
)

var (
	osFamilies = []string{"windows", "macos", "linux"}
	arches     = []string{"x64", "arm64", "x86"}
	continents = []string{"africa", "antarctica", "asia", "europe", "north-america", "oceania", "south-america"}
	windows    = []uint32{60, 300, 3600}
)

const (
	// MaxBatch is the most signals one PublishSignals call takes.
	MaxBatch = 1000
	// maxTopFailures per cell.
	maxTopFailures = 20
	// clockSkew tolerated on window ends.
	clockSkew = 30 * time.Second
	// maxText is the longest free text field, in bytes.
	maxText = 8192
	// maxTitle is the longest title, in bytes.
	maxTitle = 200
)

func match(field string, re *regexp.Regexp, v string) error {
	if v == "" {
		return invalid(field, "is required")
	}
	if !re.MatchString(v) {
		return invalid(field, "%q does not match %s", v, re)
	}
	return nil
}

func optMatch(field string, re *regexp.Regexp, v string) error {
	if v == "" {
		return nil
	}
	return match(field, re, v)
}

func oneOf(field, v string, allowed []string) error {
	if !slices.Contains(allowed, v) {
		return invalid(field, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
	return nil
}

func validRing(field string, r phxv1.Ring) error {
	if r == phxv1.Ring_RING_UNSPECIFIED {
		return invalid(field, "is required")
	}
	if _, ok := phxv1.Ring_name[int32(r)]; !ok {
		return invalid(field, "%d is not a ring", r)
	}
	return nil
}

func validRegion(field, v string) error {
	if v == "global" || slices.Contains(continents, v) || reCountry.MatchString(v) {
		return nil
	}
	return invalid(field, "%q is not \"global\", a continent (%s) or an ISO 3166-1 alpha-2 country code", v, strings.Join(continents, ", "))
}

func validText(field, v string, max int, required bool) error {
	if v == "" {
		if required {
			return invalid(field, "is required")
		}
		return nil
	}
	if len(v) > max {
		return invalid(field, "is %d bytes; at most %d", len(v), max)
	}
	if !utf8.ValidString(v) {
		return invalid(field, "is not valid UTF-8")
	}
	return nil
}

// validAudience checks an audience against the registry.
func validAudience(field string, a *phxv1.Audience, reg *members.Registry) error {
	if a == nil {
		return invalid(field, "is required")
	}
	if a.Tlp == phxv1.Tlp_TLP_UNSPECIFIED {
		return invalid(field+".tlp", "is required")
	}
	if _, ok := phxv1.Tlp_name[int32(a.Tlp)]; !ok {
		return invalid(field+".tlp", "%d is not a TLP label", a.Tlp)
	}
	if a.Tlp == phxv1.Tlp_TLP_RED && len(a.Orgs) == 0 {
		return invalid(field+".orgs", "TLP_RED needs the orgs it is for")
	}
	if len(a.Orgs) > 200 {
		return invalid(field+".orgs", "at most 200 orgs")
	}
	for i, o := range a.Orgs {
		f := fmt.Sprintf("%s.orgs[%d]", field, i)
		if err := match(f, reID, o); err != nil {
			return err
		}
		if _, ok := reg.Lookup(o); !ok {
			return invalid(f, "%q is not a member of this hub", o)
		}
		if slices.Contains(a.Orgs[:i], o) {
			return invalid(f, "%q is listed twice", o)
		}
	}
	return nil
}

// validateSignal checks every field of a health cell.
func validateSignal(s *phxv1.HealthSignal, now time.Time, maxAge time.Duration, reg *members.Registry) error {
	if s == nil {
		return invalid("", "is empty")
	}
	checks := []error{
		match("signal_id", reSignalID, s.SignalId),
		match("product", reID, s.Product),
		match("product_version", reVersion, s.ProductVersion),
		optMatch("content_channel", reID, s.ContentChannel),
		optMatch("content_version", reVersion, s.ContentVersion),
		optMatch("rollout_id", reRollout, s.RolloutId),
		validRing("ring", s.Ring),
		oneOf("os_family", s.OsFamily, osFamilies),
		match("os_build", reVersion, s.OsBuild),
		oneOf("arch", s.Arch, arches),
		validRegion("region", s.Region),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if s.ContentChannel != "" && s.ContentVersion == "" {
		return invalid("content_version", "is required with content_channel")
	}
	if !slices.Contains(windows, s.WindowSeconds) {
		return invalid("window_seconds", "%d is not one of 60, 300, 3600", s.WindowSeconds)
	}
	if err := validTime("window_start", s.WindowStart); err != nil {
		return err
	}
	ws := s.WindowStart.AsTime()
	if ws.Nanosecond() != 0 || ws.Unix()%int64(s.WindowSeconds) != 0 {
		return invalid("window_start", "%s is not aligned to window_seconds (%d)", ws.UTC().Format(time.RFC3339Nano), s.WindowSeconds)
	}
	end := ws.Add(time.Duration(s.WindowSeconds) * time.Second)
	if end.After(now.Add(clockSkew)) {
		return invalid("window_start", "the window %s–%s has not ended yet (hub time %s)", ws.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if maxAge > 0 && ws.Before(now.Add(-maxAge)) {
		return invalid("window_start", "%s is older than the hub keeps health cells (%s)", ws.UTC().Format(time.RFC3339), maxAge)
	}
	if s.DevicesActive == 0 {
		return invalid("devices_active", "must be at least 1")
	}
	if s.DevicesExposed > s.DevicesActive {
		return invalid("devices_exposed", "%d must be ≤ devices_active (%d)", s.DevicesExposed, s.DevicesActive)
	}
	if s.DevicesSilent > s.DevicesActive {
		return invalid("devices_silent", "%d must be ≤ devices_active (%d)", s.DevicesSilent, s.DevicesActive)
	}
	for _, c := range []struct {
		name string
		v    uint32
	}{
		{"distinct_tenants", s.DistinctTenants},
		{"kernel_crash_devices", s.KernelCrashDevices},
		{"boot_failure_devices", s.BootFailureDevices},
		{"hang_devices", s.HangDevices},
		{"agent_crash_devices", s.AgentCrashDevices},
	} {
		if c.v > s.DevicesExposed {
			return invalid(c.name, "%d must be ≤ devices_exposed (%d)", c.v, s.DevicesExposed)
		}
	}
	if len(s.TopFailures) > maxTopFailures {
		return invalid("top_failures", "%d buckets; at most %d", len(s.TopFailures), maxTopFailures)
	}
	for i, tf := range s.TopFailures {
		f := fmt.Sprintf("top_failures[%d]", i)
		if tf.BugcheckCode == "" && tf.Module == "" {
			return invalid(f, "needs a bugcheck_code or a module")
		}
		if err := optMatch(f+".bugcheck_code", reBugcheck, tf.BugcheckCode); err != nil {
			return err
		}
		if err := optMatch(f+".module", reModule, tf.Module); err != nil {
			return err
		}
		if err := optMatch(f+".module_version", reVersion, tf.ModuleVersion); err != nil {
			return err
		}
		if tf.Devices == 0 {
			return invalid(f+".devices", "must be at least 1")
		}
		if tf.Devices > s.DevicesExposed {
			return invalid(f+".devices", "%d must be ≤ devices_exposed (%d)", tf.Devices, s.DevicesExposed)
		}
	}
	return validAudience("audience", s.Audience, reg)
}

func validTime(field string, ts *timestamppb.Timestamp) error {
	if ts == nil {
		return invalid(field, "is required")
	}
	if err := ts.CheckValid(); err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

var rolloutStates = map[phxv1.RolloutState][]phxv1.RolloutState{
	phxv1.RolloutState_ROLLOUT_ACTIVE:      {phxv1.RolloutState_ROLLOUT_PAUSED, phxv1.RolloutState_ROLLOUT_ROLLED_BACK, phxv1.RolloutState_ROLLOUT_COMPLETED},
	phxv1.RolloutState_ROLLOUT_PAUSED:      {phxv1.RolloutState_ROLLOUT_ACTIVE, phxv1.RolloutState_ROLLOUT_ROLLED_BACK},
	phxv1.RolloutState_ROLLOUT_ROLLED_BACK: nil,
	phxv1.RolloutState_ROLLOUT_COMPLETED:   nil,
}

func validPercent(field string, p float64) error {
	if math.IsNaN(p) || p < 0 || p > 100 {
		return invalid(field, "%v is not within 0..100", p)
	}
	return nil
}

// validateRolloutFields checks the fields of a rollout that a publisher sets.
func validateRolloutFields(r *phxv1.Rollout, reg *members.Registry) error {
	checks := []error{
		match("rollout_id", reRollout, r.RolloutId),
		match("product", reID, r.Product),
		optMatch("content_channel", reID, r.ContentChannel),
		match("content_version", reVersion, r.ContentVersion),
		optMatch("previous_version", reVersion, r.PreviousVersion),
		validRing("current_ring", r.CurrentRing),
		validPercent("percent_deployed", r.PercentDeployed),
		optMatch("incident_id", reIncident, r.IncidentId),
		validText("reason", r.Reason, 1024, false),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if _, ok := rolloutStates[r.State]; !ok {
		return invalid("state", "%d is not a rollout state", r.State)
	}
	if len(r.Schedule) > 16 {
		return invalid("schedule", "at most 16 stages")
	}
	for i, st := range r.Schedule {
		f := fmt.Sprintf("schedule[%d]", i)
		if err := validRing(f+".ring", st.Ring); err != nil {
			return err
		}
		if st.TargetPercent <= 0 || st.TargetPercent > 100 || math.IsNaN(st.TargetPercent) {
			return invalid(f+".target_percent", "%v is not within (0, 100]", st.TargetPercent)
		}
		if st.BakeTime != nil {
			if err := st.BakeTime.CheckValid(); err != nil || st.BakeTime.AsDuration() < 0 {
				return invalid(f+".bake_time", "must be a non-negative duration")
			}
		}
	}
	return validAudience("audience", r.Audience, reg)
}

var statusOrder = map[phxv1.Status]bool{
	phxv1.Status_STATUS_INVESTIGATING: true, phxv1.Status_STATUS_IDENTIFIED: true, phxv1.Status_STATUS_MITIGATING: true,
	phxv1.Status_STATUS_MONITORING: true, phxv1.Status_STATUS_RESOLVED: true,
}

// checkStatusMove: any move among open statuses; a resolved incident may
// only be reopened (to INVESTIGATING).
func checkStatusMove(from, to phxv1.Status) error {
	if !statusOrder[to] {
		return invalid("incident.status", "%d is not a status", to)
	}
	if from == phxv1.Status_STATUS_RESOLVED && to != phxv1.Status_STATUS_RESOLVED && to != phxv1.Status_STATUS_INVESTIGATING {
		return precondition("incident.status", "a resolved incident can only be reopened to STATUS_INVESTIGATING, not moved to %s", to)
	}
	return nil
}

// validateIncidentFields checks the publisher-set fields of an incident.
func validateIncidentFields(in *phxv1.Incident, reg *members.Registry) error {
	if err := validText("title", in.Title, maxTitle, true); err != nil {
		return err
	}
	if err := validText("impact", in.Impact, maxText, false); err != nil {
		return err
	}
	if _, ok := phxv1.Classification_name[int32(in.Classification)]; !ok || in.Classification == phxv1.Classification_CLASSIFICATION_UNSPECIFIED {
		return invalid("classification", "is required (CLASSIFICATION_ADVISORY or CLASSIFICATION_INCIDENT)")
	}
	if _, ok := phxv1.Severity_name[int32(in.Severity)]; !ok || in.Severity == phxv1.Severity_SEVERITY_UNSPECIFIED {
		return invalid("severity", "is required")
	}
	if !statusOrder[in.Status] {
		return invalid("status", "is required")
	}
	if len(in.Affected) == 0 {
		return invalid("affected", "name at least one affected product")
	}
	if len(in.Affected) > 50 {
		return invalid("affected", "at most 50 entries")
	}
	for i, a := range in.Affected {
		f := fmt.Sprintf("affected[%d]", i)
		if err := match(f+".product", reID, a.Product); err != nil {
			return err
		}
		if _, ok := reg.Owner(a.Product); !ok {
			return invalid(f+".product", "%q is not a product of any member", a.Product)
		}
		if err := optMatch(f+".version_range", reRange, a.VersionRange); err != nil {
			return err
		}
		if err := optMatch(f+".content_channel", reID, a.ContentChannel); err != nil {
			return err
		}
		if err := optMatch(f+".content_version", reVersion, a.ContentVersion); err != nil {
			return err
		}
		if len(a.OsBuilds) > 100 {
			return invalid(f+".os_builds", "at most 100")
		}
		for j, b := range a.OsBuilds {
			if err := match(fmt.Sprintf("%s.os_builds[%d]", f, j), reVersion, b); err != nil {
				return err
			}
		}
	}
	if len(in.Remediations) > 20 {
		return invalid("remediations", "at most 20")
	}
	for i, r := range in.Remediations {
		f := fmt.Sprintf("remediations[%d]", i)
		if _, ok := phxv1.RemediationCategory_name[int32(r.Category)]; !ok || r.Category == phxv1.RemediationCategory_REMEDIATION_CATEGORY_UNSPECIFIED {
			return invalid(f+".category", "is required")
		}
		if err := validText(f+".details", r.Details, maxText, true); err != nil {
			return err
		}
		if err := validText(f+".url", r.Url, 2048, false); err != nil {
			return err
		}
		if r.Url != "" && !strings.HasPrefix(r.Url, "https://") {
			return invalid(f+".url", "must be an https URL")
		}
	}
	if ra := in.RolloutAction; ra != nil {
		if err := match("rollout_action.rollout_id", reRollout, ra.RolloutId); err != nil {
			return err
		}
		if ra.Action != phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_PAUSE && ra.Action != phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_ROLLBACK {
			return invalid("rollout_action.action", "must be PAUSE or ROLLBACK")
		}
	}
	if in.RespondBy != nil {
		if err := validTime("respond_by", in.RespondBy); err != nil {
			return err
		}
	}
	return validAudience("audience", in.Audience, reg)
}

// Privacy holds the hub's privacy thresholds (DESIGN.md section 8).
type Privacy struct {
	// KDevices is the fewest exposed devices a cell, and devices a
	// top_failures bucket, may count (default 50).
	KDevices uint32
	// KTenants is the fewest distinct tenants a cell may count (default 5).
	KTenants uint32
}

// Default minimum cohorts.
const (
	DefaultKDevices = 50
	DefaultKTenants = 5
)

func (p *Privacy) defaults() {
	if p.KDevices == 0 {
		p.KDevices = DefaultKDevices
	}
	if p.KTenants == 0 {
		p.KTenants = DefaultKTenants
	}
}

// checkCohort refuses a valid cell whose counts are under the minimum
// cohorts: too few exposed devices or tenants could identify a customer.
func (p Privacy) checkCohort(s *phxv1.HealthSignal) error {
	if s.DevicesExposed < p.KDevices {
		return cohort("devices_exposed", "k_devices", s.DevicesExposed, p.KDevices, "exposed devices")
	}
	if s.DistinctTenants < p.KTenants {
		return cohort("distinct_tenants", "k_tenants", s.DistinctTenants, p.KTenants, "distinct tenants")
	}
	for i, tf := range s.TopFailures {
		if tf.Devices < p.KDevices {
			return cohort(fmt.Sprintf("top_failures[%d].devices", i), "k_devices", tf.Devices, p.KDevices, "devices in a failure bucket")
		}
	}
	return nil
}
