package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/phx-exchange/phx/internal/sim"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/server"
)

// evalRow is one scenario's measured detection.
type evalRow struct {
	Scenario          string    `json:"scenario"`
	Seed              uint64    `json:"seed"`
	Start             time.Time `json:"start"`
	End               time.Time `json:"end"`
	RolloutHours      float64   `json:"rollout_hours"`
	FaultyRollout     string    `json:"faulty_rollout,omitempty"`
	FaultStart        time.Time `json:"fault_start,omitzero"`
	FirstFaultyWindow time.Time `json:"first_faulty_window,omitzero"`
	AdvisoryWindowEnd time.Time `json:"advisory_window_end,omitzero"`
	AdvisoryKind      string    `json:"advisory_kind,omitempty"`
	// Windows from the start of the first faulty one-minute window to the
	// end of the window whose evaluation raised the first advisory naming
	// the faulty rollout.
	Windows int `json:"windows,omitempty"`
	// RightBlamed: the first advisory of the scenario names the faulty
	// rollout.
	RightBlamed bool `json:"right_rollout_blamed"`
	// Advisories raised during the scenario, all rules, with or without a
	// rollout.
	Advisories int `json:"advisories"`
	// FalseAdvisories name no rollout or another rollout than the faulty
	// one (every advisory of a normal run), or come before the fault's
	// first effect.
	FalseAdvisories int `json:"false_advisories"`
	// False describes each false advisory: window end, kind, rollout and
	// summary.
	False []string `json:"false,omitempty"`
}

// evaluate runs every scenario against the hub, waits for the hub's
// detector, and measures what it raised against the ground truth.
//
// The detector works in event time and drops cells of windows it has
// already evaluated, so the scenarios run one after the other in simulated
// time, ending now. The hub must be fresh (its detector must not have seen
// later windows). Every advisory the hub raised is attributed to the
// scenario whose simulated time holds its detection window, whatever
// rollout it names (or none).
func (e *env) evaluate(ctx context.Context, seed uint64, params sim.Params, duration time.Duration, faulty []string, normalRuns int, certDir string) error {
	scenarios := slices.Clone(faulty)
	for range normalRuns {
		scenarios = append(scenarios, sim.Normal)
	}
	begin := time.Now().Truncate(time.Minute).Add(-time.Duration(len(scenarios)) * duration)
	var rows []evalRow
	var models []*sim.Model
	var platform *sdk.Client
	for i, sc := range scenarios {
		p := params
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
		fmt.Fprintf(e.stderr, "[%d/%d] %s: simulating %s from %s with seed %d…\n", i+1, len(scenarios), sc, duration,
			m.Start().Format("2006-01-02 15:04"), seed+uint64(i))
		var hours sim.RolloutHours
		s, err := sim.Run(ctx, m, sim.NewHub(clients), sim.RunOptions{OnMinute: func(min *sim.Minute, _ sim.Progress) {
			hours.Add(min)
		}})
		if err == nil && s.Rejected > 0 {
			err = fmt.Errorf("%s: the hub rejected %d cells; first: %s", sc, s.Rejected, s.FirstRejection)
		}
		if i == len(scenarios)-1 && err == nil {
			platform = clients[sim.PlatformOrg]
			defer platform.Close()
			delete(clients, sim.PlatformOrg)
		}
		closeAll(clients)
		if err != nil {
			return err
		}
		rows = append(rows, evalRow{Scenario: sc, Seed: seed + uint64(i), Start: m.Start(), End: m.End(),
			RolloutHours: hours.Total(m.End())})
		models = append(models, m)
	}
	fmt.Fprintf(e.stderr, "waiting for the hub's detector to settle…\n")
	advs, err := settledAdvisories(ctx, platform)
	if err != nil {
		return err
	}
	for i := range rows {
		score(&rows[i], models[i].Truth(), advs)
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

// inProcessHub starts a fresh hub in this process, in dev mode on a
// temporary data dir and a free loopback port, and points the CLI at it.
// stop shuts it down and removes the data dir.
func (e *env) inProcessHub(ctx context.Context) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "phx-eval-")
	if err != nil {
		return nil, err
	}
	srv, err := server.New(server.Config{Dev: true, DataDir: dir, Listen: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("in-process hub: %w", err)
	}
	e.g.hub, e.g.dataDir, e.g.ca = srv.Addr().String(), dir, ""
	fmt.Fprintf(e.stderr, "in-process hub on %s (data in %s)\n", e.g.hub, dir)
	return func() {
		cancel()
		<-done
		os.RemoveAll(dir)
	}, nil
}

func closeAll(cs map[string]*sdk.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// settledAdvisories reads, as the platform (which receives every advisory),
// every advisory until three reads four seconds apart agree: the detector
// (which evaluates every two seconds) has caught up.
func settledAdvisories(ctx context.Context, c *sdk.Client) ([]*phxv1.Advisory, error) {
	var last []*phxv1.Advisory
	deadline := time.Now().Add(5 * time.Minute)
	for stable := 0; stable < 3 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(4 * time.Second):
		}
		got, err := readAdvisories(ctx, c)
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
func readAdvisories(ctx context.Context, c *sdk.Client) ([]*phxv1.Advisory, error) {
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
		if a := env.GetAdvisory(); a != nil {
			out = append(out, a)
		}
	}
}

// score compares the advisories detected within the row's simulated time
// with the run's ground truth.
func score(row *evalRow, t sim.Truth, all []*phxv1.Advisory) {
	row.FaultStart, row.FirstFaultyWindow = t.FaultStart, t.FirstFaultyWindow
	if t.Faulty {
		row.FaultyRollout = t.RolloutID
	}
	var advs []*phxv1.Advisory
	for _, a := range all {
		at := a.GetEvidence().GetDetectedAt().AsTime()
		if at.After(row.Start) && !at.After(row.End) {
			advs = append(advs, a)
		}
	}
	slices.SortStableFunc(advs, func(a, b *phxv1.Advisory) int {
		return a.GetEvidence().GetDetectedAt().AsTime().Compare(b.GetEvidence().GetDetectedAt().AsTime())
	})
	row.Advisories = len(advs)
	for i, a := range advs {
		at := a.GetEvidence().GetDetectedAt().AsTime()
		right := t.Faulty && a.GetRolloutId() == t.RolloutID && !t.FirstFaultyWindow.IsZero() && at.After(t.FirstFaultyWindow)
		if !right {
			row.FalseAdvisories++
			row.False = append(row.False, fmt.Sprintf("%s %s rollout=%q: %s", at.UTC().Format("15:04"),
				enumLabel(a.GetKind(), "ADVISORY_KIND_"), a.GetRolloutId(), a.GetSummary()))
			continue
		}
		if row.AdvisoryWindowEnd.IsZero() {
			row.AdvisoryWindowEnd = at
			row.AdvisoryKind = enumLabel(a.GetKind(), "ADVISORY_KIND_")
			row.Windows = int(at.Sub(t.FirstFaultyWindow) / time.Minute)
			row.RightBlamed = i == 0
		}
	}
}

func renderEval(w io.Writer, rows []evalRow) {
	tw := newTable(w)
	row(tw, "SCENARIO", "ROLLOUT-HOURS", "FAULT START", "FIRST FAULTY WINDOW", "ADVISORY (WINDOW END)", "WINDOWS", "RIGHT ROLLOUT FIRST", "ADVISORIES", "FALSE")
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
		row(tw, r.Scenario, fmt.Sprintf("%.1f", r.RolloutHours), fault, first, adv, windows, right,
			fmt.Sprint(r.Advisories), fmt.Sprint(r.FalseAdvisories))
	}
	tw.Flush()
	for _, r := range rows {
		for _, f := range r.False {
			fmt.Fprintf(w, "false advisory in %s: %s\n", r.Scenario, f)
		}
	}
}
