package detect

import "math"

// ratioGrid is the set of alternative rate ratios the sequential test mixes
// over, with equal weights. A finite mixture of likelihood ratios, each a
// non-negative martingale with mean 1 under the null, is itself one.
var ratioGrid = [...]float64{1.25, 1.5, 2, 3, 5, 10, 30, 100}

// logGrid is ln(len(ratioGrid)), the price of not knowing the alternative.
var logGrid = math.Log(float64(len(ratioGrid)))

// onsetMargin bounds the change points a rise may have started at: those
// where an alternative's log likelihood ratio was within onsetMargin of its
// lowest, so that the windows after them explain the data within a factor
// of e^3 (about 20) as well as the windows after the lowest point.
const onsetMargin = 3.0

// seqTest is the state of one conditional-binomial mixture sequential
// probability ratio test of "the new version fails at rho0 times the
// control's rate" (null) against "at rho0*rho_j times" (alternatives).
type seqTest struct {
	// LogLR holds the log likelihood ratio of each alternative of ratioGrid.
	LogLR [len(ratioGrid)]float64 `json:"log_lr"`
	// MaxLogMix is the largest log mixture likelihood ratio seen so far.
	MaxLogMix float64 `json:"max_log_mix"`
	// MinLogLR and MinAt track, per alternative, the lowest log likelihood
	// ratio and the window end (unix seconds) where it was reached: the
	// change point estimate (the test rose from there).
	MinLogLR [len(ratioGrid)]float64 `json:"min_log_lr"`
	MinAt    [len(ratioGrid)]int64   `json:"min_at"`
	// RiseAt is, per alternative, the first window with failures after
	// MinAt (0 until there is one): where the rise starts. After a gap in
	// the data it is the first window of the new data, not the last one
	// before the gap.
	RiseAt [len(ratioGrid)]int64 `json:"rise_at"`
	// LowAt is, per alternative, the last window where the log likelihood
	// ratio was within onsetMargin of MinLogLR, and AboveAt the first
	// window with failures after it (0 until there is one): the latest
	// the rise may have started.
	LowAt   [len(ratioGrid)]int64 `json:"low_at"`
	AboveAt [len(ratioGrid)]int64 `json:"above_at"`
	// Cumulative counts: failing devices and exposed devices of the new
	// version (V) and the control (C), summed over windows.
	XV float64 `json:"xv"`
	EV float64 `json:"ev"`
	XC float64 `json:"xc"`
	EC float64 `json:"ec"`
	// Windows counts the windows that carried information.
	Windows int `json:"windows"`
	// FirstAt is the end (unix seconds) of the first window with data.
	FirstAt int64 `json:"first_at"`
}

// update adds one window: xv failing of ev exposed on the new version, xc of
// ec on the control, under null ratio rho0. A window without exposure on
// either side or without any failure carries no information and leaves the
// test unchanged (its conditional likelihood ratio is 1).
func (s *seqTest) update(xv, ev, xc, ec, rho0 float64, at int64) {
	if ev <= 0 || ec <= 0 {
		return
	}
	if s.FirstAt == 0 {
		s.FirstAt = at
		for j := range s.MinAt {
			s.MinAt[j] = at
		}
	}
	for j := range s.LowAt {
		if s.LowAt[j] == 0 {
			// Fresh, or stored before LowAt was kept.
			s.LowAt[j], s.AboveAt[j] = s.MinAt[j], s.RiseAt[j]
		}
	}
	s.XV += xv
	s.EV += ev
	s.XC += xc
	s.EC += ec
	n := xv + xc
	if n <= 0 {
		return
	}
	s.Windows++
	base := math.Log(rho0*ev + ec)
	for j, r := range ratioGrid {
		s.LogLR[j] += xv*math.Log(r) + n*(base-math.Log(rho0*r*ev+ec))
		if s.LogLR[j] < s.MinLogLR[j] {
			s.MinLogLR[j] = s.LogLR[j]
			s.MinAt[j] = at
			s.RiseAt[j] = 0
		} else if s.RiseAt[j] == 0 && at > s.MinAt[j] {
			s.RiseAt[j] = at
		}
		if s.LogLR[j] <= s.MinLogLR[j]+onsetMargin {
			s.LowAt[j], s.AboveAt[j] = at, 0
		} else if s.AboveAt[j] == 0 {
			s.AboveAt[j] = at
		}
	}
	if m := s.logMix(); m > s.MaxLogMix {
		s.MaxLogMix = m
	}
}

// logMix is the log of the equal-weight mixture likelihood ratio.
func (s *seqTest) logMix() float64 {
	return logMixOf(s.LogLR[:])
}

func logMixOf(ll []float64) float64 {
	mx := math.Inf(-1)
	for _, v := range ll {
		mx = max(mx, v)
	}
	sum := 0.0
	for _, v := range ll {
		sum += math.Exp(v - mx)
	}
	return mx + math.Log(sum) - logGrid
}

// pValue is the always-valid p-value: 1 / the largest mixture likelihood
// ratio seen, capped at 1.
func (s *seqTest) pValue() float64 {
	return math.Min(1, math.Exp(-s.MaxLogMix))
}

// onset bounds the change point of the rise: from is the window after
// which the data turned to the alternative that explains the rise best, to
// the latest window the rise may have started after. For alternative j the
// windows after its lowest point (MinAt) have the log likelihood ratio
// LogLR[j] - MinLogLR[j]; the change point and ratio that explain the data
// best (the generalized likelihood ratio, as in CUSUM) are those of the
// alternative where that is largest. Choosing the alternative by LogLR, the
// evidence of every window since the test's first data, would let a crash
// long before the rise choose one whose lowest point precedes that crash.
// Every window up to its LowAt explains the data within onsetMargin as
// well: when a crash came shortly before a gap in the data (no devices on
// the build for a while) and the rise after the gap, from is before the
// crash and to after the gap.
func (s *seqTest) onset() (from, to int64) {
	best := 0
	for j := range s.LogLR {
		if s.LogLR[j]-s.MinLogLR[j] > s.LogLR[best]-s.MinLogLR[best] {
			best = j
		}
	}
	// The window after which it rose ends where the first rising one
	// starts; windows are evaluated by their end, so step back to the
	// window before the first rising one.
	from, to = s.MinAt[best], s.LowAt[best]
	if r := s.RiseAt[best]; r != 0 {
		from = max(from, r-60)
	}
	if r := s.AboveAt[best]; r != 0 {
		to = max(to, r-60)
	}
	return from, max(from, to)
}

// ratio is the point estimate (XV/EV)/(XC/EC), 0 when undefined, +Inf when
// the control saw no failure and the new version did.
func (s *seqTest) ratio() float64 {
	return rateRatio(s.XV, s.EV, s.XC, s.EC)
}

func rateRatio(xv, ev, xc, ec float64) float64 {
	if ev <= 0 || ec <= 0 || xv <= 0 {
		return 0
	}
	if xc <= 0 {
		return math.Inf(1)
	}
	return (xv / ev) / (xc / ec)
}

// ratioLowerBound is the lower end of the one-sided confidence set
// {rho0 : the mixture test of "ratio = rho0" has not rejected at alpha},
// computed on the cumulative counts as if the exposure share had been
// constant. It is 0 when even a ratio near 0 is not rejected.
func ratioLowerBound(xv, ev, xc, ec, alpha float64) float64 {
	n := xv + xc
	if ev <= 0 || ec <= 0 || n <= 0 || xv <= 0 {
		return 0
	}
	thr := math.Log(1 / alpha)
	mix := func(rho0 float64) float64 {
		var ll [len(ratioGrid)]float64
		base := math.Log(rho0*ev + ec)
		for j, r := range ratioGrid {
			ll[j] = xv*math.Log(r) + n*(base-math.Log(rho0*r*ev+ec))
		}
		return logMixOf(ll[:])
	}
	lo, hi := math.Log(1e-3), math.Log(1e6)
	if mix(math.Exp(lo)) < thr {
		return 0
	}
	if mix(math.Exp(hi)) >= thr {
		return math.Exp(hi)
	}
	// Each alternative's log likelihood ratio falls as rho0 grows, so
	// the mixture does too: bisect on log rho0.
	for range 80 {
		mid := (lo + hi) / 2
		if mix(math.Exp(mid)) >= thr {
			lo = mid
		} else {
			hi = mid
		}
	}
	return math.Exp(lo)
}

// klBernoulli is the Kullback-Leibler divergence KL(q || p) of two
// Bernoulli laws.
func klBernoulli(q, p float64) float64 {
	t := 0.0
	if q > 0 {
		t += q * math.Log(q/p)
	}
	if q < 1 {
		t += (1 - q) * math.Log((1-q)/(1-p))
	}
	return t
}

// klLowerBound is the Chernoff lower confidence bound of a proportion: the
// smallest p with n * KL(x/n || p) <= ln(1/delta). For any true p below it,
// P(observing x/n or more) <= delta.
func klLowerBound(x, n, delta float64) float64 {
	if n <= 0 || x <= 0 {
		return 0
	}
	q := math.Min(1, x/n)
	thr := math.Log(1/delta) / n
	if klBernoulli(q, 1e-12) <= thr {
		return 0
	}
	lo, hi := 1e-12, q
	for range 80 {
		mid := (lo + hi) / 2
		if klBernoulli(q, mid) > thr {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}
