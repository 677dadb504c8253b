package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/phx-exchange/phx/internal/pki"
	"github.com/phx-exchange/phx/internal/sim"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// maxSimDuration keeps every simulated window within the hub's default
// retention of health cells (7 days).
const maxSimDuration = 6 * 24 * time.Hour

const simulateLong = `Simulates a fleet of three vendors (contoso, fabrikam, northwind; --devices each) with
tenants, OS builds, regions and rings, and publishes its health as each vendor's cells, built
by the SDK cell builder (minimum cohort, roll-up; device and tenant ids never leave it).
Every run rolls out a new content version of each vendor and a Windows update (by
microsoft), ring by ring, announced and updated on the hub. The scenario makes one faulty:

  normal             no fault
  channel-file-291   contoso's content update boot-loops devices on the affected builds
                     (they go silent); released to canary, then wider
  slow-regression    northwind's content update doubles kernel crashes on one build
  platform-conflict  the Windows update breaks fabrikam's driver on the new build

Simulated time starts --duration before now, so every window has ended by the time it is
published; --speed 60 runs a simulated minute per second, 1 in real time, 0 as fast as
possible (never ahead of the wall clock). The same --seed gives the same cells.

Each vendor publishes as itself: the simulator needs a certificate and key for contoso,
fabrikam, northwind and microsoft, read as ORG.crt and ORG.key from --cert-dir, by default
the dev PKI of the data dir (DATA_DIR/pki, as 'phxd --dev' writes it); --ca (default
ca.crt there) verifies the hub. --dry-run builds the cells without a hub.

Progress goes to stderr when it is a terminal; a summary table and the ground truth (the
faulty rollout, when the fault started and the window of its first effect) to stdout at the
end. With --json: one JSON object per line, each event as it happens and a summary last.`

func simulateCmd() *command {
	return &command{
		name:    "simulate",
		args:    "--scenario NAME [--seed N] [--speed S] [--duration D] [--devices N]",
		summary: "publish a simulated fleet's health and rollouts (a scenario with a known fault)",
		long:    simulateLong,
		setup: func(fs *flag.FlagSet) runFunc {
			scenario := fs.String("scenario", sim.Normal, "`name`: "+strings.Join(sim.Scenarios(), ", "))
			seed := fs.Uint64("seed", 1, "random `seed`; the same seed gives the same run")
			speed := fs.Float64("speed", 60, "simulated time per real time (1: real time; 0: as fast as possible)")
			duration := fs.Duration("duration", 3*time.Hour, "simulated `time`, whole minutes, at most 144h")
			devices := fs.Int("devices", sim.DefaultParams().Devices, "devices per `vendor`")
			devicesOf := fs.String("devices-of", "", "devices of some vendors, overriding --devices: `org=N,...` (e.g. northwind=3000000)")
			certDir := fs.String("cert-dir", "", "`dir` of ORG.crt and ORG.key for each org (default: the data dir's dev PKI)")
			dryRun := fs.Bool("dry-run", false, "build the cells but publish nothing")
			eval := fs.Bool("eval", false, "run every scenario, one after the other, as fast as possible against a fresh hub and measure its detector")
			inProcess := fs.Bool("in-process", false, "with --eval: run a fresh hub in this process (dev PKI, embedded NATS, a temporary data dir) instead of using --hub")
			normalRuns := fs.Int("normal-runs", 1, "with --eval: how many runs of the normal scenario (more rollout-hours without a fault)")
			var only listFlag
			fs.Var(&only, "scenarios", "with --eval: only these faulty `scenarios` (comma-separated; default all three)")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				if !slices.Contains(sim.Scenarios(), *scenario) {
					return e.usagef("--scenario: unknown scenario %q (one of: %s)", *scenario, strings.Join(sim.Scenarios(), ", "))
				}
				if *speed < 0 {
					return e.usagef("--speed: %v is negative", *speed)
				}
				if *duration < time.Minute || *duration > maxSimDuration || *duration%time.Minute != 0 {
					return e.usagef("--duration: %v is not whole minutes from 1m to %v (the hub keeps cells 7 days)", *duration, maxSimDuration)
				}
				p := sim.DefaultParams()
				p.Devices = *devices
				if *devices < 1 || *devices > 5_000_000 {
					return e.usagef("--devices: %d is not within 1..5000000", *devices)
				}
				var err error
				if p.DevicesOf, err = parseDevicesOf(*devicesOf); err != nil {
					return e.usagef("--devices-of: %v", err)
				}
				if *eval {
					if *normalRuns < 0 || *normalRuns > 100 {
						return e.usagef("--normal-runs: %d is not within 0..100", *normalRuns)
					}
					faulty := []string{sim.ChannelFile291, sim.SlowRegression, sim.PlatformConflict}
					if len(only) > 0 {
						for _, sc := range only {
							if !slices.Contains(faulty, sc) {
								return e.usagef("--scenarios: %q is not a faulty scenario (one of: %s; --normal-runs sets the normal ones)", sc, strings.Join(faulty, ", "))
							}
						}
						faulty = only
					}
					if n := time.Duration(len(faulty) + *normalRuns); n**duration > maxSimDuration {
						return e.usagef("--eval runs %d scenarios of --duration each: at most %v each", n, maxSimDuration/n)
					}
					if *dryRun {
						return e.usagef("--eval needs a hub: it cannot be a --dry-run")
					}
					if *inProcess {
						stop, err := e.inProcessHub(ctx)
						if err != nil {
							return err
						}
						defer stop()
					}
					return e.evaluate(ctx, *seed, p, *duration, faulty, *normalRuns, *certDir)
				}
				m, err := sim.New(sim.Config{
					Scenario: *scenario, Seed: *seed, Params: &p,
					Start: time.Now().Truncate(time.Minute).Add(-*duration), Duration: *duration,
				})
				if err != nil {
					return err
				}
				var pub sim.Publisher = &sim.Recorder{Discard: true}
				if !*dryRun {
					clients, err := e.simClients(m.Orgs(), *certDir)
					if err != nil {
						return err
					}
					defer func() {
						for _, c := range clients {
							c.Close()
						}
					}()
					pub = sim.NewHub(clients)
				}
				return e.simulate(ctx, m, pub, *speed)
			}
		},
	}
}

// simClients connects to the hub once per org, with the org's certificate.
func (e *env) simClients(orgs []string, certDir string) (map[string]*sdk.Client, error) {
	dir := certDir
	if dir == "" {
		dir = pki.Layout{DataDir: e.g.dataDir}.Dir()
	}
	ca := e.g.ca
	if ca == "" {
		ca = filepath.Join(dir, "ca.crt")
	}
	clients := make(map[string]*sdk.Client, len(orgs))
	for _, org := range orgs {
		cert, key := filepath.Join(dir, org+".crt"), filepath.Join(dir, org+".key")
		for _, f := range []string{cert, key, ca} {
			if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
				for _, c := range clients {
					c.Close()
				}
				return nil, e.usagef("%s does not exist: the simulator publishes as each of %s and needs their certificates (the dev PKI of 'phxd --dev': --data-dir; or --cert-dir)", f, strings.Join(orgs, ", "))
			}
		}
		// The simulator is a long-running publisher: it rides out a hub
		// restart (about 30 s of retries) rather than stopping.
		c, err := sdk.New(e.g.hub, sdk.WithCertFiles(ca, cert, key), sdk.WithRetry(20, 200*time.Millisecond, 2*time.Second))
		if err != nil {
			for _, c := range clients {
				c.Close()
			}
			return nil, err
		}
		clients[org] = c
	}
	return clients, nil
}

// simLine is one JSON line of phx simulate --json.
// parseDevicesOf parses org=N,org=N.
func parseDevicesOf(s string) (map[string]int, error) {
	if s == "" {
		return nil, nil
	}
	var orgs []string
	for _, v := range sim.Vendors() {
		orgs = append(orgs, v.Org)
	}
	out := map[string]int{}
	for part := range strings.SplitSeq(s, ",") {
		org, n, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("%q is not org=N", part)
		}
		if !slices.Contains(orgs, org) {
			return nil, fmt.Errorf("%q is not a vendor of the model (one of: %s)", org, strings.Join(orgs, ", "))
		}
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 || v > 5_000_000 {
			return nil, fmt.Errorf("%s: %q is not a number of devices within 1..5000000", org, n)
		}
		out[org] = v
	}
	return out, nil
}

type simLine struct {
	Type      string    `json:"type"` // "event" or "summary"
	Time      time.Time `json:"time,omitzero"`
	Kind      string    `json:"kind,omitempty"`
	RolloutID string    `json:"rollout_id,omitempty"`
	Text      string    `json:"text,omitempty"`
	// Summary fields.
	Scenario       string       `json:"scenario,omitempty"`
	Seed           *uint64      `json:"seed,omitempty"`
	Start          time.Time    `json:"start,omitzero"`
	End            time.Time    `json:"end,omitzero"`
	ElapsedSeconds float64      `json:"elapsed_seconds,omitempty"`
	Cells          int          `json:"cells,omitempty"`
	Accepted       int          `json:"accepted,omitempty"`
	Duplicates     int          `json:"duplicates,omitempty"`
	Rejected       int          `json:"rejected,omitempty"`
	FirstRejection string       `json:"first_rejection,omitempty"`
	Orgs           []simOrg     `json:"orgs,omitempty"`
	Rollouts       []simRollout `json:"rollouts,omitempty"`
	Truth          *simTruth    `json:"truth,omitempty"`
	Observations   uint64       `json:"observations,omitempty"`
}

type simOrg struct {
	Org               string `json:"org"`
	Observations      uint64 `json:"observations"`
	Cells             int    `json:"cells"`
	Accepted          int    `json:"accepted"`
	Duplicates        int    `json:"duplicates"`
	Rejected          int    `json:"rejected"`
	SuppressedCells   int    `json:"suppressed_cells"`
	SuppressedDevices int    `json:"suppressed_devices"`
	Adopted           int    `json:"adopted"`
}

type simRollout struct {
	RolloutID string  `json:"rollout_id"`
	Product   string  `json:"product"`
	Version   string  `json:"content_version"`
	Ring      string  `json:"ring"`
	State     string  `json:"state"`
	Percent   float64 `json:"percent_deployed"`
	Announced bool    `json:"announced"`
}

type simTruth struct {
	Faulty            bool      `json:"faulty"`
	RolloutID         string    `json:"rollout_id,omitempty"`
	Org               string    `json:"org,omitempty"`
	Product           string    `json:"product,omitempty"`
	Version           string    `json:"content_version,omitempty"`
	AffectedProduct   string    `json:"affected_product,omitempty"`
	AffectedBuilds    []string  `json:"affected_builds,omitempty"`
	Effect            string    `json:"effect,omitempty"`
	Release           time.Time `json:"release,omitzero"`
	FaultStart        time.Time `json:"fault_start,omitzero"`
	FirstFaultyWindow time.Time `json:"first_faulty_window,omitzero"`
	Devices           int       `json:"devices,omitempty"`
}

// simulate runs m, reporting progress, and prints the summary.
func (e *env) simulate(ctx context.Context, m *sim.Model, pub sim.Publisher, speed float64) error {
	tty := isTerminal(e.stderr)
	enc := json.NewEncoder(e.stdout)
	announced := map[string]bool{}
	lastDraw := time.Time{}
	onMinute := func(min *sim.Minute, p sim.Progress) {
		for _, c := range min.Changes {
			if c.Announce {
				announced[c.Rollout.GetRolloutId()] = true
			}
		}
		for _, ev := range min.Events {
			switch {
			case e.g.json:
				enc.Encode(simLine{Type: "event", Time: ev.Time, Kind: ev.Kind, RolloutID: ev.RolloutID, Text: ev.Text})
			case tty:
				color := ""
				if ev.Kind != sim.EventRollout {
					color = red
				}
				fmt.Fprintf(e.stderr, "\r\x1b[K%s  %s\n", ev.Time.UTC().Format("15:04:05"), e.paint(color, ev.Text))
			}
		}
		if tty && (time.Since(lastDraw) > 100*time.Millisecond || p.Minutes == p.Total) {
			lastDraw = time.Now()
			fmt.Fprintf(e.stderr, "\r\x1b[K%s", simStatus(m, p))
		}
	}
	s, err := sim.Run(ctx, m, pub, sim.RunOptions{Speed: speed, OnMinute: onMinute})
	if tty {
		fmt.Fprint(e.stderr, "\r\x1b[K")
	}
	if s != nil {
		if e.g.json {
			enc.Encode(summaryLine(s, announced))
		} else {
			e.showSimSummary(e.stdout, s, announced)
		}
	}
	if err != nil {
		return err
	}
	if s.Rejected > 0 {
		return fmt.Errorf("the hub rejected %d cells; first: %s", s.Rejected, s.FirstRejection)
	}
	return nil
}

// simStatus is the progress line: simulated time, cells, rollouts' rings.
func simStatus(m *sim.Model, p sim.Progress) string {
	var rs []string
	for _, r := range m.Rollouts() {
		if r.GetRevision() == 0 && r.GetPercentDeployed() == 0 && r.GetState() == phxv1.RolloutState_ROLLOUT_ACTIVE {
			continue
		}
		rs = append(rs, fmt.Sprintf("%s %s", r.GetProduct(), enumLabel(r.GetCurrentRing(), "RING_")))
	}
	return fmt.Sprintf("%s  %d/%d min  %d cells (%d rejected)  %s",
		p.Sim.UTC().Format("2006-01-02 15:04"), p.Minutes, p.Total, p.Cells, p.Rejected, strings.Join(rs, ", "))
}

func summaryLine(s *sim.Summary, announced map[string]bool) simLine {
	seed := s.Seed
	l := simLine{
		Type: "summary", Scenario: s.Scenario, Seed: &seed, Start: s.Start, End: s.End,
		ElapsedSeconds: s.Elapsed.Seconds(), Cells: s.Cells, Accepted: s.Accepted,
		Duplicates: s.Duplicates, Rejected: s.Rejected, FirstRejection: s.FirstRejection,
		Observations: s.Observations,
	}
	for _, o := range s.Orgs {
		l.Orgs = append(l.Orgs, simOrg{
			Org: o.Org, Observations: o.Observations, Cells: o.Cells, Accepted: o.Accepted,
			Duplicates: o.Duplicates, Rejected: o.Rejected, SuppressedCells: o.SuppressedCells,
			SuppressedDevices: o.SuppressedDevices, Adopted: o.Adopted,
		})
	}
	for _, r := range s.Rollouts {
		l.Rollouts = append(l.Rollouts, simRollout{
			RolloutID: r.GetRolloutId(), Product: r.GetProduct(), Version: r.GetContentVersion(),
			Ring: enumLabel(r.GetCurrentRing(), "RING_"), State: enumLabel(r.GetState(), "ROLLOUT_"),
			Percent: r.GetPercentDeployed(), Announced: announced[r.GetRolloutId()],
		})
	}
	t := s.Truth
	l.Truth = &simTruth{
		Faulty: t.Faulty, RolloutID: t.RolloutID, Org: t.Org, Product: t.Product, Version: t.Version,
		AffectedProduct: t.AffectedProduct, AffectedBuilds: t.AffectedBuilds, Effect: t.Effect,
		Release: t.Release, FaultStart: t.FaultStart, FirstFaultyWindow: t.FirstFaultyWindow, Devices: t.Devices,
	}
	return l
}

func simTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// showSimSummary prints the summary tables and the ground truth.
func (e *env) showSimSummary(w io.Writer, s *sim.Summary, announced map[string]bool) {
	simulated := s.Sim.Sub(s.Start)
	rate := ""
	if s.Elapsed > 0 {
		rate = fmt.Sprintf(", %.2f simulated hours per second", simulated.Hours()/s.Elapsed.Seconds())
	}
	fmt.Fprintf(w, "scenario %s, seed %d: simulated %s to %s (%v) in %v%s\n\n", s.Scenario, s.Seed,
		simTime(s.Start), simTime(s.Sim), simulated, s.Elapsed.Round(time.Millisecond), rate)
	tw := newTable(w)
	row(tw, "ORG", "OBSERVATIONS", "CELLS", "ACCEPTED", "DUPLICATES", "REJECTED", "SUPPRESSED", "NEW CONTENT")
	for _, o := range s.Orgs {
		rej := fmt.Sprint(o.Rejected)
		if o.Rejected > 0 {
			rej = e.paint(red, rej)
		} else {
			rej = e.paint("", rej)
		}
		row(tw, o.Org, fmt.Sprint(o.Observations), fmt.Sprint(o.Cells), fmt.Sprint(o.Accepted), fmt.Sprint(o.Duplicates), rej,
			fmt.Sprintf("%d cells, %d devices", o.SuppressedCells, o.SuppressedDevices), fmt.Sprintf("%d devices", o.Adopted))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = newTable(w)
	row(tw, "ROLLOUT", "PRODUCT", "VERSION", "RING", "STATE", "DEPLOYED")
	for _, r := range s.Rollouts {
		ring, state := enumLabel(r.GetCurrentRing(), "RING_"), enumLabel(r.GetState(), "ROLLOUT_")
		if !announced[r.GetRolloutId()] {
			ring, state = "-", "not started"
		}
		row(tw, r.GetRolloutId(), r.GetProduct(), r.GetContentVersion(), ring, state, fmt.Sprintf("%.1f %%", r.GetPercentDeployed()))
	}
	tw.Flush()
	fmt.Fprintln(w)
	t := s.Truth
	if !t.Faulty {
		fmt.Fprintln(w, "ground truth: no faulty rollout")
		return
	}
	fmt.Fprintln(w, "ground truth:")
	tw = newTable(w)
	row(tw, "  faulty rollout", fmt.Sprintf("%s (%s %s by %s)", t.RolloutID, t.Product, t.Version, t.Org))
	row(tw, "  effect", fmt.Sprintf("%s: %s", t.AffectedProduct, t.Effect))
	row(tw, "  builds", strings.Join(t.AffectedBuilds, ", "))
	row(tw, "  release", simTime(t.Release))
	row(tw, "  fault start", simTime(t.FaultStart))
	row(tw, "  first faulty window", simTime(t.FirstFaultyWindow))
	row(tw, "  devices reached", fmt.Sprint(t.Devices))
	tw.Flush()
}
