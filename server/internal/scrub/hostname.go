package scrub

import (
	"strings"
)

// internalSuffixes end host names that only exist inside an organization.
var internalSuffixes = []string{"local", "localdomain", "lan", "corp", "internal", "intranet", "intra", "private"}

// adLabels are middle labels of AD-style names (x.corp.example.com).
var adLabels = []string{"corp", "ad", "internal", "intranet"}

// oneCase reports whether the letters of s are all lower case or all upper
// case, and whether it has a letter at all. Host names in prose are written
// like that; CamelCase marks code (System.Internal.Foo).
func oneCase(s string) (ok, letters bool) {
	lower, upper := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z':
			lower = true
		case c >= 'A' && c <= 'Z':
			upper = true
		}
	}
	return !(lower && upper), lower || upper
}

func inFold(s string, list []string) bool {
	for _, x := range list {
		if strings.EqualFold(s, x) {
			return true
		}
	}
	return false
}

// defaultMachineName reports whether label is a Windows default computer
// name: DESKTOP- or LAPTOP- and 7 characters, or WIN- and 11, the random
// part upper-case letters and digits (or lower case with a digit, as in a
// lower-cased FQDN).
func defaultMachineName(label string) bool {
	var rnd string
	switch {
	case len(label) == 15 && hasPrefixFold(label, "DESKTOP-"):
		rnd = label[8:]
	case len(label) == 14 && hasPrefixFold(label, "LAPTOP-"):
		rnd = label[7:]
	case len(label) == 15 && hasPrefixFold(label, "WIN-"):
		rnd = label[4:]
	default:
		return false
	}
	upper, lower, digit := 0, 0, 0
	for i := 0; i < len(rnd); i++ {
		switch c := rnd[i]; {
		case c >= 'A' && c <= 'Z':
			upper++
		case c >= 'a' && c <= 'z':
			lower++
		case c >= '0' && c <= '9':
			digit++
		default:
			return false
		}
	}
	return lower == 0 || upper == 0 && digit > 0
}

// ec2Name reports whether label is an EC2 host name: ip-a-b-c-d.
func ec2Name(label string) bool {
	if !hasPrefixFold(label, "ip-") {
		return false
	}
	parts, v, digits := 0, 0, 0
	for i := 3; i <= len(label); i++ {
		if i == len(label) || label[i] == '-' {
			if digits == 0 || digits > 3 || v > 255 {
				return false
			}
			parts, v, digits = parts+1, 0, 0
			continue
		}
		if !is(label[i], cDigit) {
			return false
		}
		v, digits = v*10+int(label[i]-'0'), digits+1
	}
	return parts == 4
}

// internalHost reports whether the dotted name h is a host name by its
// form: a default machine name or EC2 name in it, an internal suffix or an
// AD-style middle label.
func internalHost(h string) bool {
	if strings.IndexByte(h, '.') < 0 && strings.IndexByte(h, '-') < 0 {
		return false
	}
	var starts [128]int
	n, start := 0, 0
	for i := 0; i <= len(h); i++ {
		if i < len(h) && h[i] != '.' {
			continue
		}
		l := h[start:i]
		if l == "" || len(l) > 63 || n == len(starts) {
			return false
		}
		if defaultMachineName(l) || ec2Name(l) {
			return true
		}
		starts[n], n, start = start, n+1, i+1
	}
	label := func(k int) string {
		end := len(h)
		if k+1 < n {
			end = starts[k+1] - 1
		}
		return h[starts[k]:end]
	}
	if n < 2 {
		return false
	}
	last := label(n - 1)
	if c, _ := oneCase(last); !c {
		return false
	}
	if inFold(last, internalSuffixes) || n >= 3 && strings.EqualFold(label(n-2), "home") && strings.EqualFold(last, "arpa") {
		return true
	}
	if n < 3 || fileExt(last) {
		return false
	}
	for _, c := range []byte(last) {
		if !is(c, cAlpha) {
			return false
		}
	}
	for k := 1; k < n-1; k++ {
		if l := label(k); len(l) <= 8 {
			if c, _ := oneCase(l); c && inFold(l, adLabels) {
				return true
			}
		}
	}
	return false
}

// trimHost drops the dots and hyphens before a run and the dots, hyphens
// and underscores after it (SRV names start with '_').
func trimHost(s string, a, b int) (int, int) {
	for a < b && strings.IndexByte(".-", s[a]) >= 0 {
		a++
	}
	for b > a && strings.IndexByte(".-_", s[b-1]) >= 0 {
		b--
	}
	return a, b
}

// accountEnd returns the end of a \name account after a host name ending at
// e (DESKTOP-7F3K2LQ\jdoe), or e when none follows. A name followed by a
// path separator is a share or folder, not an account.
func (sc *scanner) accountEnd(e int) int {
	s := sc.s
	if sc.at(e) != '\\' || sc.at(e+1) == '\\' {
		return e
	}
	k := e + 1
	for k < len(s) && k-e <= 64 && is(s[k], cHost) {
		k++
	}
	for k > e+1 && s[k-1] == '.' {
		k--
	}
	if k == e+1 || k-e > 64 {
		return e
	}
	if n := sc.at(k); isSep(n) || n == '$' || n == ':' || n == '@' || is(n, cHost) {
		return e
	}
	return k
}

func (sc *scanner) findHostRuns() {
	s := sc.s
	for i := 0; i < len(s); {
		if !is(s[i], cHost) {
			i++
			continue
		}
		j := i
		for j < len(s) && is(s[j], cHost) {
			j++
		}
		a, b := trimHost(s, i, j)
		i = j
		if b-a < 4 || b-a > 253 {
			continue
		}
		if internalHost(s[a:b]) {
			e := b
			if p := sc.at(a - 1); p != '\\' && p != '/' && p != '@' {
				e = sc.accountEnd(b)
			}
			sc.add(Hostname, a, e)
		}
	}
}

// findUNC redacts the host of \\host\share paths (and of their JSON-escaped
// form \\\\host\\share).
func (sc *scanner) findUNC() {
	s := sc.s
	for i := 0; i+2 < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		j := i
		for j < len(s) && s[j] == '\\' {
			j++
		}
		run := j - i
		start := i
		i = j - 1
		if run != 2 && run != 4 {
			continue
		}
		// A UNC path starts a token: C:\\Windows (JSON-escaped) and
		// x\\y are not UNC paths.
		if p := sc.at(start - 1); p != 0 && !is(p, cSpace) && strings.IndexByte("\"'`([{<=,;>", p) < 0 {
			continue
		}
		e := j
		for e < len(s) && e-j <= 253 && is(s[e], cHost) {
			e++
		}
		a, b := j, e
		for b > a && s[b-1] == '.' {
			b--
		}
		if b == a || strings.Trim(s[a:b], ".") == "" || strings.EqualFold(s[a:b], "localhost") {
			continue
		}
		if n := sc.at(e); n == '$' || is(n, cHost) {
			continue
		}
		sc.add(Hostname, a, b)
	}
}

// Cue words: the word after them names a machine.
var (
	cueWords = []string{"host", "hostname", "computer", "computername", "machine", "machinename",
		"devicename", "workstation", "server", "servername", "endpoint"}
	// cueWithName become cues with "name" after them (host name,
	// device_name); "device" alone is not a cue.
	cueWithName = []string{"host", "computer", "machine", "device", "server"}
	// cueFillers may stand between a cue and the name.
	cueFillers = []string{"is", "was", "named", "called"}
)

// notHosts are words that follow a cue without being a host name.
var notHosts = map[string]bool{
	// acronyms and hardware
	"os": true, "cpu": true, "gpu": true, "ram": true, "vm": true, "vms": true, "pc": true, "bios": true,
	"uefi": true, "ip": true, "tpm": true, "nic": true, "dns": true, "api": true, "oem": true, "sid": true,
	"guid": true, "uuid": true, "mac": true, "id": true, "fqdn": true, "netbios": true, "name": true,
	"utc": true, "ssd": true, "hdd": true, "nvme": true, "usb": true, "smb": true, "rdp": true, "ssh": true,
	"http": true, "https": true, "tls": true, "ssl": true, "url": true, "kb": true, "cve": true, "edr": true,
	"av": true, "xdr": true, "mdm": true, "gpo": true, "ad": true, "aad": true, "dc": true, "hyper-v": true,
	"ipv4": true, "ipv6": true, "ntfs": true, "wmi": true, "etw": true, "elam": true, "vbs": true, "hvci": true,
	"x64": true, "x86": true, "x86_64": true, "arm64": true, "amd64": true, "aarch64": true, "ia64": true,
	"win32": true, "win64": true, "win10": true, "win11": true, "win7": true, "win8": true, "2fa": true,
	"n/a": true, "na": true, "none": true, "null": true, "nil": true, "unknown": true, "tbd": true,
	"and": true, "or": true, "not": true, "the": true, "a": true, "an": true, "this": true, "that": true,
	"its": true, "it": true, "to": true, "in": true, "on": true, "of": true, "for": true, "with": true,
	"was": true, "is": true, "are": true, "be": true, "redacted": true, "same": true, "other": true,
	"each": true, "any": true, "every": true, "all": true, "no": true,
}

// hostAfterCue reports whether tok, the word after a cue, is a host name.
// explicit is set when a ':' or '=' or quotes introduced it.
func hostAfterCue(tok string, explicit bool) bool {
	if tok == "" || len(tok) > 253 {
		return false
	}
	lower := strings.ToLower(tok)
	if notHosts[lower] {
		return false
	}
	digit, letter, upper, sep, dot := false, false, false, false, false
	for i := 0; i < len(tok); i++ {
		switch c := tok[i]; {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'A' && c <= 'Z':
			letter, upper = true, true
		case c >= 'a' && c <= 'z':
			letter = true
		case c == '-' || c == '_':
			sep = true
		case c == '.':
			dot = true
		}
	}
	if !letter {
		return false // numbers, versions and addresses are someone else's
	}
	// Bugcheck codes, versions, KB and CVE ids.
	if strings.HasPrefix(lower, "0x") || strings.HasPrefix(lower, "kb") && digitsOnly(lower[2:]) ||
		strings.HasPrefix(lower, "cve-") || lower[0] == 'v' && len(lower) > 1 && is(lower[1], cDigit) && strings.Trim(lower[1:], "0123456789.") == "" {
		return false
	}
	if dot {
		labels := strings.Split(tok, ".")
		for _, l := range labels {
			if l == "" {
				return false
			}
		}
		last := labels[len(labels)-1]
		if fileExt(last) {
			return false
		}
		if c, _ := oneCase(last); !c {
			return false
		}
		return true
	}
	switch {
	case digit:
		return true
	case sep && upper:
		return true
	case !sep && !digit && strings.ToUpper(tok) == tok && len(tok) >= 3:
		return true
	}
	return explicit
}

func digitsOnly(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !is(s[i], cDigit) {
			return false
		}
	}
	return true
}

// findCues redacts the word after a cue such as "host" or "computer name".
func (sc *scanner) findCues() {
	s := sc.s
	for i := 0; i < len(s); {
		if !is(s[i], cAlpha) {
			i++
			continue
		}
		w := i
		for i < len(s) && is(s[i], cAlpha) {
			i++
		}
		if p := sc.at(w - 1); gluedBefore(p) || p != 0 && strings.IndexByte("-./\\$%@", p) >= 0 {
			continue
		}
		word := s[w:i]
		if len(word) < 4 || len(word) > 12 || strings.IndexByte("hcmdwseHCMDWSE", word[0]) < 0 {
			continue
		}
		end := -1
		if inFold(word, cueWithName) {
			k := i
			if k < len(s) && (s[k] == ' ' || s[k] == '_' || s[k] == '-') {
				k++
			}
			if hasPrefixFold(s[k:], "name") && !is(sc.at(k+4), cWord) {
				end = k + 4
			}
		}
		if end < 0 && inFold(word, cueWords) {
			end = i
		}
		if end < 0 {
			continue
		}
		sc.cue(end)
	}
}

// cue looks at the name after a cue word ending at e.
func (sc *scanner) cue(e int) {
	s := sc.s
	k, explicit := e, false
	var quote byte
	skipSeps := func() {
		for n := 0; k < len(s) && n < 48 && strings.IndexByte(" \t:=#'\"`(.", s[k]) >= 0; n++ {
			switch s[k] {
			case ':', '=':
				explicit = true
			case '\'', '"', '`':
				quote = s[k]
			}
			k++
		}
	}
	skipSeps()
	if k == e {
		return // the cue is part of a longer token (host-based, host_id)
	}
	// A quoted name may hold spaces: device name "Front Desk".
	if quote != 0 && k-1 > e && s[k-1] == quote {
		q := k
		for q < len(s) && q-k <= 64 && (is(s[q], cHost) || s[q] == ' ') {
			q++
		}
		if q < len(s) && s[q] == quote {
			if a, b := trimHost(s, k, q); a == k && b == q && !notHosts[strings.ToLower(s[a:b])] && s[b-1] != ' ' {
				sc.add(Hostname, a, b)
			}
			return
		}
	}
	// One filler word: "the hostname is X", "a machine named X".
	f := k
	for f < len(s) && is(s[f], cAlpha) {
		f++
	}
	if f < len(s) && s[f] == ' ' && inFold(s[k:f], cueFillers) {
		k = f
		skipSeps()
	}
	t := k
	for t < len(s) && t-k <= 253 && is(s[t], cHost) {
		t++
	}
	a, b := trimHost(s, k, t)
	if a != k || b == a {
		return
	}
	if quote != 0 && sc.at(b) == quote {
		explicit = true
	}
	if !hostAfterCue(s[a:b], explicit) {
		return
	}
	if sc.at(b) == '/' && is(sc.at(b+1), cDigit) {
		return // software and its version: "Server: nginx/1.25.3"
	}
	if sc.at(b) == '$' && !is(sc.at(b+1), cWord) {
		b++ // machine account FINANCE-PC07$
	}
	sc.add(Hostname, a, sc.accountEnd(b))
}
