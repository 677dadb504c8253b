// Package detect is the hub's detector: it reads the exact health cells and
// rollout states the hub stores and raises advisories. It is a pure package:
// the caller feeds it (ObserveCell, ObserveRollout), calls Step with the
// current time, publishes the returned Findings and persists MarshalState.
// Its output depends only on its inputs and the times passed in.
//
// # Windows
//
// Cells are summed per window end and per (publisher, product, content
// version, rollout, OS build, ring); regions are summed. A window is
// evaluated once, by the first Step at least Config.Grace after its end;
// cells arriving later are counted in Stats.CellsLate and dropped. A cell
// belongs to a rollout by its rollout_id, or else by the publisher, product
// and content version of a known rollout. Counts are summed as uint64 and
// float64; a cell with no exposed devices adds nothing and never divides.
//
// # Catastrophe rule
//
// Per (publisher, rollout or product+content version, OS build) and window:
// bad = boot failures + silent devices (capped at exposed), rate =
// bad/exposed. The control rate c is the same quantity for the publisher's
// other content versions of the product on the same build in the same window
// (the rollout's previous version when present), or DefaultSilentRate (5 %)
// when the control has fewer than 50 exposed devices. The rule fires when
//
//	exposed >= 50 and rate - c >= 8 % and L > c
//
// where L is the Chernoff lower confidence bound of the rate at level 1e-9
// (the smallest p with exposed*KL(rate||p) <= ln(1e9)). Comparing with the
// control removes devices merely switched off (evenings, holidays hit both
// versions alike); the bound stops 4 silent devices of 50 from firing by
// chance, while a full boot loop of 50 devices has L = 0.66. When a window
// has fewer than 50 exposed devices it is judged with the subject's
// previous window. A boot loop on a canary of 50 or more devices fires on
// the first window; of 25 or more on the second.
//
// Survivorship is not failure. The version a known rollout replaces is not
// judged outside a rollout: as devices take the update, those left on the
// old version are the ones not yet updated and the ones that fell silent
// (switched off) before they could, so its silent share climbs towards
// 100 %. Likewise on an OS build that a platform rollout replaces (its
// previous_version), only boot failures count, not silence. A boot loop on
// such a build still shows on the other builds the faulty version reaches.
//
// # Regression test (sequential)
//
// For each live rollout, per OS build and failure type (kernel crash, boot
// failure, hang, agent crash), window t gives x_V failing of E_V exposed on
// the new version and x_C of E_C on the control: the previous version on the
// same publisher, product and build, or any other version there (rings not
// yet offered the new one). If failures are Poisson with rates
// proportional to exposure, then given n = x_V + x_C,
//
//	x_V ~ Binomial(n, p(rho)),  p(rho) = rho*E_V / (rho*E_V + E_C)
//
// with rho the rate ratio; the null is rho = 1. The likelihood ratio of an
// alternative rho_j over one window is
//
//	rho_j^x_V * ((E_V+E_C) / (rho_j*E_V+E_C))^n
//
// and the product over windows, L_j(t), is a non-negative martingale of mean 1
// under the null. The test is the equal-weight mixture over the grid
// rho_j in {1.25, 1.5, 2, 3, 5, 10, 30, 100}: M(t) = mean_j L_j(t), also a
// martingale of mean 1. By Ville's inequality P(sup_t M(t) >= 1/a) <= a, so
// the test may be checked after every window for as long as the rollout
// lasts without inflating its false-alarm probability a; a window without
// exposure on either side or without failures leaves M unchanged.
//
// Alpha (default 0.001) is per rollout over its whole life. It is split
// over the rollout's tests (builds x failure types) by a union bound: the
// first StreamsPerRollout (32) get a/64 each and later ones a/2^(k-31), which
// sums to at most a. 10,000 rollout-hours of rollouts lasting a day or more
// is at most ~400 rollouts, hence at most 0.4 false regression advisories
// by the bound; the measured rate is several times below the bound (the
// mixture is conservative and counts are discrete). Lower Alpha for more
// margin at the price of a few windows of delay.
//
// The advisory reports, for the test that crossed: counts and rates summed
// over windows (exposed is in device-windows), the rate ratio estimate, the
// always-valid p-value 1/max_t M(t) multiplied by a/(the test's share) so it
// compares with Alpha, and a lower confidence bound of the ratio: the
// smallest rho0 the same mixture test of "ratio = rho0" does not reject at
// the test's share of alpha, computed on the cumulative counts (exact when the
// exposure share is constant over windows, an approximation otherwise).
//
// Assumptions a reviewer should keep in mind: devices failing in several
// windows count in each (overdispersion makes the test anticonservative if
// the same few machines crash every minute); the control must be
// comparable (rings differ in hardware mix); mixed window lengths in one
// window end are summed as device-windows.
//
// # Cross-vendor ranking
//
// Per (publisher, product, OS build, failure type) the same mixture test
// compares the build with the publisher's other builds in the same window,
// with null ratio RiseNullRatio (1.5, so ordinary differences between builds
// do not count) and RiseAlpha (1e-4) per test over all time. When it crosses,
// the build has risen for that publisher, unless a regression or
// catastrophe advisory is held for a rollout of the same publisher on that
// build (its own test explains it). The live rollouts of every publisher
// (active; paused or completed within CandidateHorizon) are then scored:
//
//   - timing: exp(-(onset - start)/TimingScale) where onset is the change
//     point of the rise test (the window after which the likelihood ratio
//     rose, of the alternative whose ratio gained most since its lowest
//     point) and start the rollout's announcement or first data; 1 when the
//     rollout started after the onset but up to 10 minutes after the latest
//     window the rise may have started at (the last where that likelihood
//     ratio was within e^3 of its lowest; after a gap in the data, the
//     window before the first new one that rose past it), 0.05 later;
//   - spread: the Jaccard overlap of the builds the rollout is on and the
//     risen builds (an OS update of the platform, product in
//     PlatformProducts, is on the build named by its content version);
//   - share: the share of the failing devices of the risen builds in the
//     window that are on the rollout's cells (all of them for the OS update
//     of that build).
//
// Score = timing * (spread + share) / 2. One advisory per build names the
// best-scored rollout, with the ranking in the summary and in
// Finding.Ranking.
//
// # De-duplication and state
//
// One advisory per rule and subject while its condition holds: the
// catastrophe per rollout (or version), the regression per rollout, the
// cross-vendor per build. A catastrophe or rise clears after ClearAfter (10)
// consecutive evaluated windows without the condition; a regression clears
// when its rollout resumes after a pause (its tests start afresh). Advisory
// ids derive from the rule, subject and window, so a replay yields the same
// id. MarshalState captures everything, including cells of windows not yet
// evaluated, so a restarted hub neither loses state nor repeats an
// advisory. Stats.LastWindowEnd gives the detector's lag.
package detect
