package detect

import (
	"fmt"
	"math"
	"slices"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// streamAlpha is the share of alpha of the k-th test (1-based) of a
// rollout: the first s tests get alpha/(2s) each, later ones alpha/2^(k-s+1),
// so that the shares never sum past alpha however many tests open.
func streamAlpha(alpha float64, k, s int) float64 {
	if k <= s {
		return alpha / float64(2*s)
	}
	return alpha * math.Pow(2, -float64(k-s+1))
}

// indexCells groups cells by publisher, product and OS build.
func indexCells(cells []*agg) map[string][]*agg {
	m := map[string][]*agg{}
	for _, a := range cells {
		k := a.Publisher + "\x1f" + a.Product + "\x1f" + a.OSBuild
		m[k] = append(m[k], a)
	}
	return m
}

// regression updates the sequential tests of every live rollout with one
// window end and raises a regression advisory for a rollout whose test
// crossed its threshold.
func (d *Detector) regression(end int64, cells []*agg, now time.Time) []Finding {
	byPPB := indexCells(cells)
	ids := make([]string, 0, len(d.st.Rollouts))
	for id, ro := range d.st.Rollouts {
		s := phxv1.RolloutState(ro.State)
		if s == phxv1.RolloutState_ROLLOUT_ACTIVE || s == phxv1.RolloutState_ROLLOUT_PAUSED {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []Finding
	for _, id := range ids {
		ro := d.st.Rollouts[id]
		// The rollout's cells by build.
		vByBuild := map[string][]*agg{}
		var builds []string
		for _, a := range cells {
			if a.rid != id {
				continue
			}
			if _, ok := vByBuild[a.OSBuild]; !ok {
				builds = append(builds, a.OSBuild)
			}
			vByBuild[a.OSBuild] = append(vByBuild[a.OSBuild], a)
		}
		slices.Sort(builds)
		var best *stream
		var bestBuild string
		var bestFT int
		bestMargin := math.Inf(-1)
		for _, b := range builds {
			vs := vByBuild[b]
			cs := controlCells(ro, byPPB[ro.Publisher+"\x1f"+ro.Product+"\x1f"+b])
			var ev, ec float64
			var xv, xc [numFailureTypes]float64
			for _, a := range vs {
				ev += float64(a.Exposed)
				for f := range numFailureTypes {
					xv[f] += float64(a.Fail[f])
				}
			}
			for _, a := range cs {
				ec += float64(a.Exposed)
				for f := range numFailureTypes {
					xc[f] += float64(a.Fail[f])
				}
			}
			if ev <= 0 || ec <= 0 {
				continue
			}
			for f := range numFailureTypes {
				key := id + "|" + b + "|" + failureNames[f]
				s := d.st.Streams[key]
				if s == nil {
					if xv[f]+xc[f] == 0 {
						continue // open tests only once there is something to test
					}
					ro.Streams++
					s = &stream{Alpha: streamAlpha(d.cfg.Alpha, ro.Streams, d.cfg.StreamsPerRollout)}
					d.st.Streams[key] = s
				}
				s.Test.update(xv[f], ev, xc[f], ec, 1, end)
				margin := s.Test.logMix() - math.Log(1/s.Alpha)
				if margin >= 0 {
					s.Fired = true
				}
				if s.Fired && margin > bestMargin {
					best, bestBuild, bestFT, bestMargin = s, b, f, margin
				}
			}
		}
		if best == nil {
			continue
		}
		key := "regression|" + id
		if !d.fire(key, end) {
			continue
		}
		t := &best.Test
		ratio := t.ratio()
		lb := ratioLowerBound(t.XV, t.EV, t.XC, t.EC, best.Alpha)
		p := math.Min(1, t.pValue()*d.cfg.Alpha/best.Alpha)
		sev := phxv1.Severity_SEVERITY_HIGH
		if lb >= 10 || bestFT == ftBoot {
			sev = phxv1.Severity_SEVERITY_CRITICAL
		}
		adv := &phxv1.Advisory{
			Kind:           phxv1.AdvisoryKind_ADVISORY_KIND_REGRESSION,
			Recommendation: phxv1.Recommendation_RECOMMENDATION_PAUSE_ROLLOUT,
			RolloutId:      id,
			Product:        ro.Product,
			Cells:          d.cellRefs(vByBuild[bestBuild]),
			Severity:       sev,
			Summary: fmt.Sprintf("%s: %s %s rate %sx its control on %s (lower bound %.2f, p=%.2g)",
				id, ro.ContentVersion, failureNames[bestFT], ratioText(ratio), bestBuild, lb, p),
			Evidence: &phxv1.Evidence{
				DevicesExposed:  uint64(t.EV),
				FailingDevices:  uint64(t.XV),
				Rate:            t.XV / t.EV,
				ControlRate:     t.XC / t.EC,
				RatioLowerBound: lb,
				PValue:          p,
				FirstDataAt:     ts(ro.FirstData),
				DetectedAt:      ts(end), // the window whose evaluation found it (event time)
			},
		}
		out = append(out, d.finding(key, ro.Publisher, end, now, adv))
	}
	return out
}

// controlCells picks the control of a rollout among the cells of its
// publisher, product and build: the previous version when the rollout names
// one and it has exposed devices, else every other content version (rings
// not yet offered the new version).
func controlCells(ro *rollout, same []*agg) []*agg {
	var prev, other []*agg
	for _, a := range same {
		if a.rid == ro.ID || a.ContentVersion == ro.ContentVersion || a.Exposed == 0 {
			continue
		}
		other = append(other, a)
		if ro.Previous != "" && a.ContentVersion == ro.Previous {
			prev = append(prev, a)
		}
	}
	if len(prev) > 0 {
		return prev
	}
	return other
}
