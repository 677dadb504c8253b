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

// TestScrubLaterPasses covers texts where a candidate is refused because it
// is glued to text another finding covers, and stands alone once that
// finding is replaced: Scrub finds it in a second pass.
func TestScrubLaterPasses(t *testing.T) {
	cases := []struct {
		in   string
		want string
		fs   []Finding
	}{
		{"1.2.3.4..x.lan", "[redacted:ipv4]..[redacted:hostname]", []Finding{{IPv4, 0, 7}, {Hostname, 9, 14}}},
		{"zz-aa-bb-cc-dd-ee-ff-LAPTOP-AB12CD3", "zz-[redacted:mac]-[redacted:hostname]", []Finding{{MAC, 3, 20}, {Hostname, 21, 35}}},
		{`C:\Users\build 1.2.3.4`, `C:\Users\[redacted:user_path] [redacted:ipv4]`, []Finding{{UserPath, 9, 14}, {IPv4, 15, 22}}},
		{"hostname: version 1.2.3.4", "hostname: [redacted:hostname] [redacted:ipv4]", []Finding{{Hostname, 10, 17}, {IPv4, 18, 25}}},
		{"10.0.0.1:fe80::1", "[redacted:ipv4]:[redacted:ipv6]", []Finding{{IPv4, 0, 8}, {IPv6, 9, 16}}},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, fs := Scrub(c.in)
			if got != c.want || !slices.Equal(fs, c.fs) {
				t.Fatalf("Scrub(%q) = %q, %v; want %q, %v", c.in, got, fs, c.want, c.fs)
			}
			checkScrub(t, c.in)
		})
	}
}

func TestMapOffsets(t *testing.T) {
	// "ab" + [0,3)→"[redacted:ipv4]" at out 2..17 + "cd" + [5,6)→"[redacted:mac]"
	// at out 19..33 + "e": input "abXXXcdYe".
	in := "abXXXcdYe"
	out, pieces := apply(in, []Finding{{IPv4, 2, 5}, {MAC, 7, 8}})
	if out != "ab[redacted:ipv4]cd[redacted:mac]e" {
		t.Fatalf("apply = %q", out)
	}
	cases := []struct {
		out        int
		start, end int
	}{
		{0, 0, 0},
		{1, 1, 1},
		{2, 2, 2},  // a start at a replacement is its start; an end there ends before it
		{3, 2, 5},  // inside: the whole replaced span
		{16, 2, 5}, // last byte of the replacement
		{17, 5, 5}, // right after it
		{18, 6, 6}, // copied text
		{19, 7, 7}, // the second replacement
		{20, 7, 8}, // inside it
		{33, 8, 8}, // after it
		{34, 9, 9}, // the end of the text
	}
	for _, c := range cases {
		if s, e := mapStart(pieces, c.out), mapEnd(pieces, c.out); s != c.start || e != c.end {
			t.Errorf("offset %d maps to start %d, end %d; want %d, %d", c.out, s, e, c.start, c.end)
		}
	}
}
