// Package scrub removes personal and machine identifiers from the free text
// members send to the hub (incident titles, impact, posts, statements,
// remediation details; DESIGN.md section 8).
//
// Scrub finds e-mail addresses, IPv4 and IPv6 addresses, MAC addresses, user
// names in profile paths, Windows SIDs, GUIDs, host names and URLs that carry
// credentials, and replaces each with "[redacted:<kind>]". It reports what it
// replaced as kinds and byte offsets, never as the text itself, so findings
// can be logged and returned to callers.
//
// # Rules
//
// IPv4: four dot-separated decimal groups of one to three digits, each at
// most 255, standing alone: not preceded by a letter, digit, '_' or '.', not
// followed by a letter, digit or '_', and not part of a longer dot-number
// (so 10.0.22631.3880 and 1.2.3.4.5 are versions, never addresses). A
// four-part version whose parts are all at most 255 cannot be told from an
// address: 10.0.0.1, 5.1.2.3 and the like are treated as addresses unless the
// word right before them is version, ver, build, release, rev, revision or
// firmware (or they are glued to a letter, as in v5.1.2.3).
//
// IPv6: a run of hex digits, ':' and '.' with at least two colons that
// net/netip parses as an IPv6 address (compressed forms, ::ffff:1.2.3.4, an
// optional %zone), standing alone. "::" alone, C++ and Rust scopes
// (std::vector, crate::io) and hex-free or digit-free short runs
// (dead::beef) are not addresses.
//
// MAC: six two-digit hex groups separated by all ':' or all '-', or Cisco's
// three four-digit groups separated by '.' with at least one hex letter.
//
// SID: S-1-<authority>-<sub>... with at least three sub-authorities (domain,
// machine, Azure AD and service SIDs). Well-known SIDs with one or two
// sub-authorities (S-1-5-18, S-1-5-32-544) name no machine or person and are
// kept.
//
// GUID: 8-4-4-4-12 hex digits, with or without braces (braces are redacted
// with it).
//
// User paths: only the user name segment after \Users\, /Users/ (any case,
// after a drive, %SystemDrive% or nothing), \Documents and Settings\ and
// /home/ is redacted; the rest of the path stays readable:
// C:\Users\[redacted:user_path]\AppData. Placeholders (%USERNAME%, <user>,
// *, $USER) and profiles that belong to no person (Public, Default, Default
// User, All Users, Shared, Guest) are kept. Paths inside URLs without
// credentials (https://example.com/users/guide) are not user paths, except
// in file: URLs.
//
// Host names: a maximal run of letters, digits, '.', '-' and '_' is a host
// name when it contains a Windows default machine name (DESKTOP- or LAPTOP-
// and 7 random characters, WIN- and 11), an EC2 name (ip-10-0-0-1), ends
// in an internal suffix (.local, .localdomain, .lan, .corp, .internal,
// .intranet, .intra, .private, .home.arpa) or has an AD-style middle label
// (x.corp.example.com, x.ad.example.com, x.internal.example.com). The
// host of a UNC path (\\FILESRV01\share) is a host name, and so is the word
// after a cue: host, hostname, host name, computer (name), machine (name),
// device name, workstation, server and endpoint ("on host FINANCE-PC07",
// "Host Name . . . : FIN-WS-042"). After a cue the word must look like a
// host: it has a digit, or a hyphen or underscore next to an upper-case
// letter or digit, or is a dotted name, or is at least three upper-case
// letters, or follows ':' or '=' or stands in quotes; common words,
// acronyms (OS, CPU, TPM), architectures (x64), bugcheck codes and file
// names are not host names. A host name directly followed by \<name> (as in
// DESKTOP-7F3K2LQ\jdoe) is redacted together with the account name. Public
// domains and file and module names (learn.microsoft.com, csagent.sys,
// ntoskrnl.exe) are kept.
//
// URL credentials: a URL scheme://user[:password]@host... is redacted whole,
// and so is user:password@host without a scheme.
//
// Overlapping findings are merged into one whose kind is that of the
// longest (ties go to the more specific kind, in the order of Kinds): a URL
// with credentials and an IP in it is one url_credentials finding, an e-mail
// address is not also a host name.
//
// # Known limits
//
// Bare NetBIOS names without a cue (FINANCE-PC07 alone), DOMAIN\user account
// names without a detected host, tenant domains (contoso.onmicrosoft.com),
// MAC addresses without separators, user names in URL paths and four-part
// versions that look like IPv4 addresses (see above) are not told apart from
// ordinary text.
//
// # Cost
//
// Scrub runs in time linear in the length of its input: every detector
// either skips past the run it examined or looks at a bounded window around
// an anchor byte, and no regular expression is used. A text with findings is
// scanned again after replacement to make sure nothing is left (a detector
// that refused a candidate glued to another finding may accept it once that
// finding is replaced); there are at most four passes. Texts are at most
// 8 KiB at the hub.
package scrub

import (
	"cmp"
	"slices"
	"strings"
)

// Kind names what a finding is.
type Kind string

// The kinds of findings.
const (
	// URLCredentials is a URL (or user:password@host) that carries
	// credentials; the whole URL is redacted.
	URLCredentials Kind = "url_credentials"
	// Email is an e-mail address.
	Email Kind = "email"
	// UserPath is the user name segment of a profile path.
	UserPath Kind = "user_path"
	// SID is a Windows security identifier of a domain, machine or account.
	SID Kind = "sid"
	// GUID is a GUID, with its braces if it has them.
	GUID Kind = "guid"
	// MAC is a MAC address.
	MAC Kind = "mac"
	// IPv6 is an IPv6 address, with its zone if it has one.
	IPv6 Kind = "ipv6"
	// IPv4 is an IPv4 address.
	IPv4 Kind = "ipv4"
	// Hostname is a host or machine name.
	Hostname Kind = "hostname"
)

// Kinds lists every kind, most specific first: when two overlapping findings
// have the same length, the one earlier in this list names the merged
// finding.
var Kinds = []Kind{URLCredentials, Email, UserPath, SID, GUID, MAC, IPv6, IPv4, Hostname}

func (k Kind) rank() int {
	for i, x := range Kinds {
		if x == k {
			return i
		}
	}
	return len(Kinds)
}

// Replacement is the text that replaces a finding of kind k:
// "[redacted:<kind>]".
func (k Kind) Replacement() string { return "[redacted:" + string(k) + "]" }

// Finding is one redacted span of the input: its kind and its byte offsets
// [Start, End) in the text given to Scrub. It never holds the text itself.
type Finding struct {
	Kind  Kind `json:"kind"`
	Start int  `json:"start"`
	End   int  `json:"end"`
}

// Scrub returns text with every finding replaced by its kind's Replacement,
// and the findings in order of their offsets. A text without findings is
// returned as it is, with nil findings. Scrub is deterministic and
// idempotent: scrubbing its output finds nothing. Valid UTF-8 stays valid:
// findings start and end on rune boundaries.
func Scrub(text string) (string, []Finding) {
	return scrub(text)
}

// Find returns what Scrub would redact in text, in order of offsets, without
// changing it. Findings do not overlap.
func Find(text string) []Finding {
	_, fs := scrub(text)
	return fs
}

// maxPasses bounds the passes of scrub.
const maxPasses = 4

// scrub finds and replaces until the output has nothing left to find.
// Detectors look at the bytes around a candidate, and a replacement changes
// them: a candidate refused because it was glued to text that another
// finding covered may stand alone once that text reads [redacted:...]. Such
// a finding of a later pass is mapped back to the input (a replacement it
// touches maps to the whole finding it replaced) and merged, and the text is
// scrubbed again. Each pass covers more of the input; passes after the first
// are rare, and there are at most maxPasses.
func scrub(text string) (string, []Finding) {
	fs := find(text)
	if len(fs) == 0 {
		return text, nil
	}
	out, pieces := apply(text, fs)
	for pass := 1; pass < maxPasses; pass++ {
		more := find(out)
		if len(more) == 0 {
			break
		}
		for i, f := range more {
			more[i] = Finding{Kind: f.Kind, Start: mapStart(pieces, f.Start), End: mapEnd(pieces, f.End)}
		}
		fs = resolve(append(fs, more...))
		out, pieces = apply(text, fs)
	}
	return out, fs
}

// find runs every detector once and merges what they found.
func find(text string) []Finding {
	if text == "" {
		return nil
	}
	sc := &scanner{s: text}
	sc.scan()
	return resolve(sc.found)
}

// piece is where a replacement stands in the output and what it replaced
// in the input.
type piece struct{ outStart, outEnd, inStart, inEnd int }

// apply replaces fs (ordered, disjoint) in text.
func apply(text string, fs []Finding) (string, []piece) {
	var b strings.Builder
	b.Grow(len(text) + 8*len(fs))
	pieces := make([]piece, 0, len(fs))
	at := 0
	for _, f := range fs {
		b.WriteString(text[at:f.Start])
		start := b.Len()
		b.WriteString(f.Kind.Replacement())
		pieces = append(pieces, piece{start, b.Len(), f.Start, f.End})
		at = f.End
	}
	b.WriteString(text[at:])
	return b.String(), pieces
}

// mapStart maps the start offset p in the output to the input: a start
// inside a replacement maps to the start of what it replaced.
func mapStart(pieces []piece, p int) int {
	i, _ := slices.BinarySearchFunc(pieces, p, func(x piece, p int) int {
		if x.outEnd > p {
			return 1
		}
		return -1
	})
	if i < len(pieces) && pieces[i].outStart <= p {
		return pieces[i].inStart
	}
	if i == 0 {
		return p
	}
	return p - pieces[i-1].outEnd + pieces[i-1].inEnd
}

// mapEnd maps the end offset p in the output to the input: an end inside a
// replacement maps to the end of what it replaced.
func mapEnd(pieces []piece, p int) int {
	i, _ := slices.BinarySearchFunc(pieces, p, func(x piece, p int) int {
		if x.outEnd >= p {
			return 1
		}
		return -1
	})
	if i < len(pieces) && pieces[i].outStart < p {
		return pieces[i].inEnd
	}
	if i == 0 {
		return p
	}
	return p - pieces[i-1].outEnd + pieces[i-1].inEnd
}

// resolve merges overlapping candidates: the merged span is their union and
// its kind is that of the longest candidate (ties: the more specific kind).
func resolve(c []Finding) []Finding {
	if len(c) == 0 {
		return nil
	}
	slices.SortFunc(c, func(a, b Finding) int {
		if d := cmp.Compare(a.Start, b.Start); d != 0 {
			return d
		}
		return cmp.Compare(b.End, a.End)
	})
	better := func(a, b Finding) bool {
		la, lb := a.End-a.Start, b.End-b.Start
		if la != lb {
			return la > lb
		}
		return a.Kind.rank() < b.Kind.rank()
	}
	out := make([]Finding, 0, len(c))
	cur, best := c[0], c[0]
	for _, x := range c[1:] {
		if x.Start < cur.End {
			cur.End = max(cur.End, x.End)
			if better(x, best) {
				best = x
			}
			continue
		}
		out = append(out, Finding{Kind: best.Kind, Start: cur.Start, End: cur.End})
		cur, best = x, x
	}
	return append(out, Finding{Kind: best.Kind, Start: cur.Start, End: cur.End})
}

// FieldFinding is a finding in one named field of a message.
type FieldFinding struct {
	// Field is the name the caller gave the field, e.g. "title" or
	// "remediations[2].details".
	Field string `json:"field"`
	Finding
}

// ScrubFields scrubs every non-nil string in fields in place (the map's
// values point at the fields of a message) and returns the findings, sorted
// by field name and then offset. The offsets are those of the field's text
// before scrubbing. A nil or empty map finds nothing.
//
//	fs := scrub.ScrubFields(map[string]*string{
//		"title":  &in.Title,
//		"impact": &in.Impact,
//	})
func ScrubFields(fields map[string]*string) []FieldFinding {
	names := make([]string, 0, len(fields))
	for name, p := range fields {
		if p != nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var out []FieldFinding
	for _, name := range names {
		p := fields[name]
		var fs []Finding
		*p, fs = Scrub(*p)
		for _, f := range fs {
			out = append(out, FieldFinding{Field: name, Finding: f})
		}
	}
	return out
}
