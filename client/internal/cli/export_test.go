package cli

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/phx-exchange/phx/client/internal/csaf"
	"github.com/phx-exchange/phx/client/internal/csaf/csaftest"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// TestIncidentExport reports an incident, updates it twice and exports it
// as CSAF 2.1 from the real hub; the output must pass the schema.
func TestIncidentExport(t *testing.T) {
	// The platform reports, about its own product: a resolved incident of
	// a vendor's product would show in other tests' lists.
	ms := as(hub, "microsoft")
	report := `{"title":"Boot loop after channel 292","classification":"CLASSIFICATION_INCIDENT","severity":"SEVERITY_CRITICAL",
	 "affected":[{"product":"defender","versionRange":">=7.11 <7.16","contentChannel":"channel-292","contentVersion":"292.1",
	   "osBuilds":["10.0.22631.3880","10.0.19045.4651"]},{"product":"defender","versionRange":"7.16.18"}],
	 "impact":"Machines boot-loop after the update.",
	 "remediations":[{"category":"REMEDIATION_CATEGORY_WORKAROUND","details":"Boot into safe mode and delete the 292 file."},
	   {"category":"REMEDIATION_CATEGORY_VENDOR_FIX","details":"Content 292.2 fixes it.","restartRequired":true,"url":"https://contoso.example/kb/292"}],
	 "audience":{"tlp":"TLP_AMBER_STRICT","orgs":["microsoft","contoso"]}}`
	out, _, err := phx(t, args(ms, "--json", "incident", "report", "--file", writeFile(t, "inc.json", report))...)
	if err != nil {
		t.Fatal(err)
	}
	var inc phxv1.Incident
	if err := protojson.Unmarshal([]byte(out), &inc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	id := inc.GetId()
	for i, u := range [][]string{{"--status", "mitigating", "--severity", "high"}, {"--status", "resolved"}} {
		if _, _, err := phx(t, args(ms, append([]string{"incident", "update", id, "--revision", strconv.Itoa(i + 1)}, u...)...)...); err != nil {
			t.Fatal(err)
		}
	}

	file := t.TempDir() + "/" + id + ".json"
	tests := []struct {
		name      string
		args      []string
		namespace string
		fromFile  bool
	}{
		{"stdout", []string{"incident", "export", id}, "https://phx.invalid/org/microsoft", false},
		{"format and namespace", []string{"incident", "export", "--format", "csaf", "--namespace", "https://psirt.microsoft.example/csaf", id}, "https://psirt.microsoft.example/csaf", false},
		{"to a file", []string{"incident", "export", id, "--out", file}, "https://phx.invalid/org/microsoft", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := phx(t, args(ms, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stderr, "⚠ AMBER+STRICT — do not share outside your org") {
				t.Errorf("no AMBER+STRICT warning on stderr: %q", stderr)
			}
			doc := []byte(stdout)
			if tt.fromFile {
				if stdout != "" {
					t.Errorf("--out also wrote to stdout: %q", stdout)
				}
				if want := "wrote " + file + ": " + id + " revision 3 as CSAF 2.1, TLP:AMBER+STRICT\n"; !strings.HasSuffix(stderr, want) {
					t.Errorf("stderr = %q, want it to end with %q", stderr, want)
				}
				st, err := os.Stat(file)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("mode %v, want 0600", st.Mode().Perm())
				}
				if doc, err = os.ReadFile(file); err != nil {
					t.Fatal(err)
				}
			}
			if err := csaftest.Validate(doc); err != nil {
				t.Fatalf("not valid CSAF 2.1: %v\n%s", err, doc)
			}
			var d csaf.Document
			if err := json.Unmarshal(doc, &d); err != nil {
				t.Fatal(err)
			}
			m := d.Document
			tr := m.Tracking
			if tr.ID != id || tr.Version != "3" || tr.Status != "final" || m.Distribution.TLP.Label != "AMBER+STRICT" ||
				m.Publisher.Name != "microsoft" || m.Publisher.Namespace != tt.namespace || m.AggregateSeverity.Text != "High" {
				t.Errorf("document: %+v", m)
			}
			var numbers []string
			for i, r := range tr.RevisionHistory {
				numbers = append(numbers, r.Number)
				if i > 0 && r.Date < tr.RevisionHistory[i-1].Date {
					t.Errorf("revision history out of date order: %+v", tr.RevisionHistory)
				}
			}
			if !slices.Equal(numbers, []string{"1", "2", "3"}) || tr.InitialReleaseDate != tr.RevisionHistory[0].Date || tr.CurrentReleaseDate != tr.RevisionHistory[2].Date {
				t.Errorf("revision history %+v, dates %s…%s", tr.RevisionHistory, tr.InitialReleaseDate, tr.CurrentReleaseDate)
			}
			if tr.Generator == nil || tr.Generator.Engine.Name != "phx" || tr.Generator.Date == "" {
				t.Errorf("generator %+v", tr.Generator)
			}
			v := d.Vulnerabilities[0]
			// Two OS builds of the range with content, and 7.16.18.
			if n := len(v.ProductStatus.KnownAffected); n != 3 || len(d.ProductTree.ProductPaths) != 2 {
				t.Errorf("known_affected %v, product paths %+v", v.ProductStatus.KnownAffected, d.ProductTree.ProductPaths)
			}
			var cats []string
			for _, r := range v.Remediations {
				cats = append(cats, r.Category)
				if !slices.Equal(r.ProductIDs, v.ProductStatus.KnownAffected) {
					t.Errorf("remediation %s for %v", r.Category, r.ProductIDs)
				}
			}
			if !slices.Equal(cats, []string{"workaround", "vendor_fix"}) || v.Remediations[1].RestartRequired.Category != "machine" ||
				v.Remediations[1].URL != "https://contoso.example/kb/292" {
				t.Errorf("remediations %+v", v.Remediations)
			}
			if !strings.Contains(string(doc), `"vers:generic/>=7.11|<7.16"`) {
				t.Errorf("no vers range in:\n%s", doc)
			}
		})
	}

	// Errors: a usage error for a bad flag, the hub's answer for the rest.
	errs := []struct {
		name string
		args []string
		code int
		want string
		is   error
	}{
		{"unknown format", args(ms, "incident", "export", id, "--format", "cvrf"), 2, `--format: unknown value "cvrf" (one of: csaf)`, nil},
		{"bad namespace", args(ms, "incident", "export", id, "--namespace", "psirt.microsoft.example"), 2, `--namespace: "psirt.microsoft.example" is not an absolute http or https URL`, nil},
		{"unknown incident", args(ms, "incident", "export", "INC-0000000000"), 1, "not found", sdk.ErrNotFound},
		{"outside the audience", args(as(hub, "fabrikam"), "incident", "export", id), 1, "not found", sdk.ErrNotFound},
		{"unwritable file", args(ms, "incident", "export", id, "--out", t.TempDir()+"/no/such/dir/x.json"), 1, "no such file or directory", nil},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := phx(t, tt.args...)
			if ExitCode(err) != tt.code || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("exit %d, err %v; want %d and %q", ExitCode(err), err, tt.code, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err %v is not %v", err, tt.is)
			}
			if stdout != "" {
				t.Errorf("stdout = %q", stdout)
			}
		})
	}
}
