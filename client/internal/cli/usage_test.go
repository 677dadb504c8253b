package cli

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/phx-exchange/phx/sdk"
)

func TestUsageAndFlagErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string // substrings of stdout
		errText  string   // substring of the error
		noStdout bool
	}{
		{name: "no command", args: nil, code: 2, errText: "missing command", noStdout: true},
		{name: "help", args: []string{"help"}, code: 0, stdout: []string{"Usage:", "whoami", "signal publish", "rollout announce", "rollout update", "rollout show", "rollout list", "incident report", "incident update", "incident show", "incident list", "incident export", "watch", "audit tail", "audit verify", "pki init", "pki issue", "version", "--hub", "--as", "--json", "--timeout"}},
		{name: "-h", args: []string{"-h"}, code: 0, stdout: []string{"Usage:", "incident report"}},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: []string{"Usage:"}},
		{name: "help group", args: []string{"help", "rollout"}, code: 0, stdout: []string{"phx rollout update ID --revision N"}},
		{name: "help leaf", args: []string{"help", "rollout", "update"}, code: 0, stdout: []string{"Usage: phx rollout update", "--revision", "--state"}},
		{name: "help unknown", args: []string{"help", "nope"}, code: 2, errText: `unknown command "nope"`},
		{name: "group -h", args: []string{"incident", "-h"}, code: 0, stdout: []string{"phx incident report", "phx incident export ID [--format csaf]"}},
		{name: "leaf -h", args: []string{"watch", "-h"}, code: 0, stdout: []string{"Usage: phx watch", "--from-cursor", "--since", "--from-beginning", "--kinds"}},
		{name: "audit -h", args: []string{"audit", "-h"}, code: 0, stdout: []string{"phx audit tail [-n N] [--follow]", "phx audit verify"}},
		{name: "audit tail -h", args: []string{"audit", "tail", "-h"}, code: 0, stdout: []string{"Usage: phx audit tail", "-n records", "--follow", "--json"}},
		{name: "audit missing subcommand", args: []string{"audit"}, code: 2, errText: "audit: missing command (one of: tail, verify)"},
		{name: "audit tail -n 0", args: []string{"audit", "tail", "-n", "0"}, code: 2, errText: "-n: 0 is not between 1 and 10000"},
		{name: "audit verify extra argument", args: []string{"audit", "verify", "x"}, code: 2, errText: `unexpected argument "x"`},
		{name: "unknown global flag", args: []string{"--bogus", "whoami"}, code: 2, errText: "flag provided but not defined: -bogus"},
		{name: "unknown command", args: []string{"nope"}, code: 2, errText: `unknown command "nope"`},
		{name: "missing subcommand", args: []string{"rollout"}, code: 2, errText: "rollout: missing command (one of: announce, update, show, list)"},
		{name: "unknown subcommand", args: []string{"incident", "close"}, code: 2, errText: `incident: unknown command "close"`},
		{name: "unknown leaf flag", args: []string{"rollout", "show", "r1", "--color"}, code: 2, errText: "rollout show: flag provided but not defined: -color"},
		{name: "missing ID", args: []string{"rollout", "show"}, code: 2, errText: "missing rollout ID"},
		{name: "extra argument", args: []string{"rollout", "show", "a", "b"}, code: 2, errText: `unexpected argument "b"`},
		{name: "update needs revision", args: []string{"rollout", "update", "r1", "--state", "paused"}, code: 2, errText: "--revision is required"},
		{name: "update needs a change", args: []string{"rollout", "update", "r1", "--revision", "3"}, code: 2, errText: "nothing to change"},
		{name: "bad state", args: []string{"rollout", "update", "r1", "--revision", "3", "--state", "sideways"}, code: 2, errText: `--state: unknown value "sideways" (one of: active, paused, rolled-back, completed)`},
		{name: "bad revision", args: []string{"rollout", "update", "r1", "--revision", "x"}, code: 2, errText: `invalid value "x" for flag -revision`},
		{name: "announce needs id", args: []string{"rollout", "announce", "--product", "p"}, code: 2, errText: "--id is required"},
		{name: "announce needs ring", args: []string{"rollout", "announce", "--id", "r", "--product", "p", "--version", "1"}, code: 2, errText: "--ring is required"},
		{name: "announce needs tlp", args: []string{"rollout", "announce", "--id", "r", "--product", "p", "--version", "1", "--ring", "canary"}, code: 2, errText: "--tlp is required"},
		{name: "bad ring", args: []string{"rollout", "announce", "--id", "r", "--product", "p", "--version", "1", "--tlp", "green", "--ring", "outer"}, code: 2, errText: "--ring: unknown value"},
		{name: "bad tlp", args: []string{"rollout", "announce", "--id", "r", "--product", "p", "--version", "1", "--ring", "canary", "--tlp", "purple"}, code: 2, errText: "--tlp: unknown value"},
		{name: "report needs severity", args: []string{"incident", "report", "--title", "t", "--tlp", "amber"}, code: 2, errText: "--severity is required"},
		{name: "bad severity", args: []string{"incident", "report", "--title", "t", "--product", "p", "--tlp", "amber", "--severity", "meh"}, code: 2, errText: "--severity: unknown value"},
		{name: "incident update orgs without tlp", args: []string{"incident", "update", "INC-1", "--revision", "1", "--orgs", "a"}, code: 2, errText: "--orgs needs --tlp"},
		{name: "incident export -h", args: []string{"incident", "export", "-h"}, code: 0, stdout: []string{"Usage: phx incident export ID [--format csaf] [--out FILE] [--namespace URL]", "CSAF 2.1", "--format format", "--out file", "--namespace URL"}},
		{name: "incident export missing ID", args: []string{"incident", "export"}, code: 2, errText: "missing incident ID"},
		{name: "incident export extra argument", args: []string{"incident", "export", "INC-1", "INC-2"}, code: 2, errText: `unexpected argument "INC-2"`},
		{name: "incident export unknown format", args: []string{"incident", "export", "INC-1", "--format", "json"}, code: 2, errText: `incident export: --format: unknown value "json" (one of: csaf)`},
		{name: "incident export bad namespace", args: []string{"incident", "export", "INC-1", "--namespace", "ftp://x"}, code: 2, errText: "--namespace"},
		{name: "incident list bad status", args: []string{"incident", "list", "--status", "closed"}, code: 2, errText: "--status: unknown value"},
		{name: "publish needs file", args: []string{"signal", "publish"}, code: 2, errText: "--file is required"},
		{name: "publish missing file", args: []string{"--as", "contoso", "signal", "publish", "--file", dir + "/nope.json"}, code: 1, errText: "no such file"},
		{name: "watch two starts", args: []string{"watch", "--since", "10m", "--from-beginning"}, code: 2, errText: "at most one of --from-cursor, --since and --from-beginning"},
		{name: "watch bad since", args: []string{"watch", "--since", "yesterday"}, code: 2, errText: "neither a duration"},
		{name: "watch heartbeat kind", args: []string{"watch", "--kinds", "rollout,heartbeat"}, code: 2, errText: "heartbeats are not a kind"},
		{name: "no credentials", args: []string{"whoami"}, code: 2, errText: "no credentials: use --as ORG"},
		{name: "as with cert", args: []string{"--as", "contoso", "--cert", "c.crt", "whoami"}, code: 2, errText: "--as cannot be combined"},
		{name: "as unknown org", args: []string{"--data-dir", dir, "--as", "ghost", "whoami"}, code: 2, errText: "ghost.crt does not exist"},
		{name: "cert without key", args: []string{"--cert", "c.crt", "whoami"}, code: 2, errText: "--cert and --key"},
		{name: "pki issue needs org", args: []string{"--data-dir", dir, "pki", "issue"}, code: 2, errText: "--org is required"},
		{name: "pki issue bad org", args: []string{"--data-dir", dir, "pki", "issue", "--org", "Bad Org"}, code: 2, errText: "does not match"},
		{name: "version", args: []string{"version"}, code: 0, stdout: []string{"phx "}},
		{name: "version json after command", args: []string{"version", "--json"}, code: 0, stdout: []string{`"version":`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := phx(t, tt.args...)
			if got := ExitCode(err); got != tt.code {
				t.Errorf("exit code %d, want %d (err %v)", got, tt.code, err)
			}
			if tt.errText != "" && (err == nil || !strings.Contains(err.Error(), tt.errText)) {
				t.Errorf("err = %v, want it to contain %q", err, tt.errText)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout does not contain %q:\n%s", s, stdout)
				}
			}
			if tt.noStdout && stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}

func TestMainPrintsOneLine(t *testing.T) {
	var out, errb strings.Builder
	code := Main(t.Context(), []string{"rollout", "update", "r1"}, &out, &errb)
	if code != 2 {
		t.Errorf("code = %d, want 2", code)
	}
	want := "phx: rollout update: --revision is required (see 'phx rollout update -h')\n"
	if errb.String() != want {
		t.Errorf("stderr = %q, want %q", errb.String(), want)
	}
	errb.Reset()
	if code := Main(t.Context(), []string{"version"}, &out, &errb); code != 0 || errb.Len() != 0 {
		t.Errorf("version: code %d, stderr %q", code, errb.String())
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args []string
		pos  []string
		rev  uint64
		json bool
	}{
		{[]string{"r1", "--revision", "3"}, []string{"r1"}, 3, false},
		{[]string{"--revision", "3", "r1"}, []string{"r1"}, 3, false},
		{[]string{"--revision=3", "r1", "--json"}, []string{"r1"}, 3, true},
		{[]string{"r1", "r2", "-revision", "4"}, []string{"r1", "r2"}, 4, false},
		{[]string{"--revision", "5", "--", "--json"}, []string{"--json"}, 5, false},
	}
	for _, tt := range tests {
		fs := newTestFlagSet()
		rev := fs.Uint64("revision", 0, "")
		js := fs.Bool("json", false, "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if strings.Join(pos, " ") != strings.Join(tt.pos, " ") || *rev != tt.rev || *js != tt.json {
			t.Errorf("%v: pos %v rev %d json %v; want %v %d %v", tt.args, pos, *rev, *js, tt.pos, tt.rev, tt.json)
		}
	}
}

func newTestFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func TestExplain(t *testing.T) {
	tests := []struct {
		in   error
		want string
	}{
		{&sdk.Error{Code: sdk.CodeUnavailable, Message: `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.1:7443: connect: connection refused"`},
			"unavailable: cannot reach the hub at hub:7443: dial tcp 10.0.0.1:7443: connect: connection refused"},
		{&sdk.Error{Code: sdk.CodeUnavailable, Message: `connection error: desc = "transport: authentication handshake failed: tls: bad certificate (\"x\")"`},
			`unavailable: cannot reach the hub at hub:7443: authentication handshake failed: tls: bad certificate ("x")`},
		{&sdk.Error{Code: sdk.CodeUnavailable, Message: "hub is shutting down"}, "unavailable: hub is shutting down"},
		{&sdk.Error{Code: sdk.CodeNotFound, Message: "nope"}, "not found: nope"},
		{errors.New(`connection error: desc = "transport: x"`), `connection error: desc = "transport: x"`},
	}
	for _, tt := range tests {
		got := explain(tt.in, "hub:7443")
		if got.Error() != tt.want {
			t.Errorf("explain(%v) = %q, want %q", tt.in, got, tt.want)
		}
		if !errors.Is(got, tt.in) {
			t.Errorf("explain(%v) lost the error", tt.in)
		}
	}
	if explain(nil, "h") != nil {
		t.Error("explain(nil) != nil")
	}
}
