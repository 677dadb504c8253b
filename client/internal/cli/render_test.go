package cli

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

func TestParseSignals(t *testing.T) {
	one := `{"signalId":"s1","product":"contoso-av","ring":"RING_CANARY"}`
	two := `{"signal_id":"s2","product":"contoso-av","devices_active":10}`
	tests := []struct {
		name    string
		in      string
		ids     []string
		wantErr string
	}{
		{name: "array", in: "[" + one + "," + two + "]", ids: []string{"s1", "s2"}},
		{name: "array with whitespace", in: "\n  [\n " + one + ",\n " + two + "\n]\n", ids: []string{"s1", "s2"}},
		{name: "ndjson", in: one + "\n" + two + "\n", ids: []string{"s1", "s2"}},
		{name: "ndjson without final newline and blank lines", in: "\n" + one + "\n\n" + two, ids: []string{"s1", "s2"}},
		{name: "ndjson CRLF", in: one + "\r\n" + two + "\r\n", ids: []string{"s1", "s2"}},
		{name: "concatenated pretty objects", in: "{\n  \"signalId\": \"s1\"\n}\n{\n  \"signalId\": \"s2\"\n}\n", ids: []string{"s1", "s2"}},
		{name: "byte order mark", in: "\xef\xbb\xbf" + one, ids: []string{"s1"}},
		{name: "empty", in: "  \n", wantErr: "f.json: no signals"},
		{name: "empty array", in: "[]", wantErr: "f.json: no signals"},
		{name: "bad array", in: "[" + one + ",", wantErr: "f.json: unexpected end of JSON input"},
		{name: "bad array item", in: "[" + one + `,{"devicesActive":"many"}]`, wantErr: "f.json: item 1: "},
		{name: "unknown field in ndjson", in: one + "\n\n" + `{"signalId":"s3","colour":"red"}` + "\n", wantErr: `f.json: line 3: `},
		{name: "broken ndjson line", in: one + "\n" + two + "\n{oops\n", wantErr: "f.json: line 3: invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSignals([]byte(tt.in), "f.json")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, s := range got {
				ids = append(ids, s.GetSignalId())
			}
			if strings.Join(ids, ",") != strings.Join(tt.ids, ",") {
				t.Errorf("ids = %v, want %v", ids, tt.ids)
			}
		})
	}
	got, err := parseSignals([]byte(two), "-")
	if err != nil || got[0].GetDevicesActive() != 10 {
		t.Errorf("snake_case field: %v, %v", got, err)
	}
	if _, err := parseSignals(nil, "-"); err == nil || !strings.Contains(err.Error(), "stdin: no signals") {
		t.Errorf("stdin name: %v", err)
	}
}

func TestParseEnums(t *testing.T) {
	tests := []struct {
		parse func(string) (int32, error)
		in    string
		want  int32
		err   bool
	}{
		{ring, "canary", int32(phxv1.Ring_RING_CANARY), false},
		{ring, "RING_BROAD", int32(phxv1.Ring_RING_BROAD), false},
		{ring, "Early", int32(phxv1.Ring_RING_EARLY), false},
		{ring, "unspecified", 0, true},
		{ring, "", 0, true},
		{tlp, "amber+strict", int32(phxv1.Tlp_TLP_AMBER_STRICT), false},
		{tlp, "amber-strict", int32(phxv1.Tlp_TLP_AMBER_STRICT), false},
		{tlp, "TLP:AMBER+STRICT", int32(phxv1.Tlp_TLP_AMBER_STRICT), false},
		{tlp, "TLP_RED", int32(phxv1.Tlp_TLP_RED), false},
		{tlp, "clear", int32(phxv1.Tlp_TLP_CLEAR), false},
		{tlp, "white", 0, true},
		{state, "rolled-back", int32(phxv1.RolloutState_ROLLOUT_ROLLED_BACK), false},
		{state, "paused", int32(phxv1.RolloutState_ROLLOUT_PAUSED), false},
		{state, "ROLLOUT_COMPLETED", int32(phxv1.RolloutState_ROLLOUT_COMPLETED), false},
		{severity, "critical", int32(phxv1.Severity_SEVERITY_CRITICAL), false},
		{severity, "severe", 0, true},
		{status, "investigating", int32(phxv1.Status_STATUS_INVESTIGATING), false},
		{kind, "health", int32(phxv1.Kind_KIND_HEALTH_SIGNAL), false},
		{kind, "advisory", int32(phxv1.Kind_KIND_ADVISORY), false},
		{kind, "heartbeat", 0, true},
	}
	for _, tt := range tests {
		got, err := tt.parse(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parse %q = %d, %v; want %d (error %v)", tt.in, got, err, tt.want, tt.err)
		}
	}
	if _, err := parseState("x"); err == nil || err.Error() != `unknown value "x" (one of: active, paused, rolled-back, completed)` {
		t.Errorf("error text: %v", err)
	}
}

func ring(s string) (int32, error)     { v, err := parseRing(s); return int32(v), err }
func tlp(s string) (int32, error)      { v, err := parseTLP(s); return int32(v), err }
func state(s string) (int32, error)    { v, err := parseState(s); return int32(v), err }
func severity(s string) (int32, error) { v, err := parseSeverity(s); return int32(v), err }
func status(s string) (int32, error)   { v, err := parseStatus(s); return int32(v), err }
func kind(s string) (int32, error)     { v, err := parseKind(s); return int32(v), err }

func TestParseSince(t *testing.T) {
	now := time.Date(2024, 7, 19, 5, 27, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"10m", now.Add(-10 * time.Minute), false},
		{"1h30m", now.Add(-90 * time.Minute), false},
		{"2024-07-19T04:09:00Z", time.Date(2024, 7, 19, 4, 9, 0, 0, time.UTC), false},
		{"2024-07-19T06:09:00+02:00", time.Date(2024, 7, 19, 4, 9, 0, 0, time.UTC), false},
		{"-5m", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseSince(tt.in, now)
		if (err != nil) != tt.err || !got.Equal(tt.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

var ts = timestamppb.New(time.Date(2024, 7, 19, 4, 9, 0, 0, time.UTC))

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// render runs f without and with colour and checks that colour changes
// nothing but the escape codes (so columns stay aligned).
func render(t *testing.T, f func(e *env, w *bytes.Buffer)) string {
	t.Helper()
	var plainOut, colorOut bytes.Buffer
	f(&env{}, &plainOut)
	f(&env{color: true}, &colorOut)
	if !strings.Contains(colorOut.String(), "\x1b[") {
		t.Error("no colour in colour mode")
	}
	if got := ansi.ReplaceAllString(colorOut.String(), ""); got != plainOut.String() {
		t.Errorf("colour changes the layout:\n%s\nwithout colour:\n%s", got, plainOut.String())
	}
	if strings.Contains(plainOut.String(), "\x1b") {
		t.Error("escape codes without colour")
	}
	return plainOut.String()
}

func TestRenderPublish(t *testing.T) {
	resp := &phxv1.PublishSignalsResponse{
		Results: []*phxv1.SignalResult{
			{Index: 0, SignalId: "cell-0001", Outcome: phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED, Cursor: "h12.r0.i0.a0"},
			{Index: 1, SignalId: "cell-2", Outcome: phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE, Cursor: "h7.r0.i0.a0"},
			{Index: 2, SignalId: "c3", Outcome: phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED, Error: &phxv1.ItemError{
				Code: int32(codes.InvalidArgument), Field: "devices_exposed", Message: "1201 must be ≤ devices_active (1200)"}},
		},
		Accepted: 1, Duplicates: 1, Rejected: 1,
	}
	got := render(t, func(e *env, w *bytes.Buffer) { renderPublish(e, w, resp, 3) })
	want := `INDEX  SIGNAL_ID  OUTCOME    CURSOR/ERROR
0      cell-0001  accepted   h12.r0.i0.a0
1      cell-2     duplicate  h7.r0.i0.a0
2      c3         rejected   invalid argument: devices_exposed: 1201 must be ≤ devices_active (1200)
1 accepted, 1 duplicate, 1 rejected of 3 signals
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderRolloutList(t *testing.T) {
	rs := []*phxv1.Rollout{
		{RolloutId: "channel-291", Product: "contoso-av", ContentVersion: "291.1", PreviousVersion: "291.0",
			State: phxv1.RolloutState_ROLLOUT_PAUSED, CurrentRing: phxv1.Ring_RING_CANARY, PercentDeployed: 2.5,
			Revision: 2, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT}, Publisher: "contoso", UpdatedAt: ts},
		{RolloutId: "edr-7", Product: "fabrikam-edr", ContentVersion: "7.0",
			State: phxv1.RolloutState_ROLLOUT_ACTIVE, CurrentRing: phxv1.Ring_RING_BROAD, PercentDeployed: 100,
			Revision: 1, Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}, Publisher: "fabrikam", UpdatedAt: ts},
	}
	got := render(t, func(e *env, w *bytes.Buffer) { renderRolloutList(e, w, rs) })
	want := `ROLLOUT      PRODUCT       VERSION        STATE   RING    DEPLOYED  REV  TLP                 PUBLISHER  UPDATED
channel-291  contoso-av    291.0 → 291.1  paused  canary  2.5%      2    TLP:AMBER+STRICT ⚠  contoso    2024-07-19T04:09:00Z
edr-7        fabrikam-edr  7.0            active  broad   100%      1    TLP:GREEN           fabrikam   2024-07-19T04:09:00Z
⚠ TLP:AMBER+STRICT — do not share outside your org
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	var b bytes.Buffer
	renderRolloutList(&env{}, &b, nil)
	if b.String() != "no rollouts\n" {
		t.Errorf("empty list: %q", b.String())
	}
}

func TestRenderRollout(t *testing.T) {
	r := &phxv1.Rollout{RolloutId: "channel-291", Product: "contoso-av", ContentChannel: "channel-291",
		ContentVersion: "291.1", PreviousVersion: "291.0", State: phxv1.RolloutState_ROLLOUT_ROLLED_BACK,
		CurrentRing: phxv1.Ring_RING_EARLY, PercentDeployed: 12, IncidentId: "INC-7Q2M9XK4TB", Reason: "boot loops",
		Schedule: []*phxv1.RolloutStage{{Ring: phxv1.Ring_RING_CANARY, TargetPercent: 1}},
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT, Orgs: []string{"microsoft"}},
		Revision: 3, Publisher: "contoso", CreatedAt: ts, UpdatedAt: ts}
	got := render(t, func(e *env, w *bytes.Buffer) { renderRollout(e, w, r) })
	want := `⚠ AMBER+STRICT — do not share outside your org
rollout:    channel-291
product:    contoso-av
channel:    channel-291
version:    291.0 → 291.1
state:      rolled-back
ring:       early
deployed:   12%
schedule:   canary 1%
incident:   INC-7Q2M9XK4TB
reason:     boot loops
audience:   TLP:AMBER+STRICT (microsoft)
publisher:  contoso
revision:   3
created:    2024-07-19T04:09:00Z
updated:    2024-07-19T04:09:00Z
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderIncident(t *testing.T) {
	inc := &phxv1.Incident{
		Id: "INC-7Q2M9XK4TB", Title: "Boot loops after channel 291", Classification: phxv1.Classification_CLASSIFICATION_INCIDENT,
		Severity: phxv1.Severity_SEVERITY_CRITICAL, Status: phxv1.Status_STATUS_MITIGATING,
		Affected: []*phxv1.Affected{{Product: "contoso-av", ContentChannel: "channel-291", ContentVersion: "291.1"}},
		Impact:   "machines boot-loop", Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER},
		Remediations: []*phxv1.Remediation{{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_WORKAROUND, Details: "boot to safe mode and delete the channel file", RestartRequired: true}},
		Posts:        []*phxv1.Post{{Seq: 1, Author: "contoso", PostedAt: ts, Text: "reverted", Status: phxv1.Status_STATUS_MITIGATING}},
		Responses:    []*phxv1.Response{{Org: "microsoft", Kind: phxv1.ResponseKind_RESPONSE_KIND_INVESTIGATING, RespondedAt: ts, Statement: "looking"}},
		Revision:     2, Reporter: "contoso", CreatedAt: ts, UpdatedAt: ts,
	}
	got := render(t, func(e *env, w *bytes.Buffer) { renderIncident(e, w, inc) })
	want := `incident:        INC-7Q2M9XK4TB
title:           Boot loops after channel 291
classification:  incident
severity:        critical
status:          mitigating
affected:        contoso-av content channel-291 291.1
impact:          machines boot-loop
audience:        TLP:AMBER
reporter:        contoso
revision:        2
created:         2024-07-19T04:09:00Z
updated:         2024-07-19T04:09:00Z

Remediations:
  workaround: boot to safe mode and delete the channel file (restart required)

Timeline:
  #1  2024-07-19T04:09:00Z  contoso  → mitigating  reverted

Responses:
  microsoft  investigating  2024-07-19T04:09:00Z  looking
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	got = render(t, func(e *env, w *bytes.Buffer) { renderIncidentList(e, w, []*phxv1.Incident{inc}) })
	want = `ID              SEVERITY  STATUS      PRODUCT     REV  TLP        REPORTER  UPDATED               TITLE
INC-7Q2M9XK4TB  critical  mitigating  contoso-av  2    TLP:AMBER  contoso   2024-07-19T04:09:00Z  Boot loops after channel 291
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderEnvelope(t *testing.T) {
	sig := &phxv1.HealthSignal{SignalId: "cell-1", ContentVersion: "291.1", Ring: phxv1.Ring_RING_CANARY,
		OsBuild: "10.0.22631.3880", Region: "DE", WindowSeconds: 60, DevicesExposed: 1000,
		BootFailureDevices: 30, KernelCrashDevices: 5, DevicesSilent: 60}
	tests := []struct {
		name string
		env  *phxv1.Envelope
		want string
	}{
		{
			name: "health",
			env: &phxv1.Envelope{Kind: phxv1.Kind_KIND_HEALTH_SIGNAL, Publisher: "contoso", Product: "contoso-av", PublishedAt: ts,
				Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}, Item: &phxv1.Envelope_HealthSignal{HealthSignal: sig}},
			want: "2024-07-19T04:09:00Z  health    contoso         contoso-av        TLP:GREEN         cell-1 291.1 canary 10.0.22631.3880/DE 60s exposed=1000 boot=30(3.00%) kernel=5(0.50%) hang=0 agent=0 silent=60(6.00%)\n",
		},
		{
			name: "health, noised for a CERT",
			env: &phxv1.Envelope{Kind: phxv1.Kind_KIND_HEALTH_SIGNAL, Publisher: "contoso", Product: "contoso-av", PublishedAt: ts,
				Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN}, Item: &phxv1.Envelope_HealthSignal{HealthSignal: sig},
				Noise: &phxv1.Noise{Mechanism: "discrete_laplace", EpsilonPerCount: 8.0 / 9, EpsilonCell: 8}},
			want: "2024-07-19T04:09:00Z  health    contoso         contoso-av        TLP:GREEN         cell-1 291.1 canary 10.0.22631.3880/DE 60s exposed=1000 boot=30(3.00%) kernel=5(0.50%) hang=0 agent=0 silent=60(6.00%) (counts noised, ε=0.89 each)\n",
		},
		{
			name: "rollout",
			env: &phxv1.Envelope{Kind: phxv1.Kind_KIND_ROLLOUT, Publisher: "contoso", Product: "contoso-av", PublishedAt: ts,
				Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT}, Item: &phxv1.Envelope_Rollout{Rollout: &phxv1.Rollout{
					RolloutId: "channel-291", State: phxv1.RolloutState_ROLLOUT_PAUSED, CurrentRing: phxv1.Ring_RING_CANARY,
					PercentDeployed: 5, PreviousVersion: "291.0", ContentVersion: "291.1", Revision: 2, Reason: "boot loops"}}},
			want: "2024-07-19T04:09:00Z  rollout   contoso         contoso-av        TLP:AMBER+STRICT  channel-291 paused canary 5% 291.0 → 291.1 rev 2 \"boot loops\"  ⚠ AMBER+STRICT — do not share outside your org\n",
		},
		{
			name: "incident",
			env: &phxv1.Envelope{Kind: phxv1.Kind_KIND_INCIDENT, Publisher: "microsoft", Product: "windows", PublishedAt: ts,
				Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"contoso"}}, Item: &phxv1.Envelope_Incident{Incident: &phxv1.Incident{
					Id: "INC-7Q2M9XK4TB", Severity: phxv1.Severity_SEVERITY_CRITICAL, Status: phxv1.Status_STATUS_INVESTIGATING, Revision: 1, Title: "Boot loops"}}},
			want: "2024-07-19T04:09:00Z  incident  microsoft       windows           TLP:RED           INC-7Q2M9XK4TB critical investigating rev 1 \"Boot loops\"\n",
		},
		{
			name: "advisory",
			env: &phxv1.Envelope{Kind: phxv1.Kind_KIND_ADVISORY, Publisher: "phx", Product: "contoso-av", PublishedAt: ts,
				Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}, Item: &phxv1.Envelope_Advisory{Advisory: &phxv1.Advisory{
					Id: "ADV-1", Kind: phxv1.AdvisoryKind_ADVISORY_KIND_CATASTROPHE, Severity: phxv1.Severity_SEVERITY_CRITICAL,
					Recommendation: phxv1.Recommendation_RECOMMENDATION_PAUSE_ROLLOUT, RolloutId: "channel-291",
					Evidence: &phxv1.Evidence{DevicesExposed: 1000, FailingDevices: 90, Rate: 0.09}, Summary: "9% failing"}}},
			want: "2024-07-19T04:09:00Z  advisory  phx             contoso-av        TLP:AMBER         ADV-1 catastrophe critical pause-rollout rollout=channel-291 failing=90/1000 (9.00%) \"9% failing\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := render(t, func(e *env, w *bytes.Buffer) { renderEnvelope(e, w, tt.env) })
			if got != tt.want {
				t.Errorf("got:\n%q\nwant:\n%q", got, tt.want)
			}
		})
	}
}

func TestColorEnabled(t *testing.T) {
	var b bytes.Buffer
	if colorEnabled(&b) {
		t.Error("colour on a buffer")
	}
	t.Setenv("NO_COLOR", "1")
	if colorEnabled(&b) {
		t.Error("colour with NO_COLOR")
	}
}
