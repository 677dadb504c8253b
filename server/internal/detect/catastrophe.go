package detect

import (
	"fmt"
	"math"
	"slices"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

type catGroup struct {
	publisher, product, subject, rid, build string
	cells                                   []*agg
	exposed, bad                            uint64
}

// catastrophe applies the catastrophe rule to one window end.
func (d *Detector) catastrophe(end int64, cells []*agg, now time.Time) []Finding {
	groups := map[string]*catGroup{}
	var order []string
	drained := d.drainedBuilds(cells)
	for _, a := range cells {
		k := a.Publisher + "\x1f" + subjectOf(a) + "\x1f" + a.OSBuild
		g := groups[k]
		if g == nil {
			g = &catGroup{publisher: a.Publisher, product: a.Product, subject: subjectOf(a), rid: a.rid, build: a.OSBuild}
			groups[k] = g
			order = append(order, k)
		}
		g.cells = append(g.cells, a)
		g.exposed += a.Exposed
		g.bad += a.Fail[ftBoot]
		if !drained[a.OSBuild] {
			g.bad += a.Silent
		}
	}
	slices.Sort(order)

	type hit struct {
		g                    *catGroup
		exposed, bad         uint64
		rate, control, lower float64
	}
	hits := map[string][]hit{}
	evaluated := map[string]string{} // subject -> publisher
	var subjects []string
	for _, k := range order {
		g := groups[k]
		if d.draining(g) {
			// The version a rollout replaces keeps only the devices
			// that have not taken the update yet, and those that fell
			// silent (switched off) before they could: its silent share
			// rises towards 100 % as the rollout completes. That is
			// survivorship, not a failure; the rollout's own version is
			// judged instead.
			continue
		}
		if _, ok := evaluated[g.subject]; !ok {
			subjects = append(subjects, g.subject)
		}
		evaluated[g.subject] = g.publisher
		exposed, bad := g.exposed, g.bad
		prevKey := "cat|" + k
		if p, ok := d.st.CatPrev[prevKey]; ok && exposed < d.cfg.CatastropheMinExposed && end-p.End <= 3600 {
			exposed += p.Exposed
			bad += p.Bad
		}
		d.st.CatPrev[prevKey] = catPrev{End: end, Exposed: g.exposed, Bad: g.bad}
		if exposed < d.cfg.CatastropheMinExposed {
			continue
		}
		bad = min(bad, exposed)
		control := d.catControl(g, groups, order, drained)
		rate := float64(bad) / float64(exposed)
		lower := klLowerBound(float64(bad), float64(exposed), d.cfg.CatastropheDelta)
		if rate-control >= d.cfg.CatastropheRate && lower > control {
			hits[g.subject] = append(hits[g.subject], hit{g, exposed, bad, rate, control, lower})
		}
	}
	// Forget the previous windows of subjects not seen for an hour.
	for k, p := range d.st.CatPrev {
		if end-p.End > 3600 {
			delete(d.st.CatPrev, k)
		}
	}

	slices.Sort(subjects)
	var out []Finding
	for _, subj := range subjects {
		key := "catastrophe|" + subj
		hs := hits[subj]
		if len(hs) == 0 {
			d.quiet(key)
			continue
		}
		if !d.fire(key, end) {
			continue
		}
		worst := hs[0]
		var refs []*agg
		var builds []string
		for _, h := range hs {
			if h.rate > worst.rate {
				worst = h
			}
			refs = append(refs, h.g.cells...)
			builds = append(builds, h.g.build)
		}
		g := worst.g
		first := int64(0)
		if ro := d.st.Rollouts[g.rid]; ro != nil {
			first = ro.FirstData
		}
		if first == 0 {
			for _, a := range g.cells {
				if first == 0 || a.WindowStart < first {
					first = a.WindowStart
				}
			}
		}
		ratioLB := 0.0
		if worst.control > 0 {
			ratioLB = worst.lower / worst.control
		}
		p := 1.0
		if worst.rate > worst.control && worst.control > 0 {
			p = math.Min(1, math.Exp(-float64(worst.exposed)*klBernoulli(worst.rate, worst.control)))
		}
		name := g.rid
		if name == "" {
			name = g.product + " " + g.cells[0].ContentVersion
		}
		adv := &phxv1.Advisory{
			Kind:           phxv1.AdvisoryKind_ADVISORY_KIND_CATASTROPHE,
			Recommendation: phxv1.Recommendation_RECOMMENDATION_PAUSE_ROLLOUT,
			RolloutId:      g.rid,
			Product:        g.product,
			Cells:          d.cellRefs(refs),
			Severity:       phxv1.Severity_SEVERITY_CRITICAL,
			Summary: fmt.Sprintf("%s: %.1f%% of %d exposed devices failed to boot or went silent on %s (control %.1f%%)",
				name, 100*worst.rate, worst.exposed, joinMax(builds, 5), 100*worst.control),
			Evidence: &phxv1.Evidence{
				DevicesExposed:  worst.exposed,
				FailingDevices:  worst.bad,
				Rate:            worst.rate,
				ControlRate:     worst.control,
				RatioLowerBound: ratioLB,
				PValue:          p,
				FirstDataAt:     ts(first),
				DetectedAt:      ts(end), // the window whose evaluation found it (event time)
			},
		}
		out = append(out, d.finding(key, g.publisher, end, now, adv))
	}
	return out
}

// draining reports whether g is cells of a version that a known rollout of
// the same publisher and product replaces, outside any rollout.
func (d *Detector) draining(g *catGroup) bool {
	if g.rid != "" {
		return false
	}
	v := g.cells[0].ContentVersion
	for _, ro := range d.st.Rollouts {
		if ro.Publisher == g.publisher && ro.Product == g.product && ro.Previous != "" && ro.Previous == v {
			return true
		}
	}
	return false
}

// drainedBuilds are the OS builds of cells that a known platform rollout
// replaces. As the update moves devices off such a build, those left on it
// are the ones that have not taken it yet and the ones that fell silent
// (switched off) before they could: silence there is survivorship, so the
// catastrophe rule counts only boot failures on it.
func (d *Detector) drainedBuilds(cells []*agg) map[string]bool {
	out := map[string]bool{}
	for _, ro := range d.st.Rollouts {
		if !d.isPlatform(ro.Product) || ro.Previous == "" {
			continue
		}
		prev := &rollout{ContentVersion: ro.Previous}
		for _, a := range cells {
			if deploysBuild(prev, a.OSBuild) {
				out[a.OSBuild] = true
			}
		}
	}
	return out
}

// catControl is the (boot failures + silent) / exposed rate of the control
// of g: the same publisher's other content versions of the product on the
// same build in the same window (the previous version when the rollout
// names one and it is present), or DefaultSilentRate when the control has
// fewer than CatastropheMinExposed devices.
func (d *Detector) catControl(g *catGroup, groups map[string]*catGroup, order []string, drained map[string]bool) float64 {
	prev := ""
	if ro := d.st.Rollouts[g.rid]; ro != nil {
		prev = ro.Previous
	}
	var exp, bad, expPrev, badPrev uint64
	for _, k := range order {
		o := groups[k]
		if o == g || o.publisher != g.publisher || o.product != g.product || o.build != g.build || o.subject == g.subject {
			continue
		}
		for _, a := range o.cells {
			b := a.Fail[ftBoot]
			if !drained[a.OSBuild] {
				b += a.Silent
			}
			exp += a.Exposed
			bad += b
			if prev != "" && a.ContentVersion == prev {
				expPrev += a.Exposed
				badPrev += b
			}
		}
	}
	if expPrev >= d.cfg.CatastropheMinExposed {
		exp, bad = expPrev, badPrev
	}
	if exp < d.cfg.CatastropheMinExposed {
		return d.cfg.DefaultSilentRate
	}
	return math.Min(1, float64(bad)/float64(exp))
}

func joinMax(xs []string, n int) string {
	slices.Sort(xs)
	xs = slices.Compact(xs)
	if len(xs) > n {
		return fmt.Sprintf("%s and %d more builds", joinList(xs[:n]), len(xs)-n)
	}
	return joinList(xs)
}

func joinList(xs []string) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += ", "
		}
		s += x
	}
	return s
}
