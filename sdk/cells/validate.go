package cells

import (
	"errors"
	"fmt"
	"regexp"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Errors of Observe. Test them with errors.Is; an ErrInvalid error names
// the offending field.
var (
	// ErrInvalid: a field of the observation would make a cell the hub
	// refuses, or a required field is empty.
	ErrInvalid = errors.New("invalid observation")
	// ErrLate: the observation's window is already closed.
	ErrLate = errors.New("observation for a closed window")
	// ErrFuture: the observation is dated more than one window ahead of
	// the builder's clock.
	ErrFuture = errors.New("observation from the future")
	// ErrTooManyDevices: tracking the observation's device would exceed the
	// device limit (WithLimits).
	ErrTooManyDevices = errors.New("too many devices tracked")
	// ErrTooManyCells: tracking the observation's cell would exceed the
	// cell limit (WithLimits).
	ErrTooManyCells = errors.New("too many cells tracked")
)

// The hub's patterns of the fields a cell carries.
var (
	reID       = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	reVersion  = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_~-]{0,63}$`)
	reRollout  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	reBugcheck = regexp.MustCompile(`^0x[0-9A-Fa-f]{1,16}$`)
	reModule   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

func matchField(field string, re *regexp.Regexp, v string, required bool) error {
	if v == "" {
		if required {
			return invalid(field, "is required")
		}
		return nil
	}
	if !re.MatchString(v) {
		return invalid(field, "%q does not match %s", v, re)
	}
	return nil
}

// validateKey checks the fields of an observation that make its cell key.
func validateKey(k *cellKey) error {
	for _, c := range []struct {
		field    string
		re       *regexp.Regexp
		v        string
		required bool
	}{
		{"Product", reID, k.product, true},
		{"ProductVersion", reVersion, k.productVersion, true},
		{"ContentChannel", reID, k.contentChannel, false},
		{"ContentVersion", reVersion, k.contentVersion, false},
		{"RolloutID", reRollout, k.rolloutID, false},
		{"OSBuild", reVersion, k.osBuild, true},
	} {
		if err := matchField(c.field, c.re, c.v, c.required); err != nil {
			return err
		}
	}
	if k.contentChannel != "" && k.contentVersion == "" {
		return invalid("ContentVersion", "is required with ContentChannel")
	}
	if _, ok := phxv1.Ring_name[int32(k.ring)]; !ok || k.ring == phxv1.Ring_RING_UNSPECIFIED {
		return invalid("Ring", "%v is not a ring", k.ring)
	}
	switch k.osFamily {
	case "windows", "macos", "linux":
	default:
		return invalid("OSFamily", "%q is not windows, macos or linux", k.osFamily)
	}
	switch k.arch {
	case "x64", "arm64", "x86":
	default:
		return invalid("Arch", "%q is not x64, arm64 or x86", k.arch)
	}
	if _, ok := continentOf[k.region]; !ok && k.region != "" && k.region != Global && !isContinent(k.region) {
		return invalid("Region", "%q is not an ISO 3166-1 alpha-2 country code, a continent or %q", k.region, Global)
	}
	return nil
}

// validateBucket checks the failure fields of an observation.
func validateBucket(k *bucketKey) error {
	if k.code == "" && k.module == "" {
		return invalid("BugcheckCode", "a failure with ModuleVersion needs a BugcheckCode or a Module")
	}
	if err := matchField("BugcheckCode", reBugcheck, k.code, false); err != nil {
		return err
	}
	if err := matchField("Module", reModule, k.module, false); err != nil {
		return err
	}
	return matchField("ModuleVersion", reVersion, k.version, false)
}
