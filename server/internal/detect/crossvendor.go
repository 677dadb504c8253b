package detect

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Candidate is one rollout ranked by a cross-vendor advisory.
type Candidate struct {
	// RolloutID names the rollout.
	RolloutID string
	// Publisher is the rollout's owner.
	Publisher string
	// Product is the rollout's product.
	Product string
	// Timing is in [0, 1]: 1 for a rollout that started just before the
	// rise, decaying with the delay (TimingScale), 0.05 for one that
	// started after it.
	Timing float64
	// Spread is the Jaccard overlap of the builds the rollout is on and
	// the builds where failures rose.
	Spread float64
	// Share is the share of the failing devices on the risen builds that
	// are on the rollout's cells (for an OS update: on its build).
	Share float64
	// Score is Timing * (Spread + Share) / 2; candidates are ranked by it.
	Score float64
}

// isPlatform reports whether product is one of the platform's OS products.
func (d *Detector) isPlatform(product string) bool {
	return slices.Contains(d.cfg.PlatformProducts, product)
}

// deploysBuild reports whether a platform rollout deploys the OS build b.
func deploysBuild(ro *rollout, b string) bool {
	return ro.ContentVersion != "" && (b == ro.ContentVersion || strings.HasPrefix(b, ro.ContentVersion+"."))
}

// crossVendor updates the build rise tests with one window end and, when a
// build's failure rate rose with no regression of the publisher's own
// rollouts to explain it, ranks the live rollouts and raises one advisory
// for the build.
func (d *Detector) crossVendor(end int64, cells []*agg, now time.Time) []Finding {
	// Only cells of one full build take part: a cell rolled up to the OS
	// version (the minimum cohort's last resort) holds the devices left
	// over from small cells of several builds, a population of its own
	// whose rates say nothing about any one build.
	var full []*agg
	for _, a := range cells {
		if isFullBuild(a.OSBuild) {
			full = append(full, a)
		}
	}
	cells = full
	byPPB := indexCells(cells)
	type pp struct{ pub, product string }
	byPP := map[pp][]*agg{}
	for _, a := range cells {
		byPP[pp{a.Publisher, a.Product}] = append(byPP[pp{a.Publisher, a.Product}], a)
	}
	keys := make([]string, 0, len(byPPB))
	for k := range byPPB {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	thr := math.Log(1 / d.cfg.RiseAlpha)
	newRise := map[string][]string{} // build -> stream keys newly held
	onsets := map[string][2]int64{}  // stream key -> onset, before the cap
	for _, k := range keys {
		vs := byPPB[k]
		a0 := vs[0]
		var ev, ec float64
		var xv, xc [numFailureTypes]float64
		for _, a := range vs {
			ev += float64(a.Exposed)
			for f := range numFailureTypes {
				xv[f] += float64(a.Fail[f])
			}
		}
		for _, a := range byPP[pp{a0.Publisher, a0.Product}] {
			if a.OSBuild == a0.OSBuild {
				continue
			}
			ec += float64(a.Exposed)
			for f := range numFailureTypes {
				xc[f] += float64(a.Fail[f])
			}
		}
		if ev <= 0 || ec <= 0 {
			continue
		}
		for f := range numFailureTypes {
			sk := k + "\x1f" + failureNames[f]
			key := "rise|" + sk
			s := d.st.Rises[key]
			if s == nil {
				if xv[f]+xc[f] == 0 {
					continue
				}
				s = &stream{Alpha: d.cfg.RiseAlpha}
				d.st.Rises[key] = s
			}
			s.Test.update(xv[f], ev, xc[f], ec, d.cfg.RiseNullRatio, end)
			holdKey := "risestream|" + sk
			if s.Test.logMix() >= thr {
				// The onset is read before the cap, which flattens the
				// alternatives that explain the rise best.
				from, to := s.Test.onset()
				// Cap the evidence kept past the threshold so that the
				// test falls back below it soon after the rise ends.
				for j := range s.Test.LogLR {
					s.Test.LogLR[j] = math.Min(s.Test.LogLR[j], thr+5)
				}
				if d.fire(holdKey, end) {
					newRise[a0.OSBuild] = append(newRise[a0.OSBuild], key)
					onsets[key] = [2]int64{from, to}
				}
			} else {
				d.quiet(holdKey)
			}
		}
	}

	// Risen builds: those with a held rise test.
	risen := map[string]bool{}
	for k := range d.st.Holds {
		if rest, ok := strings.CutPrefix(k, "risestream|"); ok {
			parts := strings.Split(rest, "\x1f")
			risen[parts[len(parts)-2]] = true
		}
	}
	for k := range d.st.Holds {
		if b, ok := strings.CutPrefix(k, "crossvendor|"); ok && !risen[b] {
			delete(d.st.Holds, k)
		}
	}

	builds := make([]string, 0, len(newRise))
	for b := range newRise {
		builds = append(builds, b)
	}
	slices.Sort(builds)
	var out []Finding
	for _, b := range builds {
		var affected []string
		var strongest *stream
		var onset [2]int64
		for _, k := range newRise[b] {
			pub := strings.SplitN(strings.TrimPrefix(k, "rise|"), "\x1f", 2)[0]
			if d.explainedBySelf(pub, b) {
				continue
			}
			affected = append(affected, pub)
			s := d.st.Rises[k]
			if strongest == nil || s.Test.logMix() > strongest.Test.logMix() {
				strongest, onset = s, onsets[k]
			}
		}
		if strongest == nil {
			continue
		}
		key := "crossvendor|" + b
		if !d.fire(key, end) {
			continue
		}
		ranking := d.rank(risen, cells, onset[0], onset[1], now)
		out = append(out, d.crossVendorFinding(key, b, end, now, strongest, affected, ranking, cells))
	}
	return out
}

// isFullBuild reports whether b names one OS build (10.0.22631.3880: four
// parts) rather than an OS version (10.0.22631) that cells are rolled up to.
func isFullBuild(b string) bool {
	return strings.Count(b, ".") >= 3
}

// explainedBySelf reports whether a regression or catastrophe advisory is
// held for a rollout of publisher present on build b.
func (d *Detector) explainedBySelf(pub, b string) bool {
	for id, ro := range d.st.Rollouts {
		if ro.Publisher != pub || ro.Builds[b] == 0 {
			continue
		}
		if d.st.Holds["regression|"+id] != nil || d.st.Holds["catastrophe|rollout:"+id] != nil {
			return true
		}
	}
	return false
}

// rank scores the live rollouts against the risen builds, whose rise
// started between from and to.
func (d *Detector) rank(risen map[string]bool, cells []*agg, from, to int64, now time.Time) []Candidate {
	var total float64
	for _, a := range cells {
		if risen[a.OSBuild] {
			total += float64(a.failing())
		}
	}
	seen := map[string]bool{}
	for _, a := range cells {
		seen[a.OSBuild] = true
	}
	var out []Candidate
	for id, ro := range d.st.Rollouts {
		switch phxv1.RolloutState(ro.State) {
		case phxv1.RolloutState_ROLLOUT_ACTIVE:
		case phxv1.RolloutState_ROLLOUT_PAUSED, phxv1.RolloutState_ROLLOUT_COMPLETED:
			if now.Unix()-ro.Updated > int64(d.cfg.CandidateHorizon/time.Second) {
				continue
			}
		default:
			continue
		}
		platform := d.isPlatform(ro.Product)
		// Footprint: builds where the rollout's cells were seen, and for
		// an OS update the builds it deploys.
		foot := map[string]bool{}
		for b, e := range ro.Builds {
			if e > 0 {
				foot[b] = true
			}
		}
		if platform {
			for b := range seen {
				if deploysBuild(ro, b) {
					foot[b] = true
				}
			}
			for b := range risen {
				if deploysBuild(ro, b) {
					foot[b] = true
				}
			}
		}
		inter, union := 0, len(foot)
		for b := range risen {
			if foot[b] {
				inter++
			} else {
				union++
			}
		}
		spread := 0.0
		if union > 0 {
			spread = float64(inter) / float64(union)
		}
		var mine float64
		for _, a := range cells {
			if !risen[a.OSBuild] {
				continue
			}
			if a.rid == id || (platform && deploysBuild(ro, a.OSBuild)) {
				mine += float64(a.failing())
			}
		}
		share := 0.0
		if total > 0 {
			share = mine / total
		}
		start := ro.Start
		if ro.FirstData > 0 && ro.FirstData < start {
			start = ro.FirstData
		}
		timing := 0.05
		switch {
		case start <= from:
			timing = math.Exp(-float64(from-start) / d.cfg.TimingScale.Seconds())
		case start <= to+600:
			timing = 1
		}
		out = append(out, Candidate{RolloutID: id, Publisher: ro.Publisher, Product: ro.Product,
			Timing: timing, Spread: spread, Share: share, Score: timing * (spread + share) / 2})
	}
	slices.SortFunc(out, func(a, b Candidate) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.RolloutID, b.RolloutID)
	})
	return out
}

func (d *Detector) crossVendorFinding(key, b string, end int64, now time.Time, s *stream, affected []string,
	ranking []Candidate, cells []*agg) Finding {
	t := &s.Test
	var refs []*agg
	for _, a := range cells {
		if a.OSBuild == b && slices.Contains(affected, a.Publisher) {
			refs = append(refs, a)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "failures rose on build %s (%sx the other builds); suspects:", b, ratioText(t.ratio()))
	// The advisory goes to the top suspect, the affected vendors and the
	// platform: it names only their rollouts, never another vendor's.
	audience := append([]string{d.cfg.PlatformOrg}, affected...)
	if len(ranking) > 0 {
		audience = append(audience, ranking[0].Publisher)
	}
	hidden := 0
	for i, c := range ranking {
		if i == 5 {
			break
		}
		if !slices.Contains(audience, c.Publisher) {
			hidden++
			continue
		}
		fmt.Fprintf(&sb, " %d. %s (%s, score %.2f: timing %.2f, spread %.2f, share %.2f)", i+1, c.RolloutID, c.Product,
			c.Score, c.Timing, c.Spread, c.Share)
	}
	if hidden > 0 {
		fmt.Fprintf(&sb, " (and %d rollout(s) of other members)", hidden)
	}
	if len(ranking) == 0 {
		sb.WriteString(" none active")
	}
	adv := &phxv1.Advisory{
		Kind:           phxv1.AdvisoryKind_ADVISORY_KIND_CROSS_VENDOR,
		Recommendation: phxv1.Recommendation_RECOMMENDATION_INVESTIGATE,
		Cells:          d.cellRefs(refs),
		Severity:       phxv1.Severity_SEVERITY_HIGH,
		Summary:        sb.String(),
		Evidence: &phxv1.Evidence{
			DevicesExposed:  uint64(t.EV),
			FailingDevices:  uint64(t.XV),
			Rate:            t.XV / t.EV,
			ControlRate:     t.XC / t.EC,
			RatioLowerBound: ratioLowerBound(t.XV, t.EV, t.XC, t.EC, s.Alpha),
			PValue:          t.pValue(),
			FirstDataAt:     ts(t.FirstAt),
			DetectedAt:      ts(end), // the window whose evaluation found it (event time)
		},
	}
	publisher := ""
	if len(affected) > 0 {
		publisher = affected[0]
	}
	if len(ranking) > 0 {
		adv.RolloutId = ranking[0].RolloutID
		adv.Product = ranking[0].Product
		publisher = ranking[0].Publisher
	}
	f := d.finding(key, publisher, end, now, adv, affected...)
	f.Ranking = ranking
	return f
}
