package csaf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phx-exchange/phx/client/internal/csaf/csaftest"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

var t0 = time.Date(2024, 7, 19, 4, 9, 0, 0, time.UTC)

func at(min int) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(min) * time.Minute))
}

// minimal is an incident as the hub stores a report made with the fewest
// flags.
func minimal() *phxv1.Incident {
	return &phxv1.Incident{
		Id: "INC-7Q2M9XK4TB", Title: "Boot loop after channel 291 update",
		Classification: phxv1.Classification_CLASSIFICATION_INCIDENT,
		Severity:       phxv1.Severity_SEVERITY_HIGH, Status: phxv1.Status_STATUS_INVESTIGATING,
		Affected: []*phxv1.Affected{{Product: "contoso-av"}},
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
		Reporter: "contoso", Revision: 1, CreatedAt: at(0), UpdatedAt: at(0),
	}
}

// full is an incident that uses every field: every remediation category,
// several affected scopes with ranges, content and OS builds, responses of
// every kind, a timeline and a history of many revisions.
func full() *phxv1.Incident {
	return &phxv1.Incident{
		Id: "INC-8R3N0YL5UC", Title: "Kernel crash after channel 291 update",
		Classification: phxv1.Classification_CLASSIFICATION_INCIDENT,
		Severity:       phxv1.Severity_SEVERITY_CRITICAL, Status: phxv1.Status_STATUS_RESOLVED,
		Affected: []*phxv1.Affected{
			{Product: "contoso-av", VersionRange: ">=7.11 <7.16", ContentChannel: "channel-291", ContentVersion: "291.1",
				OsBuilds: []string{"10.0.22631.3880", "10.0.19045.4651"}},
			{Product: "contoso-av", VersionRange: "7.16.18, 7.16.19"},
			{Product: "contoso-av"},
			{Product: "contoso-av", ContentVersion: "291.2"},
			{Product: "fabrikam-edr", VersionRange: "*"},
			{Product: "northwind-sensor", VersionRange: "7.*"},
			{Product: "contoso-av", VersionRange: "7.16.18"}, // a repeat: no new product
		},
		Impact: "Machines crash at boot (bugcheck 0x50) and loop.",
		Remediations: []*phxv1.Remediation{
			{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_NONE_AVAILABLE, Details: "No fix yet."},
			{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_WORKAROUND, Details: "Boot into safe mode and delete the channel 291 file."},
			{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_MITIGATION, Details: "Content 291.1 was rolled back.", Url: "https://status.contoso.example/291"},
			{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_VENDOR_FIX, Details: "Content 291.2 fixes the fault.", RestartRequired: true,
				Url: "https://contoso.example/kb/291?lang=en"},
			{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_NO_FIX_PLANNED, Details: "Sensor 6.x gets no fix.", Url: "https://contoso.example/a b"},
		},
		RolloutAction: &phxv1.RolloutAction{RolloutId: "cs-291", Action: phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_ROLLBACK},
		Posts: []*phxv1.Post{
			{Seq: 1, Author: "contoso", PostedAt: at(5), Text: "Cause identified: null pointer in the channel parser.", Status: phxv1.Status_STATUS_IDENTIFIED},
			{Seq: 2, Author: "microsoft", PostedAt: at(30), Text: "Recovery media published."},
			{Seq: 3, Author: "contoso", PostedAt: at(90), Status: phxv1.Status_STATUS_RESOLVED},
		},
		Responses: []*phxv1.Response{
			{Org: "fabrikam", Kind: phxv1.ResponseKind_RESPONSE_KIND_INVESTIGATING, RespondedAt: at(10)},
			{Org: "northwind", Kind: phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED, Statement: "Our sensor does not load channel files.", RespondedAt: at(12)},
			{Org: "microsoft", Kind: phxv1.ResponseKind_RESPONSE_KIND_AFFECTED, Statement: "Windows hosts crash.", RespondedAt: at(15)},
			{Org: "litware", Kind: phxv1.ResponseKind_RESPONSE_KIND_NO_RESPONSE},
			{Org: "fabrikam", Kind: phxv1.ResponseKind_RESPONSE_KIND_AFFECTED, Statement: "Seen on 3% of hosts.", RespondedAt: at(40)},
		},
		RespondBy: at(60), AskedOrgs: []string{"fabrikam", "northwind"}, AskAllVendors: true,
		Revision: 7,
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT, Orgs: []string{"contoso", "fabrikam", "microsoft", "northwind"}},
		Reporter: "contoso", CreatedAt: at(0), UpdatedAt: at(90), ResolvedAt: at(90),
		History: []*phxv1.RevisionInfo{
			{Revision: 1, Author: "contoso", At: at(0), Changed: []string{"reported"}},
			{Revision: 2, Author: "contoso", At: at(5), Changed: []string{"post", "status"}},
			{Revision: 3, Author: "fabrikam", At: at(10), Changed: []string{"response"}},
			{Revision: 4, Author: "contoso", At: at(20), Changed: []string{"severity", "affected", "remediations", "rollout_action"}},
			{Revision: 5, Author: "microsoft", At: at(30), Changed: []string{"post"}},
			{Revision: 6, Author: "fabrikam", At: at(40), Changed: []string{"response"}},
			{Revision: 7, Author: "contoso", At: at(90)},
		},
	}
}

func with(inc *phxv1.Incident, f func(*phxv1.Incident)) *phxv1.Incident {
	inc = proto.Clone(inc).(*phxv1.Incident)
	f(inc)
	return inc
}

// convert converts, encodes, validates against the schema and returns
// the document as decoded from its JSON.
func convert(t *testing.T, inc *phxv1.Incident, opts Options) *Document {
	t.Helper()
	d, err := Convert(inc, opts)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Encode(&b, d); err != nil {
		t.Fatal(err)
	}
	if err := csaftest.Validate(b.Bytes()); err != nil {
		t.Fatalf("not valid CSAF 2.1: %v\n%s", err, b.String())
	}
	var back Document
	dec := json.NewDecoder(&b)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&back); err != nil {
		t.Fatal(err)
	}
	checkMandatory(t, &back)
	return &back
}

// checkMandatory checks some of CSAF 2.1's mandatory tests that the schema
// cannot express: every product id used is defined, none twice; no product
// in two status groups; revision history numbered 1…version in date order;
// no product with contradicting remediations; the Security Advisory
// profile's required parts.
func checkMandatory(t *testing.T, d *Document) {
	t.Helper()
	defined := map[string]int{}
	var walk func(bs []Branch)
	walk = func(bs []Branch) {
		for _, b := range bs {
			if (b.Product == nil) == (len(b.Branches) == 0) {
				t.Errorf("branch %s %q has both or neither of product and branches", b.Category, b.Name)
			}
			if b.Category == "product_version" && strings.ContainsAny(b.Name, "<>=*, ") {
				t.Errorf("product_version %q holds a range", b.Name)
			}
			if b.Category == "product_version_range" && !strings.HasPrefix(b.Name, "vers:") && !strings.ContainsAny(b.Name, "<>") {
				t.Logf("product_version_range %q is neither vers nor vls", b.Name)
			}
			if b.Product != nil {
				defined[b.Product.ProductID]++
			}
			walk(b.Branches)
		}
	}
	pt := d.ProductTree
	if pt == nil {
		t.Fatal("no product_tree")
	}
	walk(pt.Branches)
	for _, p := range pt.FullProductNames {
		defined[p.ProductID]++
	}
	for _, p := range pt.ProductPaths {
		defined[p.FullProductName.ProductID]++
	}
	for id, n := range defined {
		if n > 1 {
			t.Errorf("product id %s defined %d times", id, n)
		}
	}
	use := func(where string, ids []string) {
		for _, id := range ids {
			if defined[id] == 0 {
				t.Errorf("%s: product id %s is not defined", where, id)
			}
		}
	}
	for _, p := range pt.ProductPaths {
		use("product path", []string{p.BeginningProductReference})
		for _, s := range p.Subpaths {
			use("product path", []string{s.NextProductReference})
		}
	}
	if len(d.Vulnerabilities) != 1 {
		t.Fatalf("%d vulnerabilities", len(d.Vulnerabilities))
	}
	v := d.Vulnerabilities[0]
	if len(v.Notes) == 0 || v.ProductStatus == nil || len(v.ProductStatus.KnownAffected) == 0 {
		t.Errorf("the Security Advisory profile needs notes and known_affected: %+v", v)
	}
	ps := v.ProductStatus
	group := map[string]string{}
	for name, ids := range map[string][]string{"known_affected": ps.KnownAffected, "known_not_affected": ps.KnownNotAffected,
		"under_investigation": ps.UnderInvestigation, "unknown": ps.Unknown} {
		use(name, ids)
		for _, id := range ids {
			if g, ok := group[id]; ok {
				t.Errorf("product %s is both %s and %s", id, g, name)
			}
			group[id] = name
		}
	}
	cats := map[string][]string{}
	for i, r := range v.Remediations {
		if len(r.ProductIDs) == 0 {
			t.Errorf("remediation %d refers to no product", i)
		}
		use("remediation", r.ProductIDs)
		for _, id := range r.ProductIDs {
			for _, c := range cats[id] {
				if slices.Contains(contradicts[r.Category], c) {
					t.Errorf("product %s has contradicting remediations %s and %s", id, c, r.Category)
				}
			}
			cats[id] = append(cats[id], r.Category)
		}
	}
	for _, m := range v.Metrics {
		use("metric", m.Products)
	}
	for _, n := range v.Notes {
		use("note", n.ProductIDs)
	}
	for _, th := range v.Threats {
		use("threat", th.ProductIDs)
	}
	tr := d.Document.Tracking
	for i, r := range tr.RevisionHistory {
		if r.Number != strconv.Itoa(i+1) {
			t.Errorf("revision_history[%d].number = %s, want %d", i, r.Number, i+1)
		}
		if i > 0 && r.Date < tr.RevisionHistory[i-1].Date {
			t.Errorf("revision %s dated %s, before revision %s (%s)", r.Number, r.Date, tr.RevisionHistory[i-1].Number, tr.RevisionHistory[i-1].Date)
		}
	}
	if n := len(tr.RevisionHistory); n == 0 || tr.Version != tr.RevisionHistory[n-1].Number ||
		tr.InitialReleaseDate != tr.RevisionHistory[0].Date || tr.CurrentReleaseDate != tr.RevisionHistory[n-1].Date {
		t.Errorf("tracking version %s, dates %s…%s do not match the revision history %+v", tr.Version, tr.InitialReleaseDate, tr.CurrentReleaseDate, tr.RevisionHistory)
	}
	if d.Document.Category != CategorySecurityAdvisory || d.Document.CSAFVersion != "2.1" || d.Schema != SchemaURL {
		t.Errorf("category %q, version %q, schema %q", d.Document.Category, d.Document.CSAFVersion, d.Schema)
	}
}

// productsNamed returns the ids of the products (anywhere in the tree)
// whose full names are given, in that order.
func productsNamed(t *testing.T, d *Document, names ...string) []string {
	t.Helper()
	byName := map[string]string{}
	var walk func(bs []Branch)
	walk = func(bs []Branch) {
		for _, b := range bs {
			if b.Product != nil {
				byName[b.Product.Name] = b.Product.ProductID
			}
			walk(b.Branches)
		}
	}
	walk(d.ProductTree.Branches)
	for _, p := range d.ProductTree.FullProductNames {
		byName[p.Name] = p.ProductID
	}
	for _, p := range d.ProductTree.ProductPaths {
		byName[p.FullProductName.Name] = p.FullProductName.ProductID
	}
	var ids []string
	for _, n := range names {
		id, ok := byName[n]
		if !ok {
			t.Fatalf("no product named %q; have %v", n, byName)
		}
		ids = append(ids, id)
	}
	return ids
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("%s =\n  %s\nwant\n  %s", what, g, w)
	}
}

func TestConvert(t *testing.T) {
	tests := []struct {
		name  string
		inc   *phxv1.Incident
		opts  Options
		check func(t *testing.T, d *Document)
	}{
		{"minimal", minimal(), Options{}, func(t *testing.T, d *Document) {
			m := d.Document
			equal(t, "publisher", m.Publisher, Publisher{Category: "vendor", Name: "contoso", Namespace: "https://phx.invalid/org/contoso"})
			equal(t, "distribution", m.Distribution, Distribution{TLP: TLP{Label: "GREEN", URL: TLPURL}})
			equal(t, "tracking", m.Tracking, Tracking{
				ID: "INC-7Q2M9XK4TB", Version: "1", Status: "interim",
				InitialReleaseDate: "2024-07-19T04:09:00.000Z", CurrentReleaseDate: "2024-07-19T04:09:00.000Z",
				RevisionHistory: []Revision{{Date: "2024-07-19T04:09:00.000Z", Number: "1", Summary: "Reported by contoso"}},
				Generator:       &Generator{Engine: Engine{Name: "phx"}},
			})
			equal(t, "title and severity", []any{m.Title, m.Lang, m.AggregateSeverity}, []any{"Boot loop after channel 291 update", "en", &AggregateSeverity{Text: "High"}})
			id := productsNamed(t, d, "contoso-av")
			equal(t, "branches", d.ProductTree.Branches, []Branch{{Category: "product_name", Name: "contoso-av", Product: &FullProductName{Name: "contoso-av", ProductID: id[0]}}})
			v := d.Vulnerabilities[0]
			equal(t, "product_status", v.ProductStatus, &ProductStatus{KnownAffected: id})
			equal(t, "ids", v.IDs, []VulnerabilityID{{SystemName: "phx incident", Text: "INC-7Q2M9XK4TB"}})
			equal(t, "notes", v.Notes, []Note{{Category: "summary", Title: "Summary", Text: "Boot loop after channel 291 update"}})
			equal(t, "metrics", v.Metrics, []Metric{{Content: MetricContent{QualitativeSeverityRating: "high"}, Products: id}})
			equal(t, "document notes", m.Notes, []Note{{Category: "general", Title: "Incident state",
				Text: "Classification: incident. Status: investigating. Severity: high. Reported by contoso."}})
			if v.Remediations != nil || v.Threats != nil || d.ProductTree.ProductPaths != nil {
				t.Errorf("remediations %v, threats %v, paths %v", v.Remediations, v.Threats, d.ProductTree.ProductPaths)
			}
		}},
		{"full", full(), Options{Namespace: "https://psirt.contoso.example", GeneratorVersion: "v1.4.0", Now: t0.Add(2 * time.Hour)}, func(t *testing.T, d *Document) {
			m := d.Document
			equal(t, "publisher", m.Publisher, Publisher{Category: "vendor", Name: "contoso", Namespace: "https://psirt.contoso.example"})
			equal(t, "distribution", m.Distribution, Distribution{
				Text: "Limited to the organizations contoso, fabrikam, microsoft, northwind. Recipients may not share it outside their organization.",
				TLP:  TLP{Label: "AMBER+STRICT", URL: TLPURL}})
			tr := m.Tracking
			equal(t, "tracking", []string{tr.ID, tr.Version, tr.Status, tr.InitialReleaseDate, tr.CurrentReleaseDate},
				[]string{"INC-8R3N0YL5UC", "7", "final", "2024-07-19T04:09:00.000Z", "2024-07-19T05:39:00.000Z"})
			equal(t, "generator", tr.Generator, &Generator{Date: "2024-07-19T06:09:00.000Z", Engine: Engine{Name: "phx", Version: "v1.4.0"}})
			var summaries []string
			for _, r := range tr.RevisionHistory {
				summaries = append(summaries, r.Number+" "+r.Date[11:16]+" "+r.Summary)
			}
			equal(t, "revision history", summaries, []string{
				"1 04:09 Reported by contoso",
				"2 04:14 Post added; status changed by contoso",
				"3 04:19 Response recorded by fabrikam",
				"4 04:29 Severity, affected, remediations, rollout action changed by contoso",
				"5 04:39 Post added by microsoft",
				"6 04:49 Response recorded by fabrikam",
				"7 05:39 Revision 7 by contoso",
			})
			equal(t, "aggregate severity", m.AggregateSeverity, &AggregateSeverity{Text: "Critical"})

			// The product tree.
			scoped := "contoso-av >=7.11 <7.16 with content channel-291 291.1"
			ids := productsNamed(t, d,
				scoped+" on OS build 10.0.22631.3880", scoped+" on OS build 10.0.19045.4651",
				"contoso-av 7.16.18", "contoso-av 7.16.19", "contoso-av", "contoso-av with content 291.2",
				"fabrikam-edr all versions", "northwind-sensor 7.*")
			orgs := productsNamed(t, d, "Products of fabrikam", "Products of northwind", "Products of microsoft", "Products of litware")
			equal(t, "org product ids", orgs, []string{"PHX-ORG-fabrikam", "PHX-ORG-northwind", "PHX-ORG-microsoft", "PHX-ORG-litware"})
			var names []string
			for _, b := range d.ProductTree.Branches {
				names = append(names, b.Category+":"+b.Name)
			}
			equal(t, "top branches", names, []string{"product_name:contoso-av", "product_name:Operating system", "product_name:fabrikam-edr",
				"product_name:northwind-sensor", "vendor:fabrikam", "vendor:northwind", "vendor:microsoft", "vendor:litware"})
			av := d.ProductTree.Branches[0]
			names = nil
			for _, b := range av.Branches {
				names = append(names, b.Category+":"+b.Name)
			}
			equal(t, "contoso-av branches", names, []string{"product_version_range:vers:generic/>=7.11|<7.16",
				"product_version:7.16.18", "product_version:7.16.19", "patch_level:content 291.2"})
			equal(t, "content branch", av.Branches[0].Branches[0].Category+":"+av.Branches[0].Branches[0].Name, "patch_level:content channel-291 291.1")
			equal(t, "standalone products", d.ProductTree.FullProductNames, []FullProductName{{Name: "contoso-av", ProductID: ids[4]}})
			equal(t, "fabrikam-edr", d.ProductTree.Branches[2].Branches[0].Name, "vers:all/*")
			equal(t, "northwind-sensor", d.ProductTree.Branches[3].Branches[0].Name, "7.*")
			if len(d.ProductTree.ProductPaths) != 2 {
				t.Fatalf("product paths: %+v", d.ProductTree.ProductPaths)
			}
			p := d.ProductTree.ProductPaths[0]
			equal(t, "path", []string{p.BeginningProductReference, p.Subpaths[0].Category, p.Subpaths[0].NextProductReference},
				[]string{av.Branches[0].Branches[0].Product.ProductID, "installed_on", "PHX-OS-10.0.22631.3880"})

			// The vulnerability.
			v := d.Vulnerabilities[0]
			equal(t, "product_status", v.ProductStatus, &ProductStatus{
				KnownAffected:      append(slices.Clone(ids), "PHX-ORG-fabrikam", "PHX-ORG-microsoft"),
				KnownNotAffected:   []string{"PHX-ORG-northwind"},
				UnderInvestigation: nil,
				Unknown:            []string{"PHX-ORG-litware"},
			})
			equal(t, "remediations", v.Remediations, []Remediation{
				{Category: "workaround", Details: "Boot into safe mode and delete the channel 291 file.", ProductIDs: ids},
				{Category: "mitigation", Details: "Content 291.1 was rolled back.", ProductIDs: ids, URL: "https://status.contoso.example/291"},
				{Category: "vendor_fix", Details: "Content 291.2 fixes the fault.", ProductIDs: ids, RestartRequired: &RestartRequired{Category: "machine"},
					URL: "https://contoso.example/kb/291?lang=en"},
			})
			equal(t, "threats", v.Threats, []Threat{
				{Category: "impact", Details: "Machines crash at boot (bugcheck 0x50) and loop.", ProductIDs: ids},
				{Category: "impact", Details: "Our sensor does not load channel files.", ProductIDs: []string{"PHX-ORG-northwind"}},
			})
			equal(t, "metrics", v.Metrics, []Metric{{Content: MetricContent{QualitativeSeverityRating: "critical"}, Products: ids}})
			equal(t, "vulnerability notes", v.Notes, []Note{
				{Category: "description", Title: "Impact", Text: "Machines crash at boot (bugcheck 0x50) and loop."},
				{Category: "details", Title: "Response of fabrikam: affected (2024-07-19T04:49:00.000Z)", Text: "Seen on 3% of hosts.", ProductIDs: []string{"PHX-ORG-fabrikam"}},
				{Category: "details", Title: "Response of northwind: not affected (2024-07-19T04:21:00.000Z)", Text: "Our sensor does not load channel files.", ProductIDs: []string{"PHX-ORG-northwind"}},
				{Category: "details", Title: "Response of microsoft: affected (2024-07-19T04:24:00.000Z)", Text: "Windows hosts crash.", ProductIDs: []string{"PHX-ORG-microsoft"}},
				{Category: "details", Title: "Response of litware: no response", Text: "litware answered: no response.", ProductIDs: []string{"PHX-ORG-litware"}},
				{Category: "other", Title: "Remediation none_available, superseded by vendor_fix", Text: "No fix yet."},
				{Category: "other", Title: "Remediation no_fix_planned, superseded by vendor_fix", Text: "Sensor 6.x gets no fix. (https://contoso.example/a b)"},
			})
			equal(t, "document notes", m.Notes, []Note{
				{Category: "general", Title: "Incident state", Text: "Classification: incident. Status: resolved. Severity: critical. Reported by contoso. Resolved at 2024-07-19T05:39:00.000Z."},
				{Category: "details", Title: "Rollout action", Text: "The reporter asks to roll back rollout cs-291."},
				{Category: "details", Title: "Responses requested", Text: "Responses are requested from the organizations fabrikam, northwind and every vendor in the audience by 2024-07-19T05:09:00.000Z."},
				{Category: "details", Title: "Timeline post 1 (contoso, 2024-07-19T04:14:00.000Z)", Text: "Cause identified: null pointer in the channel parser. (Status set to identified.)"},
				{Category: "details", Title: "Timeline post 2 (microsoft, 2024-07-19T04:39:00.000Z)", Text: "Recovery media published."},
				{Category: "details", Title: "Timeline post 3 (contoso, 2024-07-19T05:39:00.000Z)", Text: "(Status set to resolved.)"},
			})
		}},
		{"no history", with(full(), func(inc *phxv1.Incident) { inc.History = nil; inc.Revision = 4 }), Options{}, func(t *testing.T, d *Document) {
			equal(t, "revision history", d.Document.Tracking.RevisionHistory, []Revision{
				{Date: "2024-07-19T04:09:00.000Z", Number: "1", Summary: "Reported by contoso"},
				{Date: "2024-07-19T05:39:00.000Z", Number: "2", Summary: "Revision 2: its changes and time are not recorded; it was made no later than this date"},
				{Date: "2024-07-19T05:39:00.000Z", Number: "3", Summary: "Revision 3: its changes and time are not recorded; it was made no later than this date"},
				{Date: "2024-07-19T05:39:00.000Z", Number: "4", Summary: "Revision 4: its changes and time are not recorded; it was made no later than this date"},
			})
		}},
		{"gaps in the history", with(full(), func(inc *phxv1.Incident) {
			inc.History = []*phxv1.RevisionInfo{inc.History[0], inc.History[2], inc.History[4]}
			inc.Revision = 6
		}), Options{}, func(t *testing.T, d *Document) {
			var got []string
			for _, r := range d.Document.Tracking.RevisionHistory {
				got = append(got, r.Number+" "+r.Date[11:16]+" "+strings.SplitN(r.Summary, ":", 2)[0])
			}
			equal(t, "revision history", got, []string{"1 04:09 Reported by contoso", "2 04:19 Revision 2", "3 04:19 Response recorded by fabrikam",
				"4 04:39 Revision 4", "5 04:39 Post added by microsoft", "6 05:39 Revision 6"})
		}},
		{"unresolved", with(full(), func(inc *phxv1.Incident) { inc.Status = phxv1.Status_STATUS_MONITORING }), Options{}, func(t *testing.T, d *Document) {
			equal(t, "status", d.Document.Tracking.Status, "interim")
		}},
		{"only none_available", with(minimal(), func(inc *phxv1.Incident) {
			inc.Remediations = []*phxv1.Remediation{{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_NONE_AVAILABLE}}
			inc.Impact = "Machines hang."
		}), Options{}, func(t *testing.T, d *Document) {
			v := d.Vulnerabilities[0]
			equal(t, "remediations", v.Remediations, []Remediation{{Category: "none_available", Details: "No remediation is available.", ProductIDs: v.ProductStatus.KnownAffected}})
		}},
		{"no_fix_planned and a workaround", with(minimal(), func(inc *phxv1.Incident) {
			inc.Remediations = []*phxv1.Remediation{
				{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_NO_FIX_PLANNED, Details: "End of life."},
				{Category: phxv1.RemediationCategory_REMEDIATION_CATEGORY_WORKAROUND, Details: "Uninstall."},
			}
		}), Options{}, func(t *testing.T, d *Document) {
			var cats []string
			for _, r := range d.Vulnerabilities[0].Remediations {
				cats = append(cats, r.Category)
			}
			equal(t, "remediation categories", cats, []string{"no_fix_planned", "workaround"})
		}},
		{"pseudonymous reporter", with(minimal(), func(inc *phxv1.Incident) {
			inc.Reporter = "anon-4f9c2a"
			inc.Audience.Pseudonymous = true
		}), Options{}, func(t *testing.T, d *Document) {
			equal(t, "publisher", d.Document.Publisher, Publisher{Category: "vendor", Name: "anon-4f9c2a", Namespace: "https://phx.invalid/org/anon-4f9c2a"})
		}},
		{"older hub: no creation time", with(minimal(), func(inc *phxv1.Incident) { inc.CreatedAt = nil; inc.UpdatedAt = at(3) }), Options{}, func(t *testing.T, d *Document) {
			equal(t, "initial release", d.Document.Tracking.InitialReleaseDate, "2024-07-19T04:12:00.000Z")
		}},
	}
	for _, l := range []struct {
		tlp   phxv1.Tlp
		label string
	}{{phxv1.Tlp_TLP_CLEAR, "CLEAR"}, {phxv1.Tlp_TLP_GREEN, "GREEN"}, {phxv1.Tlp_TLP_AMBER, "AMBER"}, {phxv1.Tlp_TLP_AMBER_STRICT, "AMBER+STRICT"}, {phxv1.Tlp_TLP_RED, "RED"}} {
		for _, base := range []struct {
			name string
			inc  func() *phxv1.Incident
		}{{"minimal", minimal}, {"full", full}} {
			tests = append(tests, struct {
				name  string
				inc   *phxv1.Incident
				opts  Options
				check func(t *testing.T, d *Document)
			}{fmt.Sprintf("%s TLP:%s", base.name, l.label), with(base.inc(), func(inc *phxv1.Incident) {
				inc.Audience.Tlp = l.tlp
				if l.tlp == phxv1.Tlp_TLP_RED {
					inc.Audience.Orgs = []string{"contoso", "microsoft"}
				}
			}), Options{}, func(t *testing.T, d *Document) {
				equal(t, "TLP label", d.Document.Distribution.TLP.Label, l.label)
			}})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, convert(t, tt.inc, tt.opts))
		})
	}
}

// TestProductIDsAreStable: the same scope keeps its product id when the
// affected list is reordered or grows, so revisions can be compared.
func TestProductIDsAreStable(t *testing.T) {
	a, err := Convert(full(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	inc := full()
	slices.Reverse(inc.Affected)
	inc.Affected = append(inc.Affected, &phxv1.Affected{Product: "contoso-av", VersionRange: "7.17.1"})
	b, err := Convert(inc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pa, pb := a.Vulnerabilities[0].ProductStatus.KnownAffected, b.Vulnerabilities[0].ProductStatus.KnownAffected
	for _, id := range pa {
		if !slices.Contains(pb, id) {
			t.Errorf("product %s lost its id when the affected list changed", id)
		}
	}
	if len(pb) != len(pa)+1 {
		t.Errorf("known_affected %d → %d products", len(pa), len(pb))
	}
	// The same input gives the same bytes.
	var x, y bytes.Buffer
	c, _ := Convert(full(), Options{})
	if err := Encode(&x, a); err != nil {
		t.Fatal(err)
	}
	if err := Encode(&y, c); err != nil {
		t.Fatal(err)
	}
	if x.String() != y.String() {
		t.Error("two conversions of one incident differ")
	}
	if !strings.Contains(x.String(), `"vers:generic/>=7.11|<7.16"`) {
		t.Error("Encode escaped < or >")
	}
}

func TestConvertRefuses(t *testing.T) {
	tests := []struct {
		name string
		inc  *phxv1.Incident
		opts Options
		want string
	}{
		{"nil", nil, Options{}, "no incident"},
		{"no id", with(minimal(), func(i *phxv1.Incident) { i.Id = "" }), Options{}, "no id"},
		{"no reporter", with(minimal(), func(i *phxv1.Incident) { i.Reporter = "" }), Options{}, "no reporter"},
		{"no audience", with(minimal(), func(i *phxv1.Incident) { i.Audience = nil }), Options{}, "no TLP label"},
		{"no TLP", with(minimal(), func(i *phxv1.Incident) { i.Audience.Tlp = phxv1.Tlp_TLP_UNSPECIFIED }), Options{}, "no TLP label"},
		{"no affected product", with(minimal(), func(i *phxv1.Incident) { i.Affected = []*phxv1.Affected{{VersionRange: "1"}} }), Options{}, "no affected product"},
		{"no times", with(minimal(), func(i *phxv1.Incident) { i.CreatedAt, i.UpdatedAt = nil, nil }), Options{}, "no times"},
		{"relative namespace", minimal(), Options{Namespace: "/org/contoso"}, "not an absolute http or https URL"},
		{"namespace with a space", minimal(), Options{Namespace: "https://contoso.example/a b"}, "not an absolute http or https URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Convert(tt.inc, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestVersionSteps(t *testing.T) {
	tests := []struct {
		in   string
		want []versionStep
	}{
		{"", nil},
		{"*", []versionStep{{"product_version_range", "vers:all/*", "all versions"}}},
		{"7.15.18", []versionStep{{"product_version", "7.15.18", "7.15.18"}}},
		{"=7.15.18", []versionStep{{"product_version", "7.15.18", "7.15.18"}}},
		{"7.15.18, 7.15.19 7.15.18", []versionStep{{"product_version", "7.15.18", "7.15.18"}, {"product_version", "7.15.19", "7.15.19"}}},
		{">=7.11 <7.16", []versionStep{{"product_version_range", "vers:generic/>=7.11|<7.16", ">=7.11 <7.16"}}},
		{"<7.16, >= 7.11", []versionStep{{"product_version_range", "vers:generic/>=7.11|<7.16", "<7.16, >= 7.11"}}},
		{"<7.9", []versionStep{{"product_version_range", "vers:generic/<7.9", "<7.9"}}},
		{">7.10 <=7.9.2", []versionStep{{"product_version_range", "vers:generic/<=7.9.2|>7.10", ">7.10 <=7.9.2"}}},
		{"6.2, >=7.0 <7.3", []versionStep{{"product_version_range", "vers:generic/6.2|>=7.0|<7.3", "6.2, >=7.0 <7.3"}}},
		{"7.*", []versionStep{{"product_version_range", "7.*", "7.*"}}},
		{">=", []versionStep{{"product_version_range", ">=", ">="}}},
	}
	for _, tt := range tests {
		if got := versionSteps(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("versionSteps(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	ordered := []string{"1", "1.0", "1.0.1", "1.2", "1.10", "1.10-rc1", "2", "10", "010.1", "a"}
	for i := range ordered {
		for j := range ordered {
			got := compareVersions(ordered[i], ordered[j])
			if (got < 0) != (i < j) || (got == 0) != (i == j) {
				t.Errorf("compareVersions(%q, %q) = %d", ordered[i], ordered[j], got)
			}
		}
	}
}
