package scrub

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// checkScrub asserts every property Scrub promises for one input.
func checkScrub(t *testing.T, in string) {
	t.Helper()
	out, fs := Scrub(in)
	valid := utf8.ValidString(in)
	if valid && !utf8.ValidString(out) {
		t.Fatalf("Scrub(%q) = %q: not valid UTF-8", in, out)
	}
	end := 0
	var b strings.Builder
	for i, f := range fs {
		if f.Start < end || f.End <= f.Start || f.End > len(in) {
			t.Fatalf("Scrub(%q): finding %d %+v out of order or range (previous end %d)", in, i, f, end)
		}
		if !slices.Contains(Kinds, f.Kind) {
			t.Fatalf("Scrub(%q): finding %d has unknown kind %q", in, i, f.Kind)
		}
		if valid && (!utf8.RuneStart(in[f.Start]) || f.End < len(in) && !utf8.RuneStart(in[f.End])) {
			t.Fatalf("Scrub(%q): finding %d %+v splits a rune", in, i, f)
		}
		b.WriteString(in[end:f.Start])
		b.WriteString(f.Kind.Replacement())
		end = f.End
	}
	b.WriteString(in[end:])
	if b.String() != out {
		t.Fatalf("Scrub(%q) = %q; its findings %v make %q", in, out, fs, b.String())
	}
	if len(fs) == 0 && out != in {
		t.Fatalf("Scrub(%q) changed the text without findings: %q", in, out)
	}
	if again := Find(out); again != nil {
		t.Fatalf("Scrub(%q) = %q, which still holds %v: %q", in, out, again, out[again[0].Start:again[0].End])
	}
	if out2, fs2 := Scrub(in); out2 != out || !slices.Equal(fs2, fs) {
		t.Fatalf("Scrub(%q) is not deterministic", in)
	}
}

// hostile are inputs built to make a careless scanner rescan: long runs of
// the bytes detectors anchor on.
func hostile(n int) map[string]string {
	rep := func(s string) string { return strings.Repeat(s, n/len(s)+1)[:n] }
	return map[string]string{
		"digits and dots":     rep("1."),
		"octets":              rep("255.255.255.255."),
		"at signs":            rep("a@"),
		"local parts":         rep("aaaaaaaa.") + "@" + rep("b."),
		"colons":              rep(":"),
		"hex and colons":      rep("a:"),
		"double colons":       rep("1::"),
		"mac groups":          rep("aa:"),
		"cisco groups":        rep("aaaa."),
		"sid groups":          rep("S-1-5-21-"),
		"guid groups":         rep("aaaaaaaa-aaaa-"),
		"backslashes":         rep(`\`),
		"unc hosts":           rep(`\\a`),
		"user paths":          rep(`C:\Users\`),
		"home paths":          rep("/home/"),
		"schemes":             rep("://"),
		"urls":                rep("a://b:c@"),
		"credentials":         rep("a:b@"),
		"cues":                rep("host "),
		"cues and separators": rep("host : . "),
		"host runs":           rep("a-"),
		"one long word":       rep("a"),
		"zones":               rep("fe80::1%"),
		"quotes after cues":   rep(`host "a `),
	}
}

func TestScrubProperties(t *testing.T) {
	var ins []string
	for _, c := range positives {
		ins = append(ins, c.in)
	}
	ins = append(ins, lookalikes...)
	for _, h := range hostile(3000) {
		ins = append(ins, h)
	}
	ins = append(ins, "", "\xff\xfe", "C:\\Users\\j\xffdoe\\x", "host \xc3", strings.Repeat("é", 100))
	for _, in := range ins {
		checkScrub(t, in)
	}
}

// TestScrubLinear scrubs 256 KiB of each hostile pattern. A scanner that
// rescans would take minutes on some of them; a linear one takes
// milliseconds (a few hundred with the race detector on a loaded machine),
// far below the bound.
func TestScrubLinear(t *testing.T) {
	const bound = 10 * time.Second
	for name, in := range hostile(256 << 10) {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			out, _ := Scrub(in)
			if d := time.Since(start); d > bound {
				t.Fatalf("scrubbing 256 KiB of %s took %s", name, d)
			}
			if Find(out) != nil {
				t.Fatalf("the output of %s still has findings", name)
			}
		})
	}
}

// FuzzScrub checks the properties of checkScrub on arbitrary text. The
// seeds in testdata/fuzz/FuzzScrub and the corpus run with every go test.
func FuzzScrub(f *testing.F) {
	for _, c := range positives {
		f.Add(c.in)
	}
	for _, in := range lookalikes {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > 16<<10 {
			return
		}
		checkScrub(t, in)
	})
}
