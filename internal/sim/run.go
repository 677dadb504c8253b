package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// Publisher takes what a run publishes: each org's cells, and rollout
// announcements and updates.
type Publisher interface {
	// Publish publishes cells as org and says what became of them.
	Publish(ctx context.Context, org string, cs []*phxv1.HealthSignal) (Outcome, error)
	// Apply announces or updates a rollout as c.Org.
	Apply(ctx context.Context, c Change) error
}

// Outcome counts what the hub did with published cells.
type Outcome struct {
	// Accepted, Duplicates and Rejected count cells.
	Accepted, Duplicates, Rejected int
	// FirstRejection says why the first rejected cell was rejected.
	FirstRejection string
}

func (o *Outcome) add(x Outcome) {
	o.Accepted += x.Accepted
	o.Duplicates += x.Duplicates
	o.Rejected += x.Rejected
	if o.FirstRejection == "" {
		o.FirstRejection = x.FirstRejection
	}
}

// Hub publishes to a phx hub through one SDK client per org. Cells go in
// batches of at most sdk.MaxBatch.
type Hub struct {
	clients map[string]*sdk.Client
	mu      sync.Mutex
	rev     map[string]uint64
}

// NewHub returns a publisher that acts as each org with its client. It
// needs a client for every org of Model.Orgs.
func NewHub(clients map[string]*sdk.Client) *Hub {
	return &Hub{clients: clients, rev: make(map[string]uint64)}
}

func (h *Hub) client(org string) (*sdk.Client, error) {
	c, ok := h.clients[org]
	if !ok {
		return nil, fmt.Errorf("no client for org %s", org)
	}
	return c, nil
}

// Publish publishes cs as org.
func (h *Hub) Publish(ctx context.Context, org string, cs []*phxv1.HealthSignal) (Outcome, error) {
	var o Outcome
	if len(cs) == 0 {
		return o, nil
	}
	c, err := h.client(org)
	if err != nil {
		return o, err
	}
	resp, err := c.PublishSignals(ctx, cs)
	if err != nil {
		return o, fmt.Errorf("%s: publish cells: %w", org, err)
	}
	o.Accepted, o.Duplicates, o.Rejected = int(resp.GetAccepted()), int(resp.GetDuplicates()), int(resp.GetRejected())
	for _, r := range resp.GetResults() {
		if err := sdk.ItemErr(r.GetError()); err != nil {
			o.FirstRejection = fmt.Sprintf("%s: cell %s: %v", org, r.GetSignalId(), err)
			break
		}
	}
	return o, nil
}

// Apply announces or updates a rollout as c.Org, compare-and-set on the
// revision it last saw; if the rollout changed meanwhile (another client
// updated it), it reads the revision again and retries once.
func (h *Hub) Apply(ctx context.Context, ch Change) error {
	c, err := h.client(ch.Org)
	if err != nil {
		return err
	}
	id := ch.Rollout.GetRolloutId()
	if ch.Announce {
		r, err := c.AnnounceRollout(ctx, ch.Rollout)
		if err != nil {
			return fmt.Errorf("%s: announce rollout %s: %w", ch.Org, id, err)
		}
		h.setRev(id, r.GetRevision())
		return nil
	}
	for attempt := 0; ; attempt++ {
		h.mu.Lock()
		rev := h.rev[id]
		h.mu.Unlock()
		r, err := c.UpdateRollout(ctx, id, rev, ch.Rollout, ch.Paths...)
		if err == nil {
			h.setRev(id, r.GetRevision())
			return nil
		}
		if attempt > 0 || !errors.Is(err, sdk.ErrFailedPrecondition) {
			return fmt.Errorf("%s: update rollout %s: %w", ch.Org, id, err)
		}
		cur, gerr := c.GetRollout(ctx, id)
		if gerr != nil {
			return fmt.Errorf("%s: update rollout %s: %w", ch.Org, id, err)
		}
		if cur.GetState() != phxv1.RolloutState_ROLLOUT_ACTIVE {
			// Paused or ended by its owner meanwhile: leave it so.
			h.setRev(id, cur.GetRevision())
			return nil
		}
		h.setRev(id, cur.GetRevision())
	}
}

func (h *Hub) setRev(id string, rev uint64) {
	h.mu.Lock()
	h.rev[id] = rev
	h.mu.Unlock()
}

// Recorder is a Publisher that keeps everything in memory and accepts
// every cell: for tests and dry runs.
type Recorder struct {
	mu sync.Mutex
	// Cells are the published cells by org.
	Cells map[string][]*phxv1.HealthSignal
	// Changes are the rollout announcements and updates, in order.
	Changes []Change
	// Discard keeps counts only, not the cells.
	Discard bool
}

// Publish records cs.
func (r *Recorder) Publish(_ context.Context, org string, cs []*phxv1.HealthSignal) (Outcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.Discard {
		if r.Cells == nil {
			r.Cells = make(map[string][]*phxv1.HealthSignal)
		}
		r.Cells[org] = append(r.Cells[org], cs...)
	}
	return Outcome{Accepted: len(cs)}, nil
}

// Apply records c.
func (r *Recorder) Apply(_ context.Context, c Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Changes = append(r.Changes, c)
	return nil
}

// RunOptions set how a run goes.
type RunOptions struct {
	// Speed is simulated time per real time: 1 is real time, 60 a
	// simulated minute per second, 0 as fast as possible. At any speed a
	// window is published only once it has ended by the wall clock.
	Speed float64
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
	// OnMinute is called after each simulated minute is published, on
	// Run's goroutine.
	OnMinute func(*Minute, Progress)
}

// Progress is where a run stands.
type Progress struct {
	// Sim is the simulated time.
	Sim time.Time
	// Minutes simulated so far, of Total.
	Minutes, Total int
	// Cells published so far and what became of them.
	Cells int
	Outcome
	// Observations fed to the builders so far.
	Observations uint64
	// Changes: rollout announcements and updates so far.
	Changes int
}

// Summary is the result of a run.
type Summary struct {
	// Scenario and Seed of the run.
	Scenario string
	Seed     uint64
	// Start and End of the simulated time.
	Start, End time.Time
	// Elapsed is the real time the run took.
	Elapsed time.Duration
	// Progress at the end.
	Progress
	// Orgs are each vendor's counts.
	Orgs []OrgSummary
	// Rollouts as last published.
	Rollouts []*phxv1.Rollout
	// Truth is the ground truth.
	Truth Truth
}

// OrgSummary is what one vendor published.
type OrgSummary struct {
	Stats
	Outcome
}

// Run simulates m to its end (or until ctx ends), publishing each minute's
// rollout changes and cells with pub, paced by opt.Speed, and returns what
// it did. It stops at the first error of pub.
func Run(ctx context.Context, m *Model, pub Publisher, opt RunOptions) (*Summary, error) {
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	if opt.Speed < 0 {
		return nil, fmt.Errorf("speed %v is negative", opt.Speed)
	}
	realStart := now()
	simStart := m.Now()
	s := &Summary{Scenario: m.cfg.Scenario, Seed: m.cfg.Seed, Start: m.Start(), End: m.End()}
	s.Total = m.minutes
	per := make(map[string]*Outcome)
	var err error
	for !m.Done() && err == nil {
		if err = ctx.Err(); err != nil {
			break
		}
		var min *Minute
		if min, err = m.Step(); err != nil {
			break
		}
		end := min.Window.Add(time.Minute)
		if opt.Speed > 0 {
			deadline := realStart.Add(time.Duration(float64(end.Sub(simStart)) / opt.Speed))
			if err = sleep(ctx, deadline.Sub(now())); err != nil {
				break
			}
		}
		if err = sleep(ctx, end.Sub(now())); err != nil {
			break
		}
		for _, c := range min.Changes {
			if err = pub.Apply(ctx, c); err != nil {
				break
			}
			s.Changes++
		}
		for _, oc := range min.Cells {
			if err != nil {
				break
			}
			var o Outcome
			if o, err = pub.Publish(ctx, oc.Org, oc.Cells); err != nil {
				break
			}
			if per[oc.Org] == nil {
				per[oc.Org] = &Outcome{}
			}
			per[oc.Org].add(o)
			s.Outcome.add(o)
			s.Cells += len(oc.Cells)
		}
		s.Minutes++
		s.Sim = end
		s.Observations = 0
		for _, st := range m.Stats() {
			s.Observations += st.Observations
		}
		if opt.OnMinute != nil && err == nil {
			opt.OnMinute(min, s.Progress)
		}
	}
	s.Elapsed = now().Sub(realStart)
	for _, st := range m.Stats() {
		os := OrgSummary{Stats: st} // per org
		if o := per[st.Org]; o != nil {
			os.Outcome = *o
		}
		s.Orgs = append(s.Orgs, os)
	}
	s.Rollouts = m.Rollouts()
	s.Truth = m.Truth()
	return s, err
}

// RolloutHours sums the time the rollouts of a run are active, from the
// minutes a run produces (Add each, then Total at the end). Its zero value
// is ready to use.
type RolloutHours struct {
	active map[string]time.Time
	hours  float64
}

// Add takes the rollout changes of one minute.
func (h *RolloutHours) Add(min *Minute) {
	if h.active == nil {
		h.active = map[string]time.Time{}
	}
	for _, c := range min.Changes {
		id := c.Rollout.GetRolloutId()
		if c.Announce {
			h.active[id] = min.Window
			continue
		}
		if at, ok := h.active[id]; ok && c.Rollout.GetState() != phxv1.RolloutState_ROLLOUT_ACTIVE {
			h.hours += min.Window.Sub(at).Hours()
			delete(h.active, id)
		}
	}
}

// Total returns the rollout-hours, counting rollouts still active until end.
func (h *RolloutHours) Total(end time.Time) float64 {
	t := h.hours
	for _, at := range h.active {
		t += end.Sub(at).Hours()
	}
	return t
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
