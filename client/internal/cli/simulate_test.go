package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestSimulate(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		scenario string
		faulty   bool
	}{
		{"boot loop", []string{"--scenario", "channel-file-291", "--seed", "3"}, "channel-file-291", true},
		{"normal", []string{"--seed", "4"}, "normal", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := args([]string{"--hub", hub.Addr, "--data-dir", hub.DataDir, "--json"}, "simulate", "--speed", "0", "--duration", "45m", "--devices", "2000")
			out, errOut, err := phx(t, append(a, tt.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			var last simLine
			events := 0
			for _, l := range lines {
				var sl simLine
				if err := json.Unmarshal([]byte(l), &sl); err != nil {
					t.Fatalf("%v: %s", err, l)
				}
				if sl.Type == "event" {
					events++
				}
				last = sl
			}
			if last.Type != "summary" || last.Scenario != tt.scenario || last.Rejected != 0 || last.Accepted == 0 || last.Truth == nil || last.Truth.Faulty != tt.faulty {
				t.Fatalf("summary: %s", lines[len(lines)-1])
			}
			if tt.faulty && (last.Truth.FaultStart.IsZero() || last.Truth.FirstFaultyWindow.IsZero()) {
				t.Errorf("ground truth without times: %+v", last.Truth)
			}
			if events == 0 {
				t.Error("no events")
			}
		})
	}

	// Without --json: the summary tables.
	out, _, err := phx(t, "--hub", hub.Addr, "--data-dir", hub.DataDir, "simulate", "--scenario", "slow-regression", "--speed", "0", "--duration", "5m", "--devices", "500")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"scenario slow-regression, seed 1", "ORG", "OBSERVATIONS", "northwind", "ROLLOUT", "not started", "ground truth:", "faulty rollout"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestSimulateUsage(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "none")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown scenario", []string{"simulate", "--scenario", "meteor"}, `--scenario: unknown scenario "meteor"`},
		{"negative speed", []string{"simulate", "--speed", "-1"}, "--speed: -1 is negative"},
		{"too long", []string{"simulate", "--duration", "200h"}, "--duration"},
		{"part minutes", []string{"simulate", "--duration", "90s"}, "--duration"},
		{"no devices", []string{"simulate", "--devices", "0"}, "--devices"},
		{"no certificates", []string{"--data-dir", empty, "simulate", "--duration", "1m", "--devices", "10"}, "needs their certificates"},
		{"extra argument", []string{"simulate", "x"}, `unexpected argument "x"`},
		{"eval without a hub", []string{"simulate", "--eval", "--dry-run"}, "--eval needs a hub"},
		{"eval too long", []string{"simulate", "--eval", "--duration", "40h"}, "--eval runs 4 scenarios"},
		{"eval unknown scenario", []string{"simulate", "--eval", "--scenarios", "normal"}, `--scenarios: "normal" is not a faulty scenario`},
		{"eval too many normal runs", []string{"simulate", "--eval", "--normal-runs", "101"}, "--normal-runs"},
		{"devices of an unknown org", []string{"simulate", "--devices-of", "initech=5"}, `"initech" is not a vendor`},
		{"devices of without a count", []string{"simulate", "--devices-of", "northwind"}, "is not org=N"},
		{"devices of too many", []string{"simulate", "--devices-of", "northwind=6000000"}, "not a number of devices"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := phx(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || ExitCode(err) != 2 {
				t.Errorf("error %v (exit %d), want %q and exit 2", err, ExitCode(err), tt.want)
			}
		})
	}
}
