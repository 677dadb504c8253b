package csaftest

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestExamplesAreValid proves the validator accepts known-good documents:
// the example advisories published with the schema.
func TestExamplesAreValid(t *testing.T) {
	for _, name := range []string{"bsi-2022-0001.json", "2022-evd-uc-01-a-001.json"} {
		t.Run(name, func(t *testing.T) {
			doc, err := Example(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(doc); err != nil {
				t.Errorf("a published example is refused: %v", err)
			}
		})
	}
}

// TestBrokenDocumentsAreRefused proves the validator rejects: each case
// breaks one rule of the schema in a known-good example.
func TestBrokenDocumentsAreRefused(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(doc map[string]any)
		want   string // a substring of the error
	}{
		{"no tracking", func(d map[string]any) { delete(doc(d), "tracking") }, "missing property 'tracking'"},
		{"CSAF 2.0", func(d map[string]any) { doc(d)["csaf_version"] = "2.0" }, "/document/csaf_version"},
		{"TLP 1 label", func(d map[string]any) { tlp(d)["label"] = "WHITE" }, "/document/distribution/tlp/label"},
		{"date without time", func(d map[string]any) { tracking(d)["current_release_date"] = "2022-03-17" }, "is not valid date-time"},
		{"version with a dot", func(d map[string]any) { tracking(d)["version"] = "1.0" }, "/document/tracking/version"},
		{"unknown status", func(d map[string]any) { tracking(d)["status"] = "published" }, "/document/tracking/status"},
		{"unknown property", func(d map[string]any) { doc(d)["severity"] = "high" }, "additional properties 'severity'"},
		{"empty revision history", func(d map[string]any) { tracking(d)["revision_history"] = []any{} }, "/document/tracking/revision_history"},
		{"remediation category of CSAF 1", func(d map[string]any) {
			d["vulnerabilities"].([]any)[0].(map[string]any)["remediations"] = []any{map[string]any{"category": "Vendor Fix", "details": "x", "product_ids": []any{"CSAFPID-0001"}}}
		}, "/vulnerabilities/0/remediations/0/category"},
		{"restart required as a boolean", func(d map[string]any) {
			d["vulnerabilities"].([]any)[0].(map[string]any)["remediations"] = []any{map[string]any{"category": "vendor_fix", "details": "x", "restart_required": true}}
		}, "/vulnerabilities/0/remediations/0/restart_required"},
		{"empty product status", func(d map[string]any) {
			d["vulnerabilities"].([]any)[0].(map[string]any)["product_status"] = map[string]any{}
		}, "/vulnerabilities/0/product_status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := Example("2022-evd-uc-01-a-001.json")
			if err != nil {
				t.Fatal(err)
			}
			var d map[string]any
			if err := json.Unmarshal(raw, &d); err != nil {
				t.Fatal(err)
			}
			tt.mutate(d)
			broken, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			err = Validate(broken)
			if err == nil {
				t.Fatal("a broken document passed")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not mention %q:\n%v", tt.want, err)
			}
		})
	}
	if err := Validate([]byte(`{"document": `)); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("truncated JSON: %v", err)
	}
}

func doc(d map[string]any) map[string]any      { return d["document"].(map[string]any) }
func tracking(d map[string]any) map[string]any { return doc(d)["tracking"].(map[string]any) }
func tlp(d map[string]any) map[string]any {
	return doc(d)["distribution"].(map[string]any)["tlp"].(map[string]any)
}
