package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/phx-exchange/phx/server/servertest"
)

func TestBench(t *testing.T) {
	h := servertest.Start(t, servertest.WithMetrics())
	tiny := []string{"bench", "--signals", "1500", "--batch", "500", "--callers", "2",
		"--subscribers", "3", "--rate", "200", "--duration", "1s", "--fanout", "20", "--idle", "500ms"}

	out, errOut, err := phx(t, args(as(h, "contoso"), append(tiny, "--json", "--metrics", h.MetricsAddr)...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var r benchResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Org != "contoso" || r.Product != "contoso-av" {
		t.Errorf("org %q, product %q", r.Org, r.Product)
	}
	if x := r.Ingest; x == nil || x.Signals != 1500 || x.PerSecond <= 0 {
		t.Errorf("ingest: %+v", x)
	}
	if x := r.Latency; x == nil || x.Published != 200 || x.Expected != 600 || x.Delivered != x.Expected || x.P50Ms <= 0 || x.P999Ms < x.P50Ms {
		t.Errorf("latency: %+v", x)
	}
	if x := r.Fanout; x == nil || x.Subscribers != 20 || x.Received != 20 || x.AllMs <= 0 {
		t.Errorf("fanout: %+v", x)
	}
	if x := r.Memory; x == nil || x.Skipped != "" || x.HeapBefore == 0 || x.HeapAfter == 0 || x.IdleSeconds != 0.5 || x.CPUBefore < 0 || x.CPUAfter < 0 {
		t.Errorf("memory: %+v", x)
	}
	for _, w := range []string{"ingest:", "latency:", "fanout:", "memory:"} {
		if !strings.Contains(errOut, "bench: "+w) {
			t.Errorf("no progress for %s on stderr:\n%s", w, errOut)
		}
	}

	// The table; without --metrics the memory test says it was skipped.
	out, errOut, err = phx(t, args(as(h, "fabrikam"), "bench", "--tests", "fanout,memory", "--fanout", "5")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, w := range []string{"TEST", "SETUP", "RESULT", "fanout", "5 received it", "memory", "skipped: no --metrics"} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "ingest") || strings.Contains(out, "latency") {
		t.Errorf("tests not asked for ran:\n%s", out)
	}
}

func TestBenchUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown test", []string{"bench", "--tests", "speed"}, `unknown test "speed"`},
		{"big batch", []string{"bench", "--batch", "5000"}, "--batch: 5000 is not within 1..1000"},
		{"no subscribers", []string{"bench", "--subscribers", "0"}, "--subscribers"},
		{"no duration", []string{"bench", "--duration", "0s"}, "--duration"},
		{"extra argument", []string{"bench", "x"}, `unexpected argument "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := phx(t, tt.args...)
			if ExitCode(err) != 2 || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want a usage error with %q", err, tt.want)
			}
		})
	}
}
