// Package version holds the build version of phx binaries.
package version

import "runtime/debug"

// Version is set at link time (-ldflags "-X github.com/phx-exchange/phx/internal/version.Version=v1.2.3");
// otherwise it is read from the module's build information.
var Version = ""

// String returns the version, or "dev" when unknown.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
