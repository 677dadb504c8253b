package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/phx-exchange/phx/internal/pki"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/server/servertest"
)

func unique() string { return fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff) }

func TestWhoAmI(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"as contoso", args(as(hub, "contoso"), "whoami"), []string{"org:", "contoso (Contoso)", "role:", "vendor", "products:", "contoso-av", "mTLS spiffe://phx.dev/org/contoso/dev"}},
		{"as the platform", args(as(hub, "microsoft"), "whoami"), []string{"microsoft (Microsoft)", "platform", "defender, windows"}},
		{"explicit files", []string{"--hub", hub.Addr, "--ca", hub.PKI.CACert(), "--cert", hub.PKI.OrgCert("fabrikam"), "--key", hub.PKI.OrgKey("fabrikam"), "whoami"}, []string{"fabrikam (Fabrikam)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := phx(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}

	// --json before and after the command.
	for _, a := range [][]string{args(as(hub, "contoso"), "--json", "whoami"), args(as(hub, "contoso"), "whoami", "--json")} {
		out, _, err := phx(t, a...)
		if err != nil {
			t.Fatal(err)
		}
		var who phxv1.WhoAmIResponse
		if err := protojson.Unmarshal([]byte(out), &who); err != nil {
			t.Fatalf("%v: %v\n%s", a, err, out)
		}
		if who.GetOrg() != "contoso" || who.GetRole() != phxv1.Role_ROLE_VENDOR || !strings.Contains(out, "\n  ") {
			t.Errorf("%v: %s", a, out)
		}
	}
}

func TestEnvironmentAndFlags(t *testing.T) {
	// The environment names the hub and credentials; flags beat it.
	t.Setenv("PHX_HUB", hub.Addr)
	t.Setenv("PHX_CA", hub.PKI.CACert())
	t.Setenv("PHX_CERT", hub.PKI.OrgCert("northwind"))
	t.Setenv("PHX_KEY", hub.PKI.OrgKey("northwind"))
	out, _, err := phx(t, "whoami")
	if err != nil || !strings.Contains(out, "northwind") {
		t.Errorf("from env: %v\n%s", err, out)
	}
	out, _, err = phx(t, "--cert", hub.PKI.OrgCert("fabrikam"), "--key", hub.PKI.OrgKey("fabrikam"), "whoami")
	if err != nil || !strings.Contains(out, "fabrikam") {
		t.Errorf("flags over env: %v\n%s", err, out)
	}
	t.Setenv("PHX_CERT", "")
	t.Setenv("PHX_KEY", "")
	t.Setenv("PHX_DATA_DIR", hub.DataDir)
	out, _, err = phx(t, "--as", "contoso", "whoami")
	if err != nil || !strings.Contains(out, "contoso") {
		t.Errorf("--as with PHX_DATA_DIR: %v\n%s", err, out)
	}
	// Several hubs in PHX_HUB: the first is not there, the second answers.
	t.Setenv("PHX_HUB", "127.0.0.1:1,"+hub.Addr)
	out, _, err = phx(t, "--as", "contoso", "whoami")
	if err != nil || !strings.Contains(out, "contoso") {
		t.Errorf("PHX_HUB with two hubs, the first down: %v\n%s", err, out)
	}
	// A hub that is not there: one line, unavailable.
	_, _, err = phx(t, "--hub", "127.0.0.1:1", "--as", "contoso", "--timeout", "3s", "whoami")
	if !errors.Is(err, sdk.ErrUnavailable) && !errors.Is(err, sdk.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "cannot reach the hub at 127.0.0.1:1: dial tcp") {
		t.Errorf("no hub: %v", err)
	}
}

func TestSignalPublish(t *testing.T) {
	run := unique()
	good1, good2, bad := cell("cli-"+run+"-1"), cell("cli-"+run+"-2"), cell("cli-"+run+"-3")
	bad.DevicesExposed = 2000
	file := writeFile(t, "cells.ndjson", ndjson(t, good1, bad, good2))

	out, _, err := phx(t, args(as(hub, "contoso"), "signal", "publish", "--file", file)...)
	if err == nil || err.Error() != "1 of 3 signals rejected" || ExitCode(err) != 1 {
		t.Errorf("err = %v, want 1 of 3 signals rejected", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("want header, 3 rows and a summary:\n%s", out)
	}
	for i, want := range []string{
		`^INDEX\s+SIGNAL_ID\s+OUTCOME\s+CURSOR/ERROR$`,
		`^0\s+cli-` + run + `-1\s+accepted\s+\S+$`,
		`^1\s+cli-` + run + `-3\s+rejected\s+invalid argument: devices_exposed: 2000 must be ≤ devices_active \(1200\)$`,
		`^2\s+cli-` + run + `-2\s+accepted\s+\S+$`,
		`^2 accepted, 0 duplicate, 1 rejected of 3 signals$`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("line %d = %q, want %s", i, lines[i], want)
		}
	}

	// The good ones again, as a JSON array on standard input, with --json.
	arr, _ := json.Marshal([]json.RawMessage{mustJSON(t, good1), mustJSON(t, good2)})
	stdin = strings.NewReader(string(arr))
	defer func() { stdin = os.Stdin }()
	out, _, err = phx(t, args(as(hub, "contoso"), "signal", "publish", "--file", "-", "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var resp phxv1.PublishSignalsResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if resp.GetDuplicates() != 2 || len(resp.GetResults()) != 2 {
		t.Errorf("second publish: %v", &resp)
	}

	// Another vendor's product: every item rejected, with the reason.
	other := cell("cli-" + run + "-4")
	other.Product = "fabrikam-edr"
	out, _, err = phx(t, args(as(hub, "contoso"), "signal", "publish", "--file", writeFile(t, "o.json", ndjson(t, other)))...)
	if err == nil || !strings.Contains(out, `permission denied: product: contoso does not own product "fabrikam-edr"`) {
		t.Errorf("err %v, output:\n%s", err, out)
	}
}

func mustJSON(t *testing.T, s *phxv1.HealthSignal) json.RawMessage {
	t.Helper()
	b, err := protojson.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRolloutCommands(t *testing.T) {
	id := "cli-" + unique()
	contoso := as(hub, "contoso")
	out, _, err := phx(t, args(contoso, "rollout", "announce", "--id", id, "--product", "contoso-av",
		"--channel", "channel-291", "--version", "291.1", "--previous", "291.0", "--ring", "canary", "--percent", "1", "--tlp", "amber+strict")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"⚠ AMBER+STRICT — do not share outside your org", "rollout:    " + id, "291.0 → 291.1", "state:      active", "revision:   1", "publisher:  contoso"} {
		if !strings.Contains(out, w) {
			t.Errorf("announce output lacks %q:\n%s", w, out)
		}
	}

	tests := []struct {
		name    string
		args    []string
		want    []string
		errText string
	}{
		{"show", []string{"rollout", "show", id}, []string{"ring:       canary", "deployed:   1%"}, ""},
		{"pause", []string{"rollout", "update", id, "--revision", "1", "--state", "paused", "--reason", "boot loops in canary"}, []string{"state:      paused", "reason:     boot loops in canary", "revision:   2"}, ""},
		{"stale revision", []string{"rollout", "update", id, "--revision", "1", "--percent", "50"}, nil, "failed precondition: expected_revision: stale revision 1"},
		{"positional after flags", []string{"rollout", "update", "--revision", "2", "--state", "rolled-back", id}, []string{"state:      rolled-back", "revision:   3"}, ""},
		{"list by state", []string{"rollout", "list", "--state", "rolled-back", "--product", "contoso-av"}, []string{id, "TLP:AMBER+STRICT ⚠", "⚠ TLP:AMBER+STRICT — do not share outside your org"}, ""},
		{"list other product", []string{"rollout", "list", "--product", "northwind-sensor"}, []string{"no rollouts"}, ""},
		{"not found", []string{"rollout", "show", "nope-" + unique()}, nil, "not found"},
		{"not the owner", []string{"rollout", "announce", "--id", "x" + unique(), "--product", "fabrikam-edr", "--version", "1", "--ring", "canary", "--tlp", "green"}, nil,
			`permission denied: rollout.product: contoso does not own product "fabrikam-edr"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := phx(t, args(contoso, tt.args...)...)
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) || ExitCode(err) != 1 {
					t.Fatalf("err = %v, want %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}

	// From a file, with a flag overriding it, and --json.
	file := writeFile(t, "r.json", fmt.Sprintf(`{"rollout_id":"%s-f","product":"contoso-av","content_version":"292.0","current_ring":"RING_INTERNAL","audience":{"tlp":"TLP_GREEN"}}`, id))
	out, _, err = phx(t, args(contoso, "--json", "rollout", "announce", "--file", file, "--percent", "3")...)
	if err != nil {
		t.Fatal(err)
	}
	var r phxv1.Rollout
	if err := protojson.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.GetRolloutId() != id+"-f" || r.GetPercentDeployed() != 3 || r.GetRevision() != 1 {
		t.Errorf("announce from file: %v", &r)
	}
	out, _, err = phx(t, args(contoso, "rollout", "list", "--json")...)
	var list phxv1.ListRolloutsResponse
	if err != nil || protojson.Unmarshal([]byte(out), &list) != nil || len(list.GetRollouts()) < 2 {
		t.Errorf("list --json: %v\n%s", err, out)
	}
}

func TestIncidentCommands(t *testing.T) {
	contoso := as(hub, "contoso")
	out, _, err := phx(t, args(contoso, "--json", "incident", "report", "--title", "Boot loops after channel 291",
		"--product", "contoso-av", "--content-version", "291.1", "--severity", "critical", "--impact", "machines boot-loop",
		"--tlp", "amber", "--orgs", "contoso,microsoft")...)
	if err != nil {
		t.Fatal(err)
	}
	var inc phxv1.Incident
	if err := protojson.Unmarshal([]byte(out), &inc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	id := inc.GetId()
	if !strings.HasPrefix(id, "INC-") || inc.GetStatus() != phxv1.Status_STATUS_INVESTIGATING || inc.GetClassification() != phxv1.Classification_CLASSIFICATION_INCIDENT {
		t.Fatalf("reported: %v", &inc)
	}
	tests := []struct {
		name    string
		args    []string
		want    []string
		errText string
	}{
		{"show", []string{"incident", "show", id}, []string{"incident:        " + id, "severity:        critical", "status:          investigating", "affected:        contoso-av content 291.1", "audience:        TLP:AMBER (contoso, microsoft)"}, ""},
		{"update", []string{"incident", "update", id, "--revision", "1", "--status", "mitigating", "--severity", "high"}, []string{"status:          mitigating", "severity:        high", "revision:        2"}, ""},
		{"list", []string{"incident", "list", "--product", "contoso-av", "--min-severity", "high"}, []string{id, "mitigating", "Boot loops after channel 291"}, ""},
		{"list filtered out", []string{"incident", "list", "--status", "resolved", "--product", "contoso-av"}, []string{"no incidents"}, ""},
		{"stale", []string{"incident", "update", id, "--revision", "1", "--title", "x"}, nil, "failed precondition"},
		{"not found", []string{"incident", "show", "INC-0000000000"}, nil, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := phx(t, args(contoso, tt.args...)...)
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	// Only the named orgs see it.
	out, _, err = phx(t, args(as(hub, "fabrikam"), "incident", "show", id)...)
	if !errors.Is(err, sdk.ErrNotFound) && !errors.Is(err, sdk.ErrPermissionDenied) {
		t.Errorf("fabrikam sees an incident for contoso and microsoft: %v\n%s", err, out)
	}
}

// watcher runs "phx watch" in the background.
type watcher struct {
	out, errb *syncBuffer
	cancel    context.CancelFunc
	done      chan error
}

func startWatch(t *testing.T, a ...string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{out: &syncBuffer{}, errb: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- Run(ctx, a, w.out, w.errb) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// waitFor waits until stdout has a line containing s.
func (w *watcher) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(w.out.String(), s) {
			return
		}
		select {
		case err := <-w.done:
			w.done <- err
			t.Fatalf("watch ended: %v\nstdout:\n%s\nstderr:\n%s", err, w.out.String(), w.errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q in watch output:\n%s\nstderr:\n%s", s, w.out.String(), w.errb.String())
}

// stop interrupts the watch and returns its error.
func (w *watcher) stop(t *testing.T) error {
	w.cancel()
	select {
	case err := <-w.done:
		w.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop")
		return nil
	}
}

func publishCells(t *testing.T, h *servertest.Hub, ids ...string) {
	t.Helper()
	var cells []*phxv1.HealthSignal
	for _, id := range ids {
		cells = append(cells, cell(id))
	}
	_, _, err := phx(t, args(as(h, "contoso"), "signal", "publish", "--file", writeFile(t, "c.ndjson", ndjson(t, cells...)))...)
	if err != nil {
		t.Fatal(err)
	}
}

func TestWatch(t *testing.T) {
	run := unique()
	w := startWatch(t, args(as(hub, "microsoft"), "watch", "--kinds", "health,rollout", "--product", "contoso-av")...)
	// The watch subscribes before it prints anything; give it a moment.
	time.Sleep(300 * time.Millisecond)
	publishCells(t, hub, "w-"+run+"-1")
	w.waitFor(t, "w-"+run+"-1")
	line := ""
	for _, l := range strings.Split(w.out.String(), "\n") {
		if strings.Contains(l, "w-"+run+"-1") {
			line = l
		}
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+health\s+contoso\s+contoso-av\s+TLP:GREEN\s+w-\S+ 291.1 canary 10.0.22631.3880/DE 60s exposed=1000 boot=3\(0.30%\)`).MatchString(line) {
		t.Errorf("watch line = %q", line)
	}
	if err := w.stop(t); err != nil {
		t.Errorf("interrupted watch: %v", err)
	}
	m := regexp.MustCompile(`last cursor: (\S+) \(resume with: phx watch --from-cursor (\S+)\)`).FindStringSubmatch(w.errb.String())
	if m == nil || m[1] != m[2] {
		t.Fatalf("no last cursor on stderr: %q", w.errb.String())
	}
	cursor := m[1]

	// Published while nobody watches; resuming from the cursor delivers
	// exactly those, as NDJSON envelopes.
	publishCells(t, hub, "w-"+run+"-2", "w-"+run+"-3")
	w = startWatch(t, args(as(hub, "microsoft"), "watch", "--json", "--kinds", "health", "--product", "contoso-av", "--from-cursor", cursor)...)
	w.waitFor(t, "w-"+run+"-3")
	w.stop(t)
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(w.out.String()), "\n") {
		var env phxv1.Envelope
		if err := protojson.Unmarshal([]byte(l), &env); err != nil {
			t.Fatalf("not one envelope per line: %v\n%q", err, l)
		}
		if env.GetCursor() == "" {
			t.Errorf("envelope without cursor: %s", l)
		}
		got = append(got, env.GetHealthSignal().GetSignalId())
	}
	if strings.Join(got, " ") != "w-"+run+"-2 w-"+run+"-3" {
		t.Errorf("resumed watch got %v", got)
	}
}

func TestWatchAcrossHubRestart(t *testing.T) {
	h := servertest.Start(t)
	w := startWatch(t, "--hub", h.Addr, "--data-dir", h.DataDir, "--as", "contoso", "watch", "--kinds", "health", "--heartbeat", "1")
	time.Sleep(300 * time.Millisecond)
	publishCells(t, h, "before-restart")
	w.waitFor(t, "before-restart")
	h.Restart(t)
	publishCells(t, h, "after-restart")
	w.waitFor(t, "after-restart")
	if n := strings.Count(w.out.String(), "before-restart"); n != 1 {
		t.Errorf("before-restart printed %d times", n)
	}
	if !strings.Contains(w.errb.String(), "feed interrupted; resuming") {
		t.Errorf("no resume notice on stderr: %q", w.errb.String())
	}
	if err := w.stop(t); err != nil {
		t.Error(err)
	}
}

func TestWatchOutOfRangeAndBadCursor(t *testing.T) {
	_, _, err := phx(t, args(as(hub, "contoso"), "watch", "--from-cursor", "garbage")...)
	if !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "cursor") {
		t.Errorf("bad cursor: %v", err)
	}
}

func TestPKI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, _, err := phx(t, "--data-dir", dir, "pki", "init")
	if err != nil {
		t.Fatal(err)
	}
	l := pki.Layout{DataDir: dir}
	for _, f := range []string{l.CACert(), l.HubCert(), l.OrgCert("contoso"), l.OrgCert("national-cert"), l.Members()} {
		if !strings.Contains(out, f) {
			t.Errorf("init output lacks %s:\n%s", f, out)
		}
	}
	out, _, err = phx(t, "pki", "init", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "nothing to do") {
		t.Errorf("second init: %v\n%s", err, out)
	}
	out, _, err = phx(t, "--data-dir", dir, "--json", "pki", "init")
	if err != nil || !strings.Contains(out, `"created": []`) {
		t.Errorf("init --json: %v\n%s", err, out)
	}

	out, stderr, err := phx(t, "--data-dir", dir, "pki", "issue", "--org", "acme", "--workload", "backend")
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(l.Dir(), "acme-backend.crt")
	if !strings.Contains(out, cert) || !strings.Contains(out, "spiffe://phx.dev/org/acme/backend") {
		t.Errorf("issue output:\n%s", out)
	}
	if !strings.Contains(stderr, "acme is not in") {
		t.Errorf("no note about the registry: %q", stderr)
	}
	if _, _, err := phx(t, "--data-dir", dir, "pki", "issue", "--org", "acme", "--workload", "backend"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwrite without --force: %v", err)
	}
	outDir := t.TempDir()
	out, _, err = phx(t, "--data-dir", dir, "pki", "issue", "--org", "contoso", "--out-dir", outDir, "--trust-domain", "example.org", "--force")
	if err != nil || !strings.Contains(out, "spiffe://example.org/org/contoso/dev") {
		t.Errorf("issue to out-dir: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(outDir, "contoso.key")); err != nil {
		t.Error(err)
	}

	// A certificate issued by the hub's CA for a member works at once.
	out, _, err = phx(t, "--data-dir", hub.DataDir, "pki", "issue", "--org", "northwind", "--workload", "ci", "--out-dir", t.TempDir()+"/x")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`wrote (\S+) and (\S+) for`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("issue output: %s", out)
	}
	out, _, err = phx(t, "--hub", hub.Addr, "--ca", hub.PKI.CACert(), "--cert", m[1], "--key", m[2], "whoami")
	if err != nil || !regexp.MustCompile(`workload:\s+ci\n`).MatchString(out) {
		t.Errorf("whoami with the issued certificate: %v\n%s", err, out)
	}
}
