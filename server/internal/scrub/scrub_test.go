package scrub

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestFindOffsets(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []Finding
	}{
		{"none", "bugcheck 0x50 on 10.0.22631.3880", nil},
		{"empty", "", nil},
		{"ipv4", "at 10.1.2.3.", []Finding{{IPv4, 3, 11}}},
		{"user name only", `C:\Users\jdoe\x`, []Finding{{UserPath, 9, 13}}},
		{"url with an ip is one finding", "see https://a:b@10.0.0.5/x now", []Finding{{URLCredentials, 4, 26}}},
		{"an e-mail is not also a host name", "mail jdoe@srv.corp.local", []Finding{{Email, 5, 24}}},
		{"mapped ipv6 is not also ipv4", "::ffff:1.2.3.4", []Finding{{IPv6, 0, 14}}},
		{"unc host that is an ip", `\\10.0.0.7\c$`, []Finding{{IPv4, 2, 10}}},
		{"guid braces", "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}", []Finding{{GUID, 0, 38}}},
		{"host and account", `DESKTOP-7F3K2LQ\jdoe signed in`, []Finding{{Hostname, 0, 20}}},
		{"two kinds in order", "10.0.0.1 00:1a:2b:3c:4d:5e", []Finding{{IPv4, 0, 8}, {MAC, 9, 26}}},
		{"multi-byte text before", "Zürich: 10.0.0.1", []Finding{{IPv4, 9, 17}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Find(c.in); !slices.Equal(got, c.want) {
				t.Fatalf("Find(%q) = %v, want %v", c.in, got, c.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	cases := []struct {
		name string
		in   []Finding
		want []Finding
	}{
		{"disjoint stay apart", []Finding{{IPv4, 5, 9}, {Email, 0, 4}}, []Finding{{Email, 0, 4}, {IPv4, 5, 9}}},
		{"touching stay apart", []Finding{{IPv4, 0, 4}, {MAC, 4, 8}}, []Finding{{IPv4, 0, 4}, {MAC, 4, 8}}},
		{"contained: the longer names it", []Finding{{Hostname, 3, 8}, {Email, 0, 10}}, []Finding{{Email, 0, 10}}},
		{"partial overlap: union, longest kind", []Finding{{IPv4, 0, 6}, {Hostname, 4, 12}}, []Finding{{Hostname, 0, 12}}},
		{"same span: the more specific kind", []Finding{{Hostname, 2, 9}, {IPv4, 2, 9}}, []Finding{{IPv4, 2, 9}}},
		{"chain", []Finding{{IPv4, 0, 4}, {MAC, 3, 7}, {GUID, 6, 20}}, []Finding{{GUID, 0, 20}}},
		{"duplicates", []Finding{{SID, 1, 5}, {SID, 1, 5}}, []Finding{{SID, 1, 5}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := resolve(slices.Clone(c.in)); !slices.Equal(got, c.want) {
				t.Fatalf("resolve(%v) = %v, want %v", c.in, got, c.want)
			}
		})
	}
}

func TestScrubFields(t *testing.T) {
	title := "Boot loop on DESKTOP-7F3K2LQ"
	impact := "8,500 devices on 10.0.22631.3880"
	post := "ask jdoe@contoso.com or 10.0.0.9"
	got := ScrubFields(map[string]*string{
		"title":                   &title,
		"impact":                  &impact,
		"remediations[0].details": &post,
		"missing":                 nil,
	})
	want := []FieldFinding{
		{"remediations[0].details", Finding{Email, 4, 20}},
		{"remediations[0].details", Finding{IPv4, 24, 32}},
		{"title", Finding{Hostname, 13, 28}},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ScrubFields = %v, want %v", got, want)
	}
	for _, c := range []struct{ got, want string }{
		{title, "Boot loop on [redacted:hostname]"},
		{impact, "8,500 devices on 10.0.22631.3880"},
		{post, "ask [redacted:email] or [redacted:ipv4]"},
	} {
		if c.got != c.want {
			t.Errorf("scrubbed field %q, want %q", c.got, c.want)
		}
	}
	if fs := ScrubFields(nil); fs != nil {
		t.Fatalf("ScrubFields(nil) = %v", fs)
	}
}

// TestFindingsHoldNoText checks that a finding, as logged or returned to a
// caller, carries offsets and a kind but never the redacted value.
func TestFindingsHoldNoText(t *testing.T) {
	secret := "jdoe@contoso.com"
	_, fs := Scrub("mail " + secret)
	b, err := json.Marshal(fs)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "jdoe") {
		t.Fatalf("findings %s hold the redacted text", b)
	}
	if want := `[{"kind":"email","start":5,"end":21}]`; string(b) != want {
		t.Fatalf("findings encode as %s, want %s", b, want)
	}
}

func TestReplacement(t *testing.T) {
	for _, k := range Kinds {
		if got, want := k.Replacement(), "[redacted:"+string(k)+"]"; got != want {
			t.Errorf("%s.Replacement() = %q, want %q", k, got, want)
		}
	}
}
