package sdk_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	"github.com/phx-exchange/phx/server/servertest"
)

// hub is the hub the Examples and most tests share. Its address and the
// dev certificates of contoso are in PHX_HUB, PHX_CA, PHX_CERT and PHX_KEY.
var hub *servertest.Hub

func TestMain(m *testing.M) {
	h, stop, err := servertest.StartMain()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start hub:", err)
		os.Exit(1)
	}
	hub = h
	os.Setenv("PHX_HUB", h.Addr)
	os.Setenv("PHX_CA", h.PKI.CACert())
	os.Setenv("PHX_CERT", h.PKI.OrgCert("contoso"))
	os.Setenv("PHX_KEY", h.PKI.OrgKey("contoso"))
	os.Unsetenv("PHX_TOKEN")
	code := m.Run()
	stop()
	os.Exit(code)
}

// unique returns a short random suffix, so that ids differ between runs
// against the same hub (go test -count=2).
func unique() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// cell returns a valid health cell of contoso-av for the last whole minute.
func cell(id string) *phxv1.HealthSignal {
	start := time.Now().Add(-time.Minute).Truncate(time.Minute)
	return &phxv1.HealthSignal{
		SignalId:           id,
		Product:            "contoso-av",
		ProductVersion:     "7.16.18",
		ContentChannel:     "channel-291",
		ContentVersion:     "291.1",
		Ring:               phxv1.Ring_RING_CANARY,
		OsFamily:           "windows",
		OsBuild:            "10.0.22631.3880",
		Arch:               "x64",
		Region:             "DE",
		WindowStart:        timestamppb.New(start),
		WindowSeconds:      60,
		DevicesActive:      1200,
		DevicesExposed:     1000,
		DevicesSilent:      4,
		DistinctTenants:    40,
		KernelCrashDevices: 2,
		BootFailureDevices: 1,
		AgentCrashDevices:  3,
		Audience:           &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	}
}

// client connects to h as a dev org.
func client(t testing.TB, h *servertest.Hub, org string, opts ...sdk.Option) *sdk.Client {
	t.Helper()
	opts = append([]sdk.Option{sdk.WithCertFiles(h.PKI.CACert(), h.PKI.OrgCert(org), h.PKI.OrgKey(org))}, opts...)
	c, err := sdk.New(h.Addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
