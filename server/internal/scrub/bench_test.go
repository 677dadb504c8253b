package scrub

import (
	"strings"
	"testing"
)

// cleanParagraph is incident prose full of look-alikes and no identifiers.
const cleanParagraph = `At 04:09 UTC on 2024-07-19 the content update for channel 291 (C-00000291-00000000-00000032.sys, ` +
	`version 291.1) reached ring 1. Within 78 minutes about 8.5 million Windows machines on builds 10.0.22631.3880 and ` +
	`10.0.19045.4651 entered boot loops with bugcheck 0x50 PAGE_FAULT_IN_NONPAGED_AREA in csagent.sys (agent 7.16.18). ` +
	`Remediation: boot into WinRE or Safe Mode, delete C-00000291*.sys from %WINDIR%\System32\drivers\CrowdStrike and ` +
	`reboot; see https://learn.microsoft.com/en-us/troubleshoot/windows-client/ for KB5040442. Failure rate 12.5% ` +
	`(p < 0.001), ratio 1:1000; sha256 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae. ` +
	`The Users group saw slow logons; std::io errors in the collector are unrelated. CVE-2024-3400 is not involved.` + "\n"

// dirtyParagraph carries a few identifiers.
const dirtyParagraph = `Customer report: host FIN-PC-07 (10.4.8.15, 00:1A:2B:3C:4D:5E) looped after the update; ` +
	`jane.doe@contoso.com collected C:\Users\jdoe\Desktop\MEMORY.DMP and copied it to \\FILESRV01\dumps.` + "\n"

// benchText returns n bytes of paragraphs, one dirty paragraph in every
// dirtyEvery (0: none).
func benchText(n, dirtyEvery int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		if dirtyEvery > 0 && i%dirtyEvery == dirtyEvery-1 {
			b.WriteString(dirtyParagraph)
		} else {
			b.WriteString(cleanParagraph)
		}
	}
	return b.String()[:n]
}

// BenchmarkScrub measures throughput on an 8 KiB incident text (the hub's
// largest free-text field) with a few identifiers, and on clean text.
//
//	go test -run '^$' -bench Scrub ./server/internal/scrub
func BenchmarkScrub(b *testing.B) {
	for _, c := range []struct {
		name string
		text string
	}{
		{"incident-8KiB", benchText(8<<10, 3)},
		{"clean-8KiB", benchText(8<<10, 0)},
		{"title-200B", benchText(200, 0)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.text)))
			b.ReportAllocs()
			for b.Loop() {
				Scrub(c.text)
			}
		})
	}
}

func TestBenchTexts(t *testing.T) {
	if _, fs := Scrub(benchText(8<<10, 0)); fs != nil {
		t.Fatalf("the clean benchmark text has findings: %v", fs)
	}
	if _, fs := Scrub(benchText(8<<10, 3)); len(fs) < 10 {
		t.Fatalf("the incident benchmark text has %d findings; want at least 10", len(fs))
	}
}
