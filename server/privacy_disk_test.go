package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
	cellbuilder "github.com/phx-exchange/phx/sdk/cells"
	"github.com/phx-exchange/phx/server/servertest"
)

// TestNothingIdentifyingOnDisk is the proof of DESIGN.md section 8: health
// cells built by the SDK from device observations, and incidents and
// rollouts whose free text names people and machines, go through the hub;
// then the hub stops and every file of its data directory (the JetStream
// store, the audit log, the token ledger) is searched for each identifier,
// in plain text and as its unkeyed SHA-256 (hex, base64 and raw bytes).
// None may be found. (Machine names are written as people write them in
// notices, after a cue such as "host" or "computer": a bare name such as
// FINANCE-PC07 alone is not recognized; see README, Privacy.)
func TestNothingIdentifyingOnDisk(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	ctx := testCtx(t)

	const devices, tenants = 120, 12
	var secrets []string
	deviceID := func(i int) string { return fmt.Sprintf("ACME-LAPTOP-SN%06d-ZQX", 731900+i) }
	tenantID := func(i int) string { return fmt.Sprintf("tenant-acme-bank-%04d", 4400+i) }
	for i := range devices {
		secrets = append(secrets, deviceID(i))
	}
	for i := range tenants {
		secrets = append(secrets, tenantID(i))
	}
	people := []string{
		"jane.proof@acme-bank.example", "198.51.100.23", "2001:db8:ac3e::17", "proofuser77",
		"ACMEBANK-FIN-PC42", "finpc42.corp.acmebank.local", "00:1A:2B:3C:4D:5E",
		"S-1-5-21-1004336348-1177238915-682003330-512", "hunter2proof",
	}
	secrets = append(secrets, people...)

	// Health cells from the SDK cell builder: two closed minutes of
	// observations, with crashes.
	start := time.Now().Truncate(time.Minute).Add(-3 * time.Minute)
	now := start
	b, err := cellbuilder.New(cellbuilder.WithClock(func() time.Time { return now }), cellbuilder.WithAudience(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}))
	if err != nil {
		t.Fatal(err)
	}
	for m := range 2 {
		for i := range devices {
			obs := cellbuilder.Observation{
				Time: start.Add(time.Duration(m)*time.Minute + time.Duration(i)*time.Millisecond), Device: deviceID(i), Tenant: tenantID(i % tenants),
				Product: "contoso-av", ProductVersion: "7.16.18", ContentChannel: "channel-291", ContentVersion: "291.1",
				Ring: phxv1.Ring_RING_CANARY, OSFamily: "windows", OSBuild: "10.0.22631.3880", Arch: "x64", Region: "DE",
			}
			if i%2 == 0 {
				obs.Event, obs.BugcheckCode, obs.Module = cellbuilder.KernelCrash, "0x50", "csagent.sys"
			}
			if err := b.Observe(obs); err != nil {
				t.Fatal(err)
			}
		}
	}
	now = start.Add(2*time.Minute + time.Minute)
	out, rep := b.Flush(now)
	if len(out) == 0 {
		t.Fatalf("the builder emitted nothing: %+v", rep)
	}
	c, err := sdk.New(h.Addr, sdk.WithCertFiles(h.PKI.CACert(), h.PKI.OrgCert("contoso"), h.PKI.OrgKey("contoso")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.PublishSignals(ctx, out)
	if err != nil || res.GetAccepted() != uint32(len(out)) {
		t.Fatalf("publish: %v %v", res, err)
	}

	// Free text that names people and machines.
	in := incident("Boot loop on host ACMEBANK-FIN-PC42 reported by jane.proof@acme-bank.example", "contoso-av", phxv1.Severity_SEVERITY_CRITICAL, green())
	in.Impact = "Seen from 198.51.100.23 and 2001:db8:ac3e::17 on finpc42.corp.acmebank.local (MAC 00:1A:2B:3C:4D:5E); " +
		"dump under C:\\Users\\proofuser77\\AppData, account S-1-5-21-1004336348-1177238915-682003330-512"
	in.Remediations = []*phxv1.Remediation{{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_WORKAROUND,
		Details: "Ask jane.proof@acme-bank.example", Url: "https://proofuser77:hunter2proof@kb.contoso.example/291"}}
	inc, err := c.ReportIncident(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateIncident(ctx, inc.Id, inc.Revision, &phxv1.Incident{Impact: "still failing on computer ACMEBANK-FIN-PC42, profile /home/proofuser77"}, "impact"); err != nil {
		t.Fatal(err)
	}
	ro := announce(t, as(t, h, "contoso"), rollout(uniq("r-disk"), "contoso-av", green()))
	if _, err := c.UpdateRollout(ctx, ro.RolloutId, 1, &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED,
		Reason: "paused after jane.proof@acme-bank.example called from 198.51.100.23"}, "state", "reason"); err != nil {
		t.Fatal(err)
	}
	// Readers leave audit records of deliveries.
	f := open(t, as(t, h, "national-cert"), &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
	f.items(len(out) + 3)
	f.close()
	h.Stop()

	type needle struct {
		what  string
		bytes []byte
	}
	var needles []needle
	for _, s := range secrets {
		sum := sha256.Sum256([]byte(s))
		needles = append(needles,
			needle{s, []byte(s)},
			needle{s + " (lower case)", []byte(strings.ToLower(s))},
			needle{"sha256(" + s + ") hex", []byte(hex.EncodeToString(sum[:]))},
			needle{"sha256(" + s + ") HEX", []byte(strings.ToUpper(hex.EncodeToString(sum[:])))},
			needle{"sha256(" + s + ") base64", []byte(base64.StdEncoding.EncodeToString(sum[:])[:40])},
			needle{"sha256(" + s + ") base64url", []byte(base64.RawURLEncoding.EncodeToString(sum[:])[:40])},
			needle{"sha256(" + s + ") raw", sum[:]},
		)
	}
	files, scanned := 0, 0
	err = filepath.WalkDir(h.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		scanned += len(data)
		for _, n := range needles {
			if i := bytes.Index(data, n.bytes); i >= 0 {
				rel, _ := filepath.Rel(h.DataDir, path)
				t.Errorf("%s found in %s at byte %d", n.what, rel, i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The search must have seen what was published: the incident's id and
	// the scrubbed markers are on disk.
	var seen bool
	_ = filepath.WalkDir(filepath.Join(h.DataDir, "jetstream"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if data, _ := os.ReadFile(path); bytes.Contains(data, []byte(inc.Id)) && bytes.Contains(data, []byte("[redacted:email]")) {
				seen = true
			}
		}
		return nil
	})
	if !seen {
		t.Fatal("the incident is not in the JetStream store: the search proves nothing")
	}
	t.Logf("searched %d files (%d bytes) for %d identifiers in %d forms: none found", files, scanned, len(secrets), len(needles))
}
