package scrub

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Byte classes.
const (
	cDigit = 1 << iota // 0-9
	cHex               // 0-9 A-F a-f
	cAlpha             // A-Z a-z
	cWord              // A-Z a-z 0-9 _
	cHost              // A-Z a-z 0-9 . - _
	cV6                // 0-9 A-F a-f : .
	cLocal             // e-mail local part: A-Z a-z 0-9 . _ % + -
	cSpace             // ASCII white space
)

var class [256]uint8

func init() {
	for b := 0; b < 256; b++ {
		c := byte(b)
		var k uint8
		digit := c >= '0' && c <= '9'
		alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		hex := digit || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
		if digit {
			k |= cDigit
		}
		if hex {
			k |= cHex | cV6
		}
		if alpha {
			k |= cAlpha
		}
		if digit || alpha || c == '_' {
			k |= cWord | cHost | cLocal
		}
		switch c {
		case '.', '-':
			k |= cHost | cLocal
		case '%', '+':
			k |= cLocal
		case ':':
			k |= cV6
		case ' ', '\t', '\n', '\r', '\v', '\f':
			k |= cSpace
		}
		if c == '.' {
			k |= cV6
		}
		class[b] = k
	}
}

func is(b byte, c uint8) bool { return class[b]&c != 0 }

// scanner collects candidate findings; resolve merges them.
type scanner struct {
	s     string
	found []Finding
	// urls are the spans of scheme://... tokens, in order, for the user
	// path detector (paths inside web URLs are not user paths).
	urls []urlSpan
}

type urlSpan struct {
	start, end int
	file       bool
}

func (sc *scanner) add(k Kind, start, end int) {
	if start < end {
		sc.found = append(sc.found, Finding{Kind: k, Start: start, End: end})
	}
}

// gluedBefore reports whether b, the byte before a candidate, joins it to
// the text before: a letter, digit or '_', or the ']' that ends a
// replacement. Treating ']' so keeps Scrub idempotent: a candidate refused
// because the word before it was part of another finding is refused again
// once that finding reads [redacted:...].
func gluedBefore(b byte) bool { return is(b, cWord) || b == ']' }

// gluedAfter is gluedBefore for the byte after a candidate ('[' starts a
// replacement).
func gluedAfter(b byte) bool { return is(b, cWord) || b == '[' }

// hexBefore reports whether b, found one separator before a candidate,
// continues a longer hex sequence: a hex digit, or the end of a
// replacement (see gluedBefore).
func hexBefore(b byte) bool { return is(b, cHex) || b == ']' }

// hexAfter is hexBefore after a candidate.
func hexAfter(b byte) bool { return is(b, cHex) || b == '[' }

// at returns s[i], or 0 outside the text.
func (sc *scanner) at(i int) byte {
	if i < 0 || i >= len(sc.s) {
		return 0
	}
	return sc.s[i]
}

func (sc *scanner) scan() {
	s := sc.s
	if strings.Contains(s, "://") {
		sc.findURLs()
	}
	if strings.IndexByte(s, '@') >= 0 {
		sc.findAtSigns()
	}
	sc.findIPv4()
	if strings.IndexByte(s, ':') >= 0 {
		sc.findIPv6()
	}
	sc.findMACs()
	sc.findSIDs()
	sc.findGUIDs()
	sc.findUserPaths()
	sc.findHostRuns()
	if strings.Contains(s, `\\`) {
		sc.findUNC()
	}
	sc.findCues()
}

// ---- URLs with credentials ----

func isSchemeByte(b byte) bool { return is(b, cAlpha|cDigit) || b == '+' || b == '.' || b == '-' }

// isURLByte: a URL runs until white space, a control byte, a non-ASCII byte
// or one of < > " ` (which never occur unescaped in URLs).
func isURLByte(b byte) bool {
	return b > ' ' && b < 0x7f && b != '<' && b != '>' && b != '"' && b != '`'
}

// trimTail drops the punctuation that ends a sentence rather than a URL or
// a path.
func trimTail(s string, start, end int) int {
	for end > start && strings.IndexByte(".,;:!?)]}'*", s[end-1]) >= 0 {
		end--
	}
	return end
}

func (sc *scanner) findURLs() {
	s := sc.s
	from := 0
	for from < len(s) {
		k := strings.Index(s[from:], "://")
		if k < 0 {
			return
		}
		at := from + k
		from = at + 3
		b := at
		for b > 0 && isSchemeByte(s[b-1]) {
			b--
		}
		for b < at && !is(s[b], cAlpha) {
			b++
		}
		if b == at {
			continue
		}
		e := at + 3
		for e < len(s) && isURLByte(s[e]) {
			e++
		}
		e = trimTail(s, at+3, e)
		from = max(from, e)
		sc.urls = append(sc.urls, urlSpan{start: b, end: e, file: strings.EqualFold(s[b:at], "file")})
		// Userinfo ends at the last '@' before the path, query or fragment.
		last := -1
		for i := at + 3; i < e && s[i] != '/' && s[i] != '?' && s[i] != '#' && s[i] != '\\'; i++ {
			if s[i] == '@' {
				last = i
			}
		}
		if last > at+3 && last+1 < e {
			sc.add(URLCredentials, b, e)
		}
	}
}

// ---- e-mail addresses and user:password@host ----

// fileExts are name endings that make a@b.png a file name, not an address,
// and that a host name after a cue never has.
var fileExts = map[string]bool{
	"png": true, "jpg": true, "jpeg": true, "gif": true, "svg": true, "webp": true, "ico": true, "bmp": true,
	"exe": true, "dll": true, "sys": true, "drv": true, "ocx": true, "cpl": true, "efi": true, "mui": true,
	"json": true, "xml": true, "yaml": true, "yml": true, "txt": true, "log": true, "etl": true, "evtx": true,
	"dmp": true, "cab": true, "msi": true, "msix": true, "zip": true, "ps1": true, "bat": true, "cmd": true,
	"sh": true, "py": true, "go": true, "rs": true, "cpp": true, "h": true, "c": true, "js": true, "ts": true,
	"md": true, "html": true, "htm": true, "pdf": true, "csv": true, "ini": true, "conf": true, "cfg": true,
	"reg": true, "inf": true, "cat": true, "pdb": true, "so": true, "dylib": true, "kext": true, "pkg": true,
	"dmg": true, "deb": true, "rpm": true, "tar": true, "gz": true, "tgz": true, "bin": true, "dat": true,
	"db": true, "sqlite": true, "tmp": true, "bak": true, "old": true, "lock": true, "pem": true, "crt": true,
	"key": true, "cer": true, "pfx": true, "toml": true, "mod": true, "sum": true,
}

// domainEnd scans a domain name from i and returns its end, or -1 if there
// is none: labels of letters, digits and '-', at least two, the last
// alphabetic and at least two letters long.
func domainEnd(s string, i int) int {
	e := i
	for e < len(s) && (is(s[e], cAlpha|cDigit) || s[e] == '-' || s[e] == '.') {
		e++
	}
	for e > i && (s[e-1] == '.' || s[e-1] == '-') {
		e--
	}
	if e == i {
		return -1
	}
	d := s[i:e]
	labels := 0
	for l := range strings.SplitSeq(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' {
			return -1
		}
		labels++
	}
	if labels < 2 {
		return -1
	}
	tld := d[strings.LastIndexByte(d, '.')+1:]
	if len(tld) < 2 {
		return -1
	}
	for j := 0; j < len(tld); j++ {
		if !is(tld[j], cAlpha) {
			return -1
		}
	}
	return e
}

// schemeLike are URI schemes without "//" that put an address before '@'.
var schemeLike = []string{"mailto", "sip", "sips", "xmpp", "tel", "news"}

// labelWords introduce an e-mail address in prose ("Contact:jdoe@x.com"),
// not a user name with a password.
var labelWords = []string{"mail", "e-mail", "email", "contact", "from", "to", "cc", "bcc", "owner", "reporter",
	"author", "by", "reply-to", "sender", "recipient", "upn", "login", "address"}

// fileExt reports whether ext (any case) is in fileExts.
func fileExt(ext string) bool {
	if len(ext) > 8 {
		return false
	}
	var buf [8]byte
	for i := 0; i < len(ext); i++ {
		c := ext[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return fileExts[string(buf[:len(ext)])]
}

func (sc *scanner) findAtSigns() {
	s := sc.s
	prev := 0 // back scans never cross the previous '@'
	for a := 0; a < len(s); a++ {
		if s[a] != '@' {
			continue
		}
		floor := prev
		prev = a + 1
		// E-mail: local part, '@', domain.
		l := a
		for l > floor && is(s[l-1], cLocal) {
			l--
		}
		for l < a && s[l] == '.' {
			l++
		}
		email := false
		if l < a {
			if e := domainEnd(s, a+1); e > 0 && !fileExt(s[strings.LastIndexByte(s[:e], '.')+1:e]) {
				sc.add(Email, l, e)
				email = true
			}
		}
		// user:password@host without a scheme.
		t := a
		for t > floor && s[t-1] > ' ' && s[t-1] < 0x7f && strings.IndexByte(`/@"'<>()[]{}`+"`", s[t-1]) < 0 {
			t--
		}
		c := strings.IndexByte(s[t:a], ':')
		if c <= 0 || t+c+1 >= a || !is(s[t], cAlpha|cDigit) {
			continue
		}
		if inFold(s[t:t+c], schemeLike) || email && l == t+c+1 && inFold(s[t:t+c], labelWords) {
			continue // mailto:x@y, "e-mail:x@y.com"
		}
		h := a + 1
		if h < len(s) && s[h] == '[' {
			// [IPv6 literal], and nothing else in the brackets.
			r := h + 1
			for r < len(s) && r-h < 64 && is(s[r], cV6) {
				r++
			}
			if r > h+1 && sc.at(r) == '%' {
				for r++; r < len(s) && r-h < 64 && is(s[r], cWord); r++ {
				}
			}
			if r > h+1 && sc.at(r) == ']' {
				h = r + 1
			}
		} else {
			for h < len(s) && is(s[h], cHost) {
				h++
			}
		}
		for h > a+1 && (s[h-1] == '.' || s[h-1] == '-') {
			h--
		}
		if h == a+1 {
			continue
		}
		if h+1 < len(s) && s[h] == ':' && is(s[h+1], cDigit) {
			h++
			for h < len(s) && is(s[h], cDigit) {
				h++
			}
		}
		sc.add(URLCredentials, t, h)
	}
}

// ---- IPv4 ----

// versionCues are words after which a four-part number is a version.
var versionCues = []string{"version", "ver", "build", "release", "rev", "revision", "firmware"}

// afterWord reports whether the word before i (skipping up to three spaces,
// ':' or '=') is one of words.
func (sc *scanner) afterWord(i int, words []string) bool {
	s := sc.s
	j := i
	for n := 0; n < 3 && j > 0 && (s[j-1] == ' ' || s[j-1] == ':' || s[j-1] == '='); n++ {
		j--
	}
	if j == i {
		return false
	}
	w := j
	for w > 0 && j-w < 12 && is(s[w-1], cAlpha) {
		w--
	}
	if w > 0 && is(s[w-1], cWord) {
		return false
	}
	for _, c := range words {
		if strings.EqualFold(s[w:j], c) {
			return true
		}
	}
	return false
}

func (sc *scanner) findIPv4() {
	s := sc.s
	for i := 0; i < len(s); {
		if !is(s[i], cDigit) {
			i++
			continue
		}
		start, groups, ok := i, 0, true
		j := i
		for {
			k, v := j, 0
			for k < len(s) && is(s[k], cDigit) {
				if v <= 255 {
					v = v*10 + int(s[k]-'0')
				}
				k++
			}
			if k-j > 3 || v > 255 {
				ok = false
			}
			groups++
			if k+1 < len(s) && s[k] == '.' && is(s[k+1], cDigit) {
				j = k + 1
				continue
			}
			j = k
			break
		}
		i = j
		if !ok || groups != 4 {
			continue
		}
		if p := sc.at(start - 1); gluedBefore(p) || p == '.' || gluedAfter(sc.at(j)) {
			continue
		}
		if sc.afterWord(start, versionCues) {
			continue
		}
		sc.add(IPv4, start, j)
	}
}

// ---- IPv6 ----

func (sc *scanner) findIPv6() {
	s := sc.s
	for i := 0; i < len(s); {
		if !is(s[i], cV6) {
			i++
			continue
		}
		rs, colons := i, 0
		for i < len(s) && is(s[i], cV6) {
			if s[i] == ':' {
				colons++
			}
			i++
		}
		re := i
		if colons < 2 {
			continue
		}
		a, b := rs, re
		if s[a] == ':' && sc.at(a+1) != ':' {
			a++ // "IP:fe80::1": the first colon separates
		} else if p := sc.at(a - 1); gluedBefore(p) || p == '.' {
			continue
		}
		for b > a && s[b-1] == '.' {
			b--
		}
		if b-a >= 2 && s[b-1] == ':' && s[b-2] != ':' {
			b--
		}
		if b == re && gluedAfter(sc.at(b)) {
			continue
		}
		if !plausibleV6(s[a:b]) {
			continue
		}
		z := b
		if b == re && sc.at(b) == '%' {
			k := b + 1
			for k < len(s) && k-b <= 32 && is(s[k], cWord|cHost) {
				k++
			}
			if k > b+1 && !gluedAfter(sc.at(k)) {
				if addr, err := netip.ParseAddr(s[a:k]); err == nil && addr.Is6() {
					z = k
				}
			}
		}
		if z == b {
			if addr, err := netip.ParseAddr(s[a:b]); err != nil || !addr.Is6() {
				continue
			}
		}
		sc.add(IPv6, a, z)
	}
}

// plausibleV6 rules out runs that parse as IPv6 but are prose or code:
// no hex digit at all ("::"), more than 45 bytes, or no decimal digit with
// fewer than four groups (dead::beef, a::b).
func plausibleV6(c string) bool {
	if len(c) < 2 || len(c) > 45 {
		return false
	}
	hex, digit, groups := false, false, 0
	inGroup := false
	for i := 0; i < len(c); i++ {
		switch {
		case is(c[i], cDigit):
			digit, hex = true, true
			if !inGroup {
				groups++
				inGroup = true
			}
		case is(c[i], cHex):
			hex = true
			if !inGroup {
				groups++
				inGroup = true
			}
		default:
			inGroup = false
		}
	}
	return hex && (digit || groups >= 4)
}

// ---- MAC ----

func (sc *scanner) findMACs() {
	s := sc.s
	for i := 0; i+14 <= len(s); i++ {
		if !is(s[i], cHex) {
			continue
		}
		if p := sc.at(i - 1); gluedBefore(p) || (p == ':' || p == '-' || p == '.') && hexBefore(sc.at(i-2)) {
			continue
		}
		if e := macEnd(s, i); e > 0 {
			sc.add(MAC, i, e)
			i = e - 1
		}
	}
}

func hexRun(s string, i, n int) bool {
	if i+n > len(s) {
		return false
	}
	for j := i; j < i+n; j++ {
		if !is(s[j], cHex) {
			return false
		}
	}
	return true
}

// macEnd returns the end of a MAC address starting at i, or -1.
func macEnd(s string, i int) int {
	end := func(e int, sep byte) int {
		if e < len(s) && (gluedAfter(s[e]) || s[e] == sep && e+1 < len(s) && hexAfter(s[e+1])) {
			return -1
		}
		return e
	}
	if i+17 <= len(s) && (s[i+2] == ':' || s[i+2] == '-') {
		sep := s[i+2]
		for g := 0; g < 6; g++ {
			p := i + 3*g
			if !hexRun(s, p, 2) || g < 5 && s[p+2] != sep {
				return -1
			}
		}
		return end(i+17, sep)
	}
	if i+14 <= len(s) && s[i+4] == '.' && s[i+9] == '.' && hexRun(s, i, 4) && hexRun(s, i+5, 4) && hexRun(s, i+10, 4) {
		letter := false
		for _, c := range []byte(s[i : i+14]) {
			if is(c, cHex) && !is(c, cDigit) {
				letter = true
			}
		}
		if !letter {
			return -1
		}
		return end(i+14, '.')
	}
	return -1
}

// ---- SID ----

func (sc *scanner) findSIDs() {
	s := sc.s
	for i := 0; i+7 <= len(s); i++ {
		if s[i] != 'S' && s[i] != 's' || s[i+1:i+4] != "-1-" {
			continue
		}
		if p := sc.at(i - 1); gluedBefore(p) || p == '-' {
			continue
		}
		j, groups, ok := i+4, 0, true
		for {
			k := j
			for k < len(s) && is(s[k], cDigit) {
				k++
			}
			if k == j || k-j > 14 || groups > 0 && k-j > 10 {
				ok = false
				break
			}
			groups++
			j = k
			if groups > 16 || j+1 >= len(s) || s[j] != '-' || !is(s[j+1], cDigit) {
				break
			}
			j++
		}
		// groups counts the authority and its sub-authorities.
		if !ok || groups < 4 || groups > 16 || gluedAfter(sc.at(j)) || sc.at(j) == '-' && (is(sc.at(j+1), cDigit) || sc.at(j+1) == '[') {
			continue
		}
		sc.add(SID, i, j)
		i = j - 1
	}
}

// ---- GUID ----

func (sc *scanner) findGUIDs() {
	s := sc.s
	for i := 0; i+36 <= len(s); i++ {
		if s[i+8] != '-' || !is(s[i], cHex) {
			continue
		}
		if p := sc.at(i - 1); gluedBefore(p) || p == '-' && hexBefore(sc.at(i-2)) {
			continue
		}
		if !hexRun(s, i, 8) || !hexRun(s, i+9, 4) || s[i+13] != '-' || !hexRun(s, i+14, 4) || s[i+18] != '-' ||
			!hexRun(s, i+19, 4) || s[i+23] != '-' || !hexRun(s, i+24, 12) {
			continue
		}
		e := i + 36
		if n := sc.at(e); gluedAfter(n) || n == '-' && hexAfter(sc.at(e+1)) {
			continue
		}
		b := i
		if sc.at(i-1) == '{' && sc.at(e) == '}' {
			b, e = i-1, e+1
		}
		sc.add(GUID, b, e)
		i = e - 1
	}
}

// ---- user profile paths ----

// sharedProfiles are profile folders that belong to no person.
var sharedProfiles = []string{"public", "default", "default user", "defaultuser0", "all users", "shared", "guest", "defaultapppool"}

func isSep(b byte) bool { return b == '\\' || b == '/' }

func hasPrefixFold(s, p string) bool { return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) }

func (sc *scanner) findUserPaths() {
	s := sc.s
	u := 0 // next URL span to look at
	for i := 0; i < len(s); i++ {
		if !isSep(s[i]) || i > 0 && isSep(s[i-1]) {
			continue
		}
		j := i
		for j < len(s) && isSep(s[j]) {
			j++
		}
		rest := s[j:]
		var n int // length of the profile root word
		unix := false
		switch {
		case hasPrefixFold(rest, "users") && len(rest) > 5 && isSep(rest[5]):
			n = 5
			// /Users/ is macOS unless a drive or variable precedes it.
			unix = s[i] == '/' && sc.at(i-1) != ':' && sc.at(i-1) != '%'
		case hasPrefixFold(rest, "documents and settings") && len(rest) > 22 && isSep(rest[22]):
			n = 22
		case s[i] == '/' && strings.HasPrefix(rest, "home/"):
			n, unix = 4, true
		default:
			continue
		}
		for u < len(sc.urls) && sc.urls[u].end <= i {
			u++
		}
		if u < len(sc.urls) && sc.urls[u].start <= i && !sc.urls[u].file {
			continue
		}
		k := j + n
		for k < len(s) && isSep(s[k]) {
			k++
		}
		var e int
		if unix {
			e = unixName(s, k)
		} else {
			e = windowsName(s, k)
		}
		if e <= k {
			continue
		}
		name := s[k:e]
		if strings.Trim(name, ".") == "" || strings.IndexByte("%<*$~{[", name[0]) >= 0 {
			continue
		}
		shared := false
		for _, p := range sharedProfiles {
			if strings.EqualFold(name, p) {
				shared = true
			}
		}
		if !shared {
			sc.add(UserPath, k, e)
		}
	}
}

// unixName returns the end of a Linux or macOS user name at k.
func unixName(s string, k int) int {
	e := k
	for e < len(s) && e-k < 64 && (is(s[e], cHost) || s[e] == '@') {
		e++
	}
	for e > k && strings.IndexByte(".-@", s[e-1]) >= 0 {
		e--
	}
	return e
}

// windowsName returns the end of a Windows profile folder name at k. Names
// may hold spaces ("John Smith") only when the folder clearly goes on
// (C:\Users\John Smith\AppData); otherwise the name ends at the first space.
func windowsName(s string, k int) int {
	e, spaces, firstSpace := k, 0, -1
	for e < len(s) && e-k < 64 {
		r, w := utf8.DecodeRuneInString(s[e:])
		if r == utf8.RuneError && w <= 1 || r < ' ' || r == 0x7f || r < 0x80 && strings.IndexByte(`"/\[]:;|=,+*?<>`, byte(r)) >= 0 {
			break
		}
		if r == ' ' {
			if firstSpace < 0 {
				firstSpace = e
			}
			spaces++
		}
		if e+w-k > 64 {
			break
		}
		e += w
	}
	if firstSpace >= 0 {
		goesOn := e < len(s) && isSep(s[e]) && s[e-1] != ' ' && spaces <= 2 && !strings.Contains(s[k:e], "  ")
		if !goesOn {
			e = firstSpace
		}
	}
	for e > k && strings.IndexByte(".')!", s[e-1]) >= 0 {
		e--
	}
	return e
}
