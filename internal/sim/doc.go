// Package sim is a fleet simulator: a model of endpoint-security vendors'
// devices, their tenants and rollouts, whose health goes to a phx hub as the
// vendors' anonymized cells.
//
// # The fleet
//
// Three vendors (the dev orgs contoso, fabrikam and northwind, each with
// its product) have Params.Devices devices each (20,000 by default), grouped
// into tenants of log-normal sizes (median 40 devices), each tenant in a
// country (a few countries on every continent), its devices on one of four
// Windows builds, x64 or arm64, and in a ring for their vendor's updates
// (internal 0.5 %, canary 1 %, early 10 %, broad the rest) and, drawn apart,
// in a ring for Windows updates. Devices report once a minute: a check-in,
// or a kernel crash, hang, boot failure or agent crash, at rates per
// device-hour with a day/night rhythm in the country's local time and an
// hourly random factor. Devices are switched off (silent) now and then, more
// in the evening, for two hours on average.
//
// Every device and its reports are simulated; the reports go to the
// vendor's cells.Builder, which applies the privacy rules (minimum cohort,
// roll-up, suppression) and hashes device and tenant ids: they never leave
// it. A minute of the default fleet is 60,000 observations.
//
// # Rollouts and scenarios
//
// In every run each vendor rolls out a new content version ring by ring
// (internal, canary, early, broad, with bake times), ten minutes apart, and
// the platform org microsoft rolls out a Windows update (product "windows",
// build UpdateFrom to UpdateTo). A device takes an update within a few
// minutes of its ring's release. The scenario decides which rollout is
// faulty (Truth): none (Normal), contoso's (ChannelFile291: devices on the
// affected builds boot-loop and fall silent), northwind's (SlowRegression:
// kernel crashes double on one build), or the Windows update
// (PlatformConflict: fabrikam's devices crash on the new build).
//
// # Determinism
//
// A Model is a function of its Config: the same seed, start and parameters
// give the same fleet, the same reports and the same cells (signal ids
// included). Random draws come from math/rand/v2 PCG streams, one per
// vendor; vendors are simulated in parallel within a minute.
//
// Run drives a model against a Publisher (the hub, through one SDK client
// per org, or a Recorder), in real time, on an accelerated clock, or as fast
// as possible, never ahead of the wall clock.
package sim
