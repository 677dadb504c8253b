package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// hub is the hub the tests that need one share.
var hub *servertest.Hub

func TestMain(m *testing.M) {
	for _, k := range []string{"PHX_HUB", "PHX_CA", "PHX_CERT", "PHX_KEY", "PHX_TOKEN", "PHX_DATA_DIR", "NO_COLOR"} {
		os.Unsetenv(k)
	}
	h, stop, err := servertest.StartMain()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start hub:", err)
		os.Exit(1)
	}
	hub = h
	code := m.Run()
	stop()
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// phx runs the CLI in-process and returns its output and error.
func phx(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err = Run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

// as returns the global flags that connect to h as a dev org.
func as(h *servertest.Hub, org string) []string {
	return []string{"--hub", h.Addr, "--data-dir", h.DataDir, "--as", org}
}

func args(pre []string, rest ...string) []string {
	return append(append([]string{}, pre...), rest...)
}

// cell returns a valid health cell of contoso-av for the last whole minute.
func cell(id string) *phxv1.HealthSignal {
	start := time.Now().Add(-time.Minute).Truncate(time.Minute)
	return &phxv1.HealthSignal{
		SignalId: id, Product: "contoso-av", ProductVersion: "7.16.18",
		ContentChannel: "channel-291", ContentVersion: "291.1", Ring: phxv1.Ring_RING_CANARY,
		OsFamily: "windows", OsBuild: "10.0.22631.3880", Arch: "x64", Region: "DE",
		WindowStart: timestamppb.New(start), WindowSeconds: 60,
		DevicesActive: 1200, DevicesExposed: 1000, DevicesSilent: 12, DistinctTenants: 40,
		KernelCrashDevices: 2, BootFailureDevices: 3, AgentCrashDevices: 1,
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	}
}

func ndjson(t *testing.T, cells ...*phxv1.HealthSignal) string {
	t.Helper()
	var b strings.Builder
	for _, c := range cells {
		j, err := protojson.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
