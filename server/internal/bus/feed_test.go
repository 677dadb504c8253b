package bus

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestCursorRoundTrip(t *testing.T) {
	cases := []Cursor{
		{},
		{1, 2, 3, 4},
		{42, 0, 7, 0},
		{math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var c Cursor
		for i := range c {
			c[i] = r.Uint64() >> r.UintN(64)
		}
		cases = append(cases, c)
	}
	for _, c := range cases {
		s := c.String()
		got, present, err := ParseCursor(s)
		if err != nil {
			t.Fatalf("ParseCursor(%q): %v", s, err)
		}
		if got != c {
			t.Fatalf("ParseCursor(%q) = %v, want %v", s, got, c)
		}
		if present != [NumFeeds]bool{true, true, true, true} {
			t.Fatalf("ParseCursor(%q): present %v", s, present)
		}
		if got.String() != s {
			t.Fatalf("%v formats as %q, then %q", c, s, got.String())
		}
	}
}

func TestCursorFormat(t *testing.T) {
	if got := (Cursor{12, 3, 4, 0}).String(); got != "h12.r3.i4.a0" {
		t.Fatalf("String() = %q", got)
	}
	for _, tc := range []struct {
		f    FeedStream
		seq  uint64
		want string
	}{{FeedHealth, 42, "h42"}, {FeedRollouts, 0, "r0"}, {FeedIncidents, 7, "i7"}, {FeedAdvisories, 1, "a1"}} {
		if got := ItemCursor(tc.f, tc.seq); got != tc.want {
			t.Fatalf("ItemCursor(%v, %d) = %q, want %q", tc.f, tc.seq, got, tc.want)
		}
		// An item cursor is a partial cursor naming its stream only.
		c, present, err := ParseCursor(tc.want)
		if err != nil || c[tc.f] != tc.seq {
			t.Fatalf("ParseCursor(%q) = %v, %v", tc.want, c, err)
		}
		for i := range NumFeeds {
			if present[i] != (i == tc.f) {
				t.Fatalf("ParseCursor(%q): present %v", tc.want, present)
			}
		}
	}
	for f := range NumFeeds {
		if f.StreamName() == "" || !strings.HasPrefix(f.StreamName(), "PHX_") {
			t.Fatalf("stream %d has name %q", f, f.StreamName())
		}
	}
}

func TestParseCursorPartialAnyOrder(t *testing.T) {
	c, present, err := ParseCursor("i9.h3")
	if err != nil {
		t.Fatal(err)
	}
	if c != (Cursor{3, 0, 9, 0}) || present != [NumFeeds]bool{true, false, true, false} {
		t.Fatalf("got %v %v", c, present)
	}
}

func TestParseCursorMalformed(t *testing.T) {
	for _, s := range []string{
		"",
		"h",
		"1",
		"x1",
		"H1",
		"h1.",
		".h1",
		"h1..r2",
		"h1.h2",
		"h-1",
		"h+1",
		"h1 ",
		" h1",
		"h0x10",
		"h1.r2.i3.a4.b5",
		"h18446744073709551616",
		"h" + strings.Repeat("1", 128),
		strings.Repeat("h1.", 50) + "h1",
	} {
		if _, _, err := ParseCursor(s); !errors.Is(err, ErrBadCursor) {
			t.Errorf("ParseCursor(%q) = %v, want ErrBadCursor", s, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.defaults()
	if c.Replicas != 1 || c.HealthMaxAge != 7*24*time.Hour || c.HealthDuplicateWindow != 10*time.Minute ||
		c.ItemDuplicateWindow != 24*time.Hour || c.MaxPending != 4096 {
		t.Fatalf("defaults: %+v", c)
	}
	// JetStream refuses a duplicate window longer than the max age.
	short := Config{HealthMaxAge: time.Second}
	short.defaults()
	if short.HealthDuplicateWindow != time.Second {
		t.Fatalf("duplicate window %s with max age %s", short.HealthDuplicateWindow, short.HealthMaxAge)
	}
	set := Config{HealthMaxAge: time.Hour, HealthDuplicateWindow: time.Minute}
	set.defaults()
	if set.HealthDuplicateWindow != time.Minute {
		t.Fatalf("an explicit window was changed to %s", set.HealthDuplicateWindow)
	}
}
