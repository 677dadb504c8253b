package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phx-exchange/phx/sdk/guard"
)

// simSummary is the last line of `phx simulate --json`.
type simSummary struct {
	Type     string `json:"type"`
	Scenario string `json:"scenario"`
	Rejected int    `json:"rejected"`
	Truth    struct {
		RolloutID         string    `json:"rollout_id"`
		FirstFaultyWindow time.Time `json:"first_faulty_window"`
	} `json:"truth"`
}

// simulate runs `phx simulate --json` as a process on an accelerated clock
// and returns its summary.
func simulate(t *testing.T, dataDir, addr string, args ...string) simSummary {
	t.Helper()
	s, err := runSimulate(dataDir, addr, args...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runSimulate is simulate for any goroutine: it reports failure as an error.
func runSimulate(dataDir, addr string, args ...string) (simSummary, error) {
	var last simSummary
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	full := append([]string{"--hub", addr, "--data-dir", dataDir, "--json", "simulate", "--speed", "0"}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "phx"), full...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return last, fmt.Errorf("phx simulate %v: %v\n%s", args, err, e.String())
	}
	sc := bufio.NewScanner(&o)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			return last, fmt.Errorf("%v: %s", err, sc.Text())
		}
	}
	if last.Type != "summary" || last.Rejected != 0 {
		return last, fmt.Errorf("simulate summary: %+v", last)
	}
	return last, nil
}

// watcher is a `phx --as ORG watch --kinds advisory --json` process.
type watcher struct {
	cmd *exec.Cmd
	out *lines
}

func watchAdvisories(t *testing.T, dataDir, addr, org string) *watcher {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "phx"), "--hub", addr, "--data-dir", dataDir, "--as", org, "--json",
		"watch", "--kinds", "advisory", "--from-beginning")
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		pw.Close()
	})
	return &watcher{cmd: cmd, out: newLines(pr)}
}

type advisoryLine struct {
	Kind     string `json:"kind"`
	Advisory *struct {
		ID        string `json:"id"`
		Kind      string `json:"kind"`
		RolloutID string `json:"rolloutId"`
		Summary   string `json:"summary"`
		Evidence  struct {
			DetectedAt  time.Time `json:"detectedAt"`
			FirstDataAt time.Time `json:"firstDataAt"`
		} `json:"evidence"`
	} `json:"advisory"`
}

// advisories returns the advisories a watcher printed, by id.
func (w *watcher) advisories() map[string]advisoryLine {
	out := map[string]advisoryLine{}
	for _, l := range w.out.snapshot() {
		var a advisoryLine
		if json.Unmarshal([]byte(l), &a) == nil && a.Advisory != nil {
			out[a.Advisory.ID] = a
		}
	}
	return out
}

// TestDetectorEndToEnd runs the boot-loop scenario through real processes:
// phxd with its detector, `phx simulate` publishing a fleet of 100,000
// devices per vendor on an accelerated clock, and `phx watch` as contoso
// (whose rollout is faulty), microsoft (the platform) and fabrikam (who must
// not get it). The advisory reaches contoso and microsoft within two
// windows of the first faulty window and names the rollout. phxd is then
// killed (SIGKILL) while the fleet keeps publishing and the boot loop goes
// on; restarted, its detector resumes from its stored state and does not
// raise the advisory again. contoso's rollout guard (sdk/guard) stops the
// rollout on the advisory, and still does after the restart.
func TestDetectorEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 300,000 devices")
	}
	dir := t.TempDir()
	addr := freePort(t)
	h := startHub(t, dir, addr)

	g := startGuard(t, dir, addr)
	contoso := watchAdvisories(t, dir, addr, "contoso")
	platform := watchAdvisories(t, dir, addr, "microsoft")
	fabrikam := watchAdvisories(t, dir, addr, "fabrikam")

	// 60 simulated minutes at two a second: contoso releases 291.2 to
	// canary at minute 30 and the canary ring keeps taking it (and going
	// silent) for ten minutes; the early ring would come at minute 60.
	type result struct {
		s   simSummary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := runSimulate(dir, addr, "--scenario", "channel-file-291", "--seed", "7", "--duration", "60m",
			"--devices", "100000", "--speed", "120")
		done <- result{s, err}
	}()
	isAdvisory := func(l string) bool {
		var a advisoryLine
		return json.Unmarshal([]byte(l), &a) == nil && a.Advisory != nil
	}
	i := contoso.out.waitFor(t, 0, "an advisory at contoso", isAdvisory)
	var adv advisoryLine
	if err := json.Unmarshal([]byte(contoso.out.snapshot()[i]), &adv); err != nil {
		t.Fatal(err)
	}
	// contoso's deployment controller stops on it: its rollout guard
	// (the SDK, in this process) now refuses the rollout.
	d := wantGuard(t, g, adv.Advisory.RolloutID, guard.CauseAdvisory, "the advisory")
	t.Logf("guard: %s", d.Reason)

	// Kill the hub without warning while the boot loop goes on, and
	// start it again: the simulator's clients retry through the outage.
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	h = startHub(t, dir, addr)
	i = h.stderr.waitFor(t, 0, "the detector to start", func(l string) bool { return strings.Contains(l, "detector started") })
	if l := h.stderr.snapshot()[i]; strings.Contains(l, "cursor=h0.r0.i0.a0") {
		t.Errorf("the restarted detector did not resume from its stored state: %s", l)
	}

	var s simSummary
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		s = r.s
	case <-time.After(4 * time.Minute):
		t.Fatal("phx simulate did not finish")
	}
	if s.Truth.RolloutID == "" || s.Truth.FirstFaultyWindow.IsZero() {
		t.Fatalf("ground truth: %+v", s.Truth)
	}
	// The detector evaluates every two seconds: give it a few rounds
	// after the last windows. (Should it lag, the checks below see
	// fewer advisories; they cannot fail for being slow.)
	time.Sleep(8 * time.Second)

	ours := func(w *watcher) []advisoryLine {
		var out []advisoryLine
		for _, a := range w.advisories() {
			if a.Advisory.RolloutID == s.Truth.RolloutID {
				out = append(out, a)
			}
		}
		return out
	}
	for _, w := range []struct {
		org string
		w   *watcher
	}{{"contoso", contoso}, {"microsoft", platform}} {
		got := ours(w.w)
		if len(got) != 1 {
			for _, a := range got {
				t.Logf("%s: %s %s", w.org, a.Advisory.ID, a.Advisory.Summary)
			}
			t.Fatalf("%s holds %d advisories about %s, want exactly 1 (none repeated after the restart)", w.org, len(got), s.Truth.RolloutID)
		}
		a := got[0].Advisory
		windows := int(a.Evidence.DetectedAt.Sub(s.Truth.FirstFaultyWindow) / time.Minute)
		t.Logf("%s: first faulty window %s, advisory %s (%s) on the window ending %s: %d window(s)", w.org,
			s.Truth.FirstFaultyWindow.Format("15:04"), a.ID, a.Kind, a.Evidence.DetectedAt.Format("15:04"), windows)
		if a.Kind != "ADVISORY_KIND_CATASTROPHE" || windows < 1 || windows > 2 {
			t.Errorf("%s: advisory %s after %d windows, want a catastrophe within 2", w.org, a.Kind, windows)
		}
	}
	// fabrikam is in neither audience.
	for _, a := range fabrikam.advisories() {
		if a.Advisory.RolloutID == s.Truth.RolloutID {
			t.Errorf("fabrikam received contoso's advisory %s", a.Advisory.ID)
		}
	}
	// Across the restart the guard still holds the rollout: nobody
	// changed its state since the advice.
	wantGuard(t, g, s.Truth.RolloutID, guard.CauseAdvisory, "after the restart")
	h.stop(t)
}

// evalRow is one line of `phx simulate --eval --json`.
type evalRow struct {
	Scenario          string    `json:"scenario"`
	RolloutHours      float64   `json:"rollout_hours"`
	FaultyRollout     string    `json:"faulty_rollout"`
	FirstFaultyWindow time.Time `json:"first_faulty_window"`
	AdvisoryWindowEnd time.Time `json:"advisory_window_end"`
	Windows           int       `json:"windows"`
	RightBlamed       bool      `json:"right_rollout_blamed"`
	Advisories        int       `json:"advisories"`
	FalseAdvisories   int       `json:"false_advisories"`
	False             []string  `json:"false"`
}

// TestSimulateEval runs `phx simulate --eval --in-process` as a process:
// the four scenarios against a fresh hub inside it, scored against the
// ground truth. The fleet is small (the minimum cohort slows detection;
// README has the figures at scale), so it checks who is blamed, not how
// fast.
func TestSimulateEval(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates four scenarios")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "phx"), "--json", "simulate", "--eval", "--in-process",
		"--seed", "7", "--duration", "100m", "--devices", "40000")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, e.String())
	}
	rows := map[string]evalRow{}
	sc := bufio.NewScanner(&o)
	for sc.Scan() {
		var r evalRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%v: %s", err, sc.Text())
		}
		rows[r.Scenario] = r
		t.Logf("%s: %.1f rollout-hours, first faulty window %s, advisory %s (%d windows), right first %v, %d advisories, %d false %v",
			r.Scenario, r.RolloutHours, r.FirstFaultyWindow.Format("15:04"), r.AdvisoryWindowEnd.Format("15:04"), r.Windows,
			r.RightBlamed, r.Advisories, r.FalseAdvisories, r.False)
	}
	if len(rows) != 4 {
		t.Fatalf("%d scenarios, want 4:\n%s", len(rows), o.String())
	}
	for _, sc := range []string{"channel-file-291", "platform-conflict"} {
		if r := rows[sc]; !r.RightBlamed || r.AdvisoryWindowEnd.IsZero() {
			t.Errorf("%s: the faulty rollout %s was not blamed first", sc, r.FaultyRollout)
		}
	}
	for sc, r := range rows {
		if r.FalseAdvisories != 0 || r.RolloutHours <= 0 {
			t.Errorf("%s: %d false advisories %v, %.1f rollout-hours", sc, r.FalseAdvisories, r.False, r.RolloutHours)
		}
	}
}
