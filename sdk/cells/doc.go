// Package cells turns a vendor backend's per-device observations into the
// anonymized health cells (phx.v1.HealthSignal) that a phx hub takes.
//
// A backend feeds every report of every device to Observe: device id,
// tenant id, product, versions, OS build, ring, region and what happened
// (a check-in, a kernel crash, a boot failure, a hang, an agent crash, with
// bugcheck code and module). Every window the builder emits cells of
// counts; device and tenant ids never leave the process and are not kept
// in it either: on arrival the device id is replaced by a keyed 64-bit hash
// (hash/maphash, a random seed per builder) and the tenant id by a
// pseudonym, the first 8 bytes of HMAC-SHA256 under the tenant key
// (WithTenantKey; random per builder by default), cached per tenant so it
// is computed once. Emitted cells carry no hash of either. Two device ids
// whose hashes collide count as one device; among a million devices the
// chance that any two collide is about 3 in 100 million.
//
//	b, err := cells.New(cells.WithThresholds(50, 5))
//	...
//	go func() { // owned by the caller; ends with ctx
//		err := b.Run(ctx, func(ctx context.Context, cs []*phxv1.HealthSignal) error {
//			resp, err := client.PublishSignals(ctx, cs)
//			if err != nil {
//				return err // published again at the next window, same ids
//			}
//			for _, r := range resp.GetResults() {
//				if err := sdk.ItemErr(r.GetError()); err != nil {
//					log.Printf("cell %s: %v", r.GetSignalId(), err)
//				}
//			}
//			return nil
//		})
//		...
//	}()
//	for obs := range observations {
//		if err := b.Observe(obs); err != nil { ... }
//	}
//
// # Cells and windows
//
// A cell is keyed by product, product version, content channel, content
// version, rollout id, ring, OS family, OS build, architecture and region,
// and belongs to one window. Windows are aligned to their length in Unix
// time (60 s by default; WithWindow). The time of an observation places it
// in its window; a window closes once it has ended and the lateness
// (WithLateness, 10 s by default) has passed, and Flush, or Run at that
// moment, emits its cells exactly once. Observations of a closed window
// are refused with ErrLate and counted.
//
// # Counts
//
// Every count is of distinct devices: a device that crashes five times in a
// window counts once.
//
//   - A device reported in a cell and window if it had at least one
//     observation of that cell in that window; every event is also a
//     check-in.
//   - devices_silent: devices expected in the window that did not report in
//     it at all. A device is expected if it reported in one of the previous
//     n windows (WithSilentHorizon, 5 by default); it is counted silent in
//     the cell of its latest observation. A machine in a boot loop cannot
//     report its crash, so silence is the signal of the worst failures; a
//     device stays silent for n windows and is then forgotten. The counts
//     are meaningful when devices report at least once per window (a
//     heartbeat), and silence is undercounted during the first n windows
//     after the builder starts, since it knows no earlier windows.
//   - devices_active: the devices of the cell: those that reported in it
//     plus its silent devices. Counting silent devices in the population
//     keeps devices_silent ≤ devices_active, and keeps a cell in which every
//     device fell silent.
//   - devices_exposed: the devices running the cell's content version. The
//     content version is part of the cell key, so every device of a cell
//     runs it and devices_exposed equals devices_active in every cell this
//     package emits. (The contract allows fewer for publishers whose cells
//     mix content versions.)
//   - distinct_tenants: distinct tenant pseudonyms among the exposed
//     devices, silent ones included.
//   - kernel_crash_devices, boot_failure_devices, hang_devices,
//     agent_crash_devices: devices that reported at least one such event.
//     Silent devices have none, so each is ≤ devices_exposed.
//   - top_failures: per (bugcheck code, module, module version), the devices
//     that reported a failure with it; a device may be in several buckets.
//
// A device whose key changed within a window (a content update, an OS
// update) is counted in each cell it reported in.
//
// # Minimum cohort and roll-up
//
// A cell is emitted only with at least k_devices exposed devices and
// k_tenants distinct tenants (WithThresholds; the hub's defaults 50 and 5),
// and a top_failures bucket only with at least k_devices devices. A cell
// under the thresholds is rolled up, one dimension after another, each
// level keeping what the levels before it coarsened (type Level):
//
//  1. country ("DE");
//  2. its continent ("europe", see Continent);
//  3. "global";
//  4. the next longer window the hub accepts: five minutes for one-minute
//     windows (an hour for five-minute ones; no step for an hour);
//  5. the OS version instead of the build ("10.0.22631.3880" →
//     "10.0.22631", see OSVersion).
//
// Only the devices of the cells under the thresholds move on, and counts
// are recomputed from devices at every level, so a device is never counted
// twice in one cell (a device seen in three of five minutes counts once in
// the five-minute cell, and is silent there only if it reported in none of
// them). The cells of one window are therefore disjoint: "europe" holds the
// European devices whose country cells were too small, not all of Europe,
// and no shared cell is the difference of two others. An observation whose
// region is already a continent or "global", or whose build is already a
// version, joins at the level where its key is first formed. What is still
// under the thresholds after the last level is suppressed: not emitted,
// and counted in the Report with the number of devices, by reason. Nothing
// is dropped without being counted.
//
// Failure buckets under k_devices are merged likewise: without the module
// version, then to the bugcheck code alone (or the module alone when there
// is no code); a merged bucket counts only the devices of the buckets that
// were too small. What stays too small, or does not fit in the hub's 20
// buckets per cell (the largest are kept), is counted as suppressed in
// Report.Buckets.
//
// # Signal ids
//
// A cell's signal_id derives from the cell key and window (and the source
// of WithSource), never from counts or time of emission: a cell emitted
// again after a retry or a restart has the same id, and the hub stores it
// once.
//
// # Memory
//
// The builder remembers each device (about 180 bytes: its hashes, its
// latest cell and its presence in the open windows) while it is in an open
// window or within the silent horizon, and each distinct cell key (about
// 420 bytes) while a remembered device is in it: about 9 KB for a cell of
// 50 devices (BenchmarkMemoryPerCell). State does not grow with the number of
// observations or of windows; Tracked reports it, and WithLimits caps
// devices and cells (ErrTooManyDevices, ErrTooManyCells). During a Flush,
// rows of the closed window are built and dropped again; device rows under
// the thresholds are held until the longer window of level 4 closes.
//
// # Concurrency and speed
//
// A Builder is safe for concurrent use. Devices are split by their hash
// among independently locked shards (WithShards), so Observe from several
// goroutines scales with cores. Observe does not allocate once a device,
// its tenant and its cell are known; it does about a map lookup, a few
// string comparisons and a hash of two ids; BenchmarkObserve measures
// several million observations a second on one core, closing windows
// included. Run is one goroutine, the caller's, and returns when its
// context ends.
package cells
