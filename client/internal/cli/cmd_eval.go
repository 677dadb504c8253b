package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/phx-exchange/phx/client/internal/sim"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// evalRow is one scenario's measured detection.
type evalRow struct {
	Scenario          string    `json:"scenario"`
	FaultyRollout     string    `json:"faulty_rollout,omitempty"`
	FaultStart        time.Time `json:"fault_start,omitzero"`
	FirstFaultyWindow time.Time `json:"first_faulty_window,omitzero"`
	AdvisoryWindowEnd time.Time `json:"advisory_window_end,omitzero"`
	AdvisoryKind      string    `json:"advisory_kind,omitempty"`
	// Windows from the start of the first faulty one-minute window to the
	// end of the window whose evaluation raised the advisory.
	Windows         int  `json:"windows,omitempty"`
	RightBlamed     bool `json:"right_rollout_blamed"`
	FalseAdvisories int  `json:"false_advisories"`
}

// evaluate runs every scenario against the hub, waits for the hub's
// detector, and measures what it raised against the ground truth.
//
// The detector works in event time and drops cells of windows it has
// already evaluated, so the scenarios run one after the other in simulated
// time: the first starts 4 × duration ago, the last ends now. The hub must
// be fresh (its detector must not have seen later windows).
func (e *env) evaluate(ctx context.Context, seed uint64, devices int, duration time.Duration, certDir string) error {
	var rows []evalRow
	scenarios := []string{sim.ChannelFile291, sim.SlowRegression, sim.PlatformConflict, sim.Normal}
	begin := time.Now().Truncate(time.Minute).Add(-time.Duration(len(scenarios)) * duration)
	for i, sc := range scenarios {
		p := sim.DefaultParams()
		p.Devices = devices
		// Each scenario its own seed: rollout ids derive from it, and the
		// runs share a hub.
		m, err := sim.New(sim.Config{Scenario: sc, Seed: seed + uint64(i), Params: &p,
			Start: begin.Add(time.Duration(i) * duration), Duration: duration})
		if err != nil {
			return err
		}
		clients, err := e.simClients(m.Orgs(), certDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "%s: simulating %s with seed %d…\n", sc, duration, seed+uint64(i))
		s, err := sim.Run(ctx, m, sim.NewHub(clients), sim.RunOptions{})
		if err == nil && s.Rejected > 0 {
			err = fmt.Errorf("%s: the hub rejected %d cells; first: %s", sc, s.Rejected, s.FirstRejection)
		}
		if err != nil {
			closeAll(clients)
			return err
		}
		ours := map[string]*phxv1.Rollout{}
		for _, r := range s.Rollouts { // as the hub stored them
			ours[r.GetRolloutId()] = r
		}
		advs, err := settledAdvisories(ctx, clients[sim.PlatformOrg], ours)
		closeAll(clients)
		if err != nil {
			return err
		}
		rows = append(rows, score(m, advs))
	}
	if e.g.json {
		enc := json.NewEncoder(e.stdout)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	renderEval(e.stdout, rows)
	return nil
}

func closeAll(cs map[string]*sdk.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// settledAdvisories reads, as the platform (which receives every advisory),
// the advisories about this run's rollouts until three reads four seconds
// apart agree: the detector (which evaluates every two seconds) has caught up.
func settledAdvisories(ctx context.Context, c *sdk.Client, ours map[string]*phxv1.Rollout) ([]*phxv1.Advisory, error) {
	var last []*phxv1.Advisory
	deadline := time.Now().Add(2 * time.Minute)
	for stable := 0; stable < 3 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(4 * time.Second):
		}
		got, err := readAdvisories(ctx, c, ours)
		if err != nil {
			return nil, err
		}
		if len(got) == len(last) {
			stable++
		} else {
			stable = 0
		}
		last = got
	}
	return last, nil
}

// readAdvisories replays every advisory the hub retains, up to the first
// heartbeat after the replay.
func readAdvisories(ctx context.Context, c *sdk.Client, ours map[string]*phxv1.Rollout) ([]*phxv1.Advisory, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	sub, err := c.Subscribe(ctx, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ADVISORY}, HeartbeatSeconds: 1,
		Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	var out []*phxv1.Advisory
	for {
		env, err := sub.RecvAny()
		if err != nil {
			return nil, err
		}
		if env.GetKind() == phxv1.Kind_KIND_HEARTBEAT {
			return out, nil
		}
		if a := env.GetAdvisory(); a != nil && ours[a.GetRolloutId()] != nil {
			out = append(out, a)
		}
	}
}

// score compares the advisories with the run's ground truth.
func score(m *sim.Model, advs []*phxv1.Advisory) evalRow {
	t := m.Truth()
	row := evalRow{Scenario: t.Scenario, FaultStart: t.FaultStart, FirstFaultyWindow: t.FirstFaultyWindow}
	if t.Faulty {
		row.FaultyRollout = t.RolloutID
	}
	slices.SortFunc(advs, func(a, b *phxv1.Advisory) int {
		return a.GetEvidence().GetDetectedAt().AsTime().Compare(b.GetEvidence().GetDetectedAt().AsTime())
	})
	for i, a := range advs {
		if t.Faulty && a.GetRolloutId() == t.RolloutID {
			if row.AdvisoryWindowEnd.IsZero() && !t.FirstFaultyWindow.IsZero() {
				row.AdvisoryWindowEnd = a.GetEvidence().GetDetectedAt().AsTime()
				row.AdvisoryKind = enumLabel(a.GetKind(), "ADVISORY_KIND_")
				row.Windows = int(row.AdvisoryWindowEnd.Sub(t.FirstFaultyWindow) / time.Minute)
				row.RightBlamed = i == 0
			}
			continue
		}
		row.FalseAdvisories++
	}
	return row
}

func renderEval(w io.Writer, rows []evalRow) {
	tw := newTable(w)
	row(tw, "SCENARIO", "FAULT START", "FIRST FAULTY WINDOW", "ADVISORY (WINDOW END)", "WINDOWS", "RIGHT ROLLOUT", "FALSE ADVISORIES")
	for _, r := range rows {
		fault, first, adv, windows, right := "-", "-", "none", "-", "-"
		if !r.FaultStart.IsZero() {
			fault, first = r.FaultStart.UTC().Format("15:04:05"), "not reached"
			if !r.FirstFaultyWindow.IsZero() {
				first = r.FirstFaultyWindow.UTC().Format("15:04")
			}
			right = "no"
			if r.RightBlamed {
				right = "yes"
			}
		}
		if !r.AdvisoryWindowEnd.IsZero() {
			adv = r.AdvisoryWindowEnd.UTC().Format("15:04") + " " + r.AdvisoryKind
			windows = fmt.Sprint(r.Windows)
		}
		row(tw, r.Scenario, fault, first, adv, windows, right, fmt.Sprint(r.FalseAdvisories))
	}
	tw.Flush()
}
