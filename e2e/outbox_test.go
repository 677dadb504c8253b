package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// The publisher child: the e2e test binary started again with
// envPublisher set runs publisherMain instead of the tests.
const (
	envPublisher = "PHX_E2E_PUBLISHER" // the signal id prefix
	envOutbox    = "PHX_E2E_OUTBOX"    // the outbox directory
	envFrom      = "PHX_E2E_FROM"      // the first signal number to publish
)

const (
	pubBatch = 10     // signals per PublishSignals call
	pubMax   = 20_000 // the child never numbers a signal at or past this
)

func signalID(prefix string, n int) string { return fmt.Sprintf("%s-%06d", prefix, n) }

// healthCell is a valid cell of contoso-av that fabrikam may see.
func healthCell(id string) *phxv1.HealthSignal {
	return &phxv1.HealthSignal{
		SignalId: id, Product: "contoso-av", ProductVersion: "7.16.18",
		ContentChannel: "channel-291", ContentVersion: "291.1", Ring: phxv1.Ring_RING_BROAD,
		OsFamily: "windows", OsBuild: "10.0.22631.3880", Arch: "x64", Region: "global",
		WindowStart:   timestamppb.New(time.Now().Add(-2 * time.Minute).Truncate(time.Minute)),
		WindowSeconds: 60, DevicesActive: 1000, DevicesExposed: 900, DistinctTenants: 40,
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	}
}

// publisherMain publishes numbered cells through an outbox, batch after
// batch, and prints one line per call once it has returned:
//
//	start recovered=N quarantined=N   the outbox as found
//	ok FIRST LAST                     acknowledged by the hub
//	queued FIRST LAST                 spooled, not yet acknowledged
//	err FIRST LAST MESSAGE            anything else
//	flushed pending=N                 after stdin closed: the outbox is empty
//
// It stops publishing when stdin closes, waits for its outbox to drain and
// exits; or it is killed.
func publisherMain() int {
	prefix := os.Getenv(envPublisher)
	from, err := strconv.Atoi(os.Getenv(envFrom))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad", envFrom, err)
		return 2
	}
	c, err := sdk.New("", sdk.FromEnv(), sdk.WithOutbox(os.Getenv(envOutbox)),
		sdk.WithRetry(4, 50*time.Millisecond, time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer c.Close()
	st := c.OutboxStats()
	fmt.Printf("start recovered=%d quarantined=%d\n", st.Recovered, len(st.Quarantined))
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	for n := from; n+pubBatch <= pubMax; {
		select {
		case <-stop:
			n = pubMax
			continue
		default:
		}
		batch := make([]*phxv1.HealthSignal, pubBatch)
		for i := range batch {
			batch[i] = healthCell(signalID(prefix, n+i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.PublishSignals(ctx, batch)
		cancel()
		switch {
		case err == nil:
			fmt.Printf("ok %d %d\n", n, n+pubBatch-1)
		case errors.Is(err, sdk.ErrQueued):
			fmt.Printf("queued %d %d\n", n, n+pubBatch-1)
		case errors.Is(err, sdk.ErrOutboxFull):
			time.Sleep(50 * time.Millisecond) // the same batch again
			continue
		default:
			fmt.Printf("err %d %d %v\n", n, n+pubBatch-1, err)
		}
		n += pubBatch
		time.Sleep(2 * time.Millisecond) // a steady load, not a flood
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.FlushOutbox(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "flush:", err)
		return 1
	}
	fmt.Printf("flushed pending=%d\n", c.OutboxPending())
	return 0
}

// publisher is a running publisher child.
type publisher struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *lines
}

func startPublisher(t *testing.T, dataDir, addr, prefix, outbox string, from int) *publisher {
	t.Helper()
	pki := filepath.Join(dataDir, "pki")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envPublisher+"="+prefix, envOutbox+"="+outbox, envFrom+"="+strconv.Itoa(from),
		"PHX_HUB="+addr, "PHX_CA="+filepath.Join(pki, "ca.crt"),
		"PHX_CERT="+filepath.Join(pki, "contoso.crt"), "PHX_KEY="+filepath.Join(pki, "contoso.key"), "PHX_TOKEN=")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return &publisher{cmd: cmd, stdin: stdin, out: newLines(pr)}
}

// waitCount waits until n lines of l from index from on satisfy ok.
func waitCount(t *testing.T, l *lines, from, n int, what string, ok func(string) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		got := 0
		for i, s := range l.snapshot() {
			if i >= from && ok(s) {
				got++
			}
		}
		if got >= n {
			return
		}
		select {
		case <-l.cond:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %d lines %s, have %d:\n%s", n, what, got, strings.Join(l.snapshot(), "\n"))
		}
	}
}

func prefixed(p string) func(string) bool {
	return func(s string) bool { return strings.HasPrefix(s, p) }
}

// reported adds the signal numbers of the calls the child reported as
// acknowledged or queued to set, and returns the next number after them.
func (p *publisher) reported(t *testing.T, set map[int]string) (next int) {
	for _, s := range p.out.snapshot() {
		f := strings.Fields(s)
		if len(f) < 3 {
			continue
		}
		first, _ := strconv.Atoi(f[1])
		last, _ := strconv.Atoi(f[2])
		switch f[0] {
		case "ok", "queued":
			for n := first; n <= last; n++ {
				set[n] = f[0]
			}
			next = max(next, last+1)
		case "err":
			t.Errorf("publisher: %s", s)
		}
	}
	return next
}

// kill sends SIGKILL and reaps the process.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// received is what a subscriber got, in order, across resumes, and when.
type received struct {
	mu   sync.Mutex
	ids  []string
	seqs []uint64 // the health sequence of each item's cursor
	at   []time.Time
}

func (r *received) follow(sub *sdk.Subscription) chan error {
	done := make(chan error, 1)
	go func() {
		for {
			env, err := sub.Recv()
			if err != nil {
				done <- err
				return
			}
			hs, _, _ := strings.Cut(strings.TrimPrefix(env.GetCursor(), "h"), ".")
			seq, _ := strconv.ParseUint(hs, 10, 64)
			r.mu.Lock()
			r.ids = append(r.ids, env.GetHealthSignal().GetSignalId())
			r.seqs = append(r.seqs, seq)
			r.at = append(r.at, time.Now())
			r.mu.Unlock()
		}
	}()
	return done
}

func (r *received) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.ids, id)
}

// TestOutboxSurvivesKills publishes under steady load through the SDK's
// outbox from a child process while phxd is killed with SIGKILL and
// restarted on its data dir, and the publisher is killed too and started
// again on its outbox. A subscriber follows the feed throughout, and is
// restarted from its cursor once. Every signal the publisher was told was
// acknowledged or queued must be stored exactly once, and the subscriber
// must receive each once, in order.
func TestOutboxSurvivesKills(t *testing.T) {
	dataDir, addr := t.TempDir(), freePort(t)
	outbox := t.TempDir()
	var rb [4]byte
	rand.Read(rb[:])
	prefix := "kill-" + hex.EncodeToString(rb[:])
	start := time.Now()
	h := startHub(t, dataDir, addr)
	pki := filepath.Join(dataDir, "pki")
	connect := func(org string) *sdk.Client {
		c, err := sdk.New(addr, sdk.WithCertFiles(filepath.Join(pki, "ca.crt"), filepath.Join(pki, org+".crt"), filepath.Join(pki, org+".key")),
			sdk.WithRetry(20, 50*time.Millisecond, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// fabrikam follows contoso's cells from the beginning.
	fab := connect("fabrikam")
	req := &phxv1.SubscribeRequest{
		Kinds:            []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL},
		Publishers:       []string{"contoso"},
		Start:            &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true},
		HeartbeatSeconds: 1,
	}
	sub1, err := fab.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var got received
	done1 := got.follow(sub1)

	// The first publisher runs until it is killed while the hub is down.
	p1 := startPublisher(t, dataDir, addr, prefix, outbox, 0)
	waitCount(t, p1.out, 0, 50, "acknowledged by the first publisher", prefixed("ok "))
	kill(t, h.cmd)
	killedAt := len(p1.out.snapshot())
	waitCount(t, p1.out, killedAt, 10, "queued while the hub is down", prefixed("queued "))
	kill(t, p1.cmd)
	set := map[int]string{}
	next := p1.reported(t, set)
	p1Lines := p1.out.snapshot()
	p1Queued := 0
	for _, s := range p1Lines[killedAt:] {
		if strings.HasPrefix(s, "queued ") {
			p1Queued++
		}
	}

	// The hub comes back on its data dir; a new publisher on the same
	// outbox continues after the last call the first one reported.
	h = startHub(t, dataDir, addr)
	p2 := startPublisher(t, dataDir, addr, prefix, outbox, next)
	waitCount(t, p2.out, 0, 1, "the second publisher's start", prefixed("start "))
	startLine := p2.out.snapshot()[0]
	var recovered, quarantined int
	fmt.Sscanf(startLine, "start recovered=%d quarantined=%d", &recovered, &quarantined)
	if recovered == 0 || quarantined != 0 {
		t.Errorf("second publisher: %s; want entries recovered from the first one and none quarantined", startLine)
	}
	waitCount(t, p2.out, 0, 50, "acknowledged by the second publisher", prefixed("ok "))

	// The subscriber stops and resumes from its cursor.
	sub1.Close()
	<-done1
	cursor := sub1.Cursor()
	req.Start = &phxv1.SubscribeRequest_Cursor{Cursor: cursor}
	sub2, err := fab.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	done2 := got.follow(sub2)

	// The hub is killed once more under load, and comes back.
	kill(t, h.cmd)
	waitCount(t, p2.out, len(p2.out.snapshot()), 5, "queued while the hub is down again", prefixed("queued "))
	h = startHub(t, dataDir, addr)
	waitCount(t, p2.out, len(p2.out.snapshot()), 50, "acknowledged after the second restart", prefixed("ok "))

	// The second publisher stops and drains its outbox.
	p2.stdin.Close()
	waitCount(t, p2.out, 0, 1, "the second publisher's outbox drained", prefixed("flushed pending=0"))
	if err := p2.cmd.Wait(); err != nil {
		t.Fatalf("second publisher: %v", err)
	}
	p2.reported(t, set)

	// A marker published last tells the readers they have seen everything.
	con := connect("contoso")
	marker := prefix + "-marker"
	if _, err := con.PublishSignals(ctx, []*phxv1.HealthSignal{healthCell(marker)}); err != nil {
		t.Fatal(err)
	}
	for !got.has(marker) {
		select {
		case err := <-done2:
			t.Fatalf("subscriber ended: %v", err)
		case <-ctx.Done():
			t.Fatal("the subscriber did not receive the marker")
		case <-time.After(50 * time.Millisecond):
		}
	}

	// Replay everything the hub stored.
	replay, err := con.Subscribe(ctx, &phxv1.SubscribeRequest{
		Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL},
		Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	storedN := map[string]int{}
	for {
		env, err := replay.Recv()
		if err != nil {
			t.Fatal(err)
		}
		id := env.GetHealthSignal().GetSignalId()
		if id == marker {
			break
		}
		storedN[id]++
	}
	elapsed := time.Since(start)

	// Every signal reported acknowledged or queued is stored exactly once,
	// and nothing else is.
	ok, queued := 0, 0
	for num, how := range set {
		id := signalID(prefix, num)
		if storedN[id] != 1 {
			t.Errorf("%s (%s) stored %d times", id, how, storedN[id])
		}
		if how == "ok" {
			ok++
		} else {
			queued++
		}
	}
	for id, c := range storedN {
		num, err := strconv.Atoi(strings.TrimPrefix(id, prefix+"-"))
		if _, rep := set[num]; err != nil || !rep {
			t.Errorf("%s stored %d times but never reported", id, c)
		}
	}
	// The subscriber got each stored item once, in the hub's order.
	got.mu.Lock()
	defer got.mu.Unlock()
	seen := map[string]int{}
	for i, id := range got.ids {
		seen[id]++
		if i > 0 && got.seqs[i] <= got.seqs[i-1] {
			t.Errorf("subscriber: item %d (%s) at h%d after h%d", i, id, got.seqs[i], got.seqs[i-1])
		}
	}
	for id := range storedN {
		if seen[id] != 1 {
			t.Errorf("subscriber received %s %d times", id, seen[id])
		}
	}
	if len(seen) != len(storedN)+1 { // and the marker
		t.Errorf("subscriber received %d distinct items, the hub stored %d and the marker", len(seen), len(storedN))
	}
	t.Logf("%d signals reported (%d acknowledged, %d queued; the first publisher queued %d calls while the hub was down and left %d entries, resent by the second); %d stored, each once; subscriber received %d items, resumed once from %s; %v in all",
		len(set), ok, queued, p1Queued, recovered, len(storedN), len(got.ids), cursor, elapsed.Round(time.Millisecond))
}
