// Package e2e runs phxd and phx as real processes: the hub in dev mode with
// its embedded JetStream, a watcher that follows the live feed across a hub
// restart, and publishers using the CLI, exactly as the README tour does.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var bin string // directory holding the built phxd and phx

func TestMain(m *testing.M) {
	if os.Getenv(envPublisher) != "" {
		os.Exit(publisherMain())
	}
	dir, err := os.MkdirTemp("", "phx-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	for _, pkg := range []string{"phxd=../server/cmd/phxd", "phx=../client/cmd/phx"} {
		name, path, _ := strings.Cut(pkg, "=")
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), path)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", name, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// lines collects a process's output lines and lets a test wait for one.
type lines struct {
	mu   sync.Mutex
	all  []string
	cond chan struct{}
}

func newLines(r io.Reader) *lines {
	l := &lines{cond: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.all = append(l.all, sc.Text())
			l.mu.Unlock()
			select {
			case l.cond <- struct{}{}:
			default:
			}
		}
	}()
	return l
}

func (l *lines) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...)
}

// waitFor waits until some line after index from satisfies ok, and returns its index.
func (l *lines) waitFor(t *testing.T, from int, what string, ok func(string) bool) int {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		for i, s := range l.snapshot() {
			if i >= from && ok(s) {
				return i
			}
		}
		select {
		case <-l.cond:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; output:\n%s", what, strings.Join(l.snapshot(), "\n"))
		}
	}
}

type hub struct {
	cmd    *exec.Cmd
	stderr *lines
}

func startHub(t *testing.T, dataDir, addr string) *hub {
	t.Helper()
	return startPhxd(t, "--dev", "--data-dir", dataDir, "--listen", addr, "--metrics-listen", "127.0.0.1:0")
}

// startPhxd starts phxd with args and waits until it says it is ready.
func startPhxd(t *testing.T, args ...string) *hub {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "phxd"), args...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &hub{cmd: cmd, stderr: newLines(pr)}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	h.stderr.waitFor(t, 0, "phxd ready", func(s string) bool { return strings.Contains(s, "phxd ready") })
	return h
}

// stop sends SIGTERM and expects a clean exit.
func (h *hub) stop(t *testing.T) {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("phxd exited with %v after SIGTERM; log:\n%s", err, strings.Join(h.stderr.snapshot(), "\n"))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("phxd did not stop within 20s of SIGTERM")
	}
}

// phx runs the CLI to completion.
func phx(t *testing.T, dataDir, addr, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"--hub", addr, "--data-dir", dataDir}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "phx"), full...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.Stdin = strings.NewReader(stdin)
	err = cmd.Run()
	return o.String(), e.String(), err
}

func mustPhx(t *testing.T, dataDir, addr, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := phx(t, dataDir, addr, stdin, args...)
	if err != nil {
		t.Fatalf("phx %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out, errOut)
	}
	return out
}

func cell(id string, w time.Time) string {
	return fmt.Sprintf(`{"signalId":%q,"product":"contoso-av","productVersion":"7.16.18","contentChannel":"channel-291","contentVersion":"291.1","ring":"RING_CANARY","osFamily":"windows","osBuild":"10.0.22631.3880","arch":"x64","region":"global","windowStart":%q,"windowSeconds":60,"devicesActive":1000,"devicesExposed":900,"devicesSilent":312,"distinctTenants":40,"bootFailureDevices":87,"audience":{"tlp":"TLP_GREEN"}}`,
		id, w.UTC().Format(time.RFC3339))
}

type envelope struct {
	Cursor       string          `json:"cursor"`
	Kind         string          `json:"kind"`
	Publisher    string          `json:"publisher"`
	HealthSignal json.RawMessage `json:"healthSignal"`
	Incident     *struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	} `json:"incident"`
	Rollout *struct {
		RolloutID string `json:"rolloutId"`
		State     string `json:"state"`
	} `json:"rollout"`
}

func parse(s string) (envelope, bool) {
	var e envelope
	if err := json.Unmarshal([]byte(s), &e); err != nil || e.Kind == "" {
		return e, false
	}
	return e, true
}

func TestTourAcrossRestarts(t *testing.T) {
	dataDir := t.TempDir()
	addr := freePort(t)
	h := startHub(t, dataDir, addr)
	w := time.Now().Add(-2 * time.Minute).Truncate(time.Minute)

	out := mustPhx(t, dataDir, addr, "", "--as", "contoso", "--json", "whoami")
	if !strings.Contains(out, `"contoso"`) || !strings.Contains(out, "ROLE_VENDOR") {
		t.Fatalf("whoami: %s", out)
	}

	// fabrikam watches, as a process, with JSON lines. It starts from the
	// beginning so that nothing published while it connects can slip past it.
	watch := exec.Command(filepath.Join(bin, "phx"), "--hub", addr, "--data-dir", dataDir, "--as", "fabrikam", "watch", "--json", "--from-beginning")
	wout, wpw := io.Pipe()
	var werr bytes.Buffer
	watch.Stdout, watch.Stderr = wpw, &werr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	seen := newLines(wout)

	// contoso publishes a cell and reports an incident.
	mustPhx(t, dataDir, addr, cell("e2e-1", w), "--as", "contoso", "signal", "publish", "--file", "-")
	out = mustPhx(t, dataDir, addr, "", "--as", "contoso", "--json", "incident", "report",
		"--title", "Boot loop after channel 291 update", "--product", "contoso-av", "--content-version", "291.1",
		"--severity", "critical", "--tlp", "green")
	var rep struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !strings.HasPrefix(rep.ID, "INC-") {
		t.Fatalf("incident report output: %v\n%s", err, out)
	}
	i1 := seen.waitFor(t, 0, "the cell in fabrikam's watch", func(s string) bool {
		e, ok := parse(s)
		return ok && e.Kind == "KIND_HEALTH_SIGNAL" && strings.Contains(string(e.HealthSignal), "e2e-1")
	})
	i2 := seen.waitFor(t, i1, "the incident in fabrikam's watch", func(s string) bool {
		e, ok := parse(s)
		return ok && e.Incident != nil && e.Incident.ID == rep.ID
	})

	// The hub restarts; the watcher keeps going and misses nothing.
	h.stop(t)
	h = startHub(t, dataDir, addr)
	mustPhx(t, dataDir, addr, cell("e2e-2", w), "--as", "contoso", "signal", "publish", "--file", "-")
	i3 := seen.waitFor(t, i2, "a cell published after the hub restarted", func(s string) bool {
		e, ok := parse(s)
		return ok && strings.Contains(string(e.HealthSignal), "e2e-2")
	})
	last, _ := parse(seen.snapshot()[i3])

	// The watcher stops; items published meanwhile arrive once on resume.
	watch.Process.Signal(syscall.SIGINT)
	watch.Wait()
	mustPhx(t, dataDir, addr, cell("e2e-3", w), "--as", "contoso", "signal", "publish", "--file", "-")
	mustPhx(t, dataDir, addr, cell("e2e-3", w), "--as", "contoso", "signal", "publish", "--file", "-") // duplicate: stored once
	mustPhx(t, dataDir, addr, cell("e2e-4", w), "--as", "contoso", "signal", "publish", "--file", "-")
	h.stop(t)
	h = startHub(t, dataDir, addr) // and the hub restarts once more while nobody watches

	resume := exec.Command(filepath.Join(bin, "phx"), "--hub", addr, "--data-dir", dataDir, "--as", "fabrikam", "watch", "--json", "--from-cursor", last.Cursor)
	rout, rpw := io.Pipe()
	resume.Stdout = rpw
	if err := resume.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resume.Process.Kill(); resume.Wait() })
	rs := newLines(rout)
	rs.waitFor(t, 0, "e2e-4 after resume", func(s string) bool {
		e, ok := parse(s)
		return ok && strings.Contains(string(e.HealthSignal), "e2e-4")
	})
	var ids []string
	for _, s := range rs.snapshot() {
		if e, ok := parse(s); ok && e.HealthSignal != nil {
			var hs struct {
				SignalID string `json:"signalId"`
			}
			json.Unmarshal(e.HealthSignal, &hs)
			ids = append(ids, hs.SignalID)
		}
	}
	if strings.Join(ids, ",") != "e2e-3,e2e-4" {
		t.Fatalf("resumed watch got signals %v, want exactly [e2e-3 e2e-4]", ids)
	}
	// The incident survived both restarts.
	out = mustPhx(t, dataDir, addr, "", "--as", "fabrikam", "--json", "incident", "show", rep.ID)
	if !strings.Contains(out, "Boot loop after channel 291 update") {
		t.Fatalf("incident show after restarts: %s", out)
	}
	h.stop(t)
}

func TestCLIErrors(t *testing.T) {
	dataDir := t.TempDir()
	addr := freePort(t)
	startHub(t, dataDir, addr)
	w := time.Now().Add(-2 * time.Minute).Truncate(time.Minute)
	foreign := strings.Replace(cell("e2e-x", w), `"contoso-av"`, `"fabrikam-edr"`, 1)
	cases := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"another vendor's product", foreign, []string{"--as", "contoso", "signal", "publish", "--file", "-"}, "product"},
		{"cert cannot publish", cell("e2e-y", w), []string{"--as", "national-cert", "signal", "publish", "--file", "-"}, "permission denied"},
		{"unknown incident", "", []string{"--as", "contoso", "incident", "show", "INC-0000000000"}, "not found"},
		{"unknown command", "", []string{"--as", "contoso", "frobnicate"}, "frobnicate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := phx(t, dataDir, addr, tc.stdin, tc.args...)
			if err == nil {
				t.Fatalf("want a non-zero exit; stdout:\n%s", out)
			}
			if !strings.Contains(strings.ToLower(errOut+out), tc.want) {
				t.Fatalf("output does not mention %q:\nstdout:\n%s\nstderr:\n%s", tc.want, out, errOut)
			}
		})
	}
}
