package grpcapi

import "testing"

func TestStripUserinfo(t *testing.T) {
	tests := []struct {
		in, want   string
		start, end uint32
		stripped   bool
	}{
		{"https://ops:hunter2@kb.example/291", "https://kb.example/291", 8, 20, true},
		{"https://token@kb.example", "https://kb.example", 8, 14, true},
		{"https://kb.example/a@b", "https://kb.example/a@b", 0, 0, false},
		{"https://kb.example/?mail=x@y.z", "https://kb.example/?mail=x@y.z", 0, 0, false},
		{"https://a:b@c@kb.example/", "https://kb.example/", 8, 14, true},
		{"kb.example", "kb.example", 0, 0, false},
		{"", "", 0, 0, false},
	}
	for _, tt := range tests {
		got := tt.in
		red := stripUserinfo(&got)
		if got != tt.want || (red != nil) != tt.stripped {
			t.Errorf("stripUserinfo(%q) = %q, %v; want %q, stripped %v", tt.in, got, red, tt.want, tt.stripped)
			continue
		}
		if red != nil && (red.Start != tt.start || red.End != tt.end || red.Kind != "url_credentials" || tt.in[red.End-1] != '@') {
			t.Errorf("stripUserinfo(%q): redaction %v, want [%d, %d)", tt.in, red, tt.start, tt.end)
		}
	}
}
