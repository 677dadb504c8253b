package sdk

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// TestSpoolEntryTorn checks that every prefix of a request file, and every
// single flipped bit, is detected rather than decoded.
func TestSpoolEntryTorn(t *testing.T) {
	req := &phxv1.UpdateRolloutRequest{RolloutId: "r-1", ExpectedRevision: 3, RequestId: "abc",
		Rollout: &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED, Reason: "boot loops"}}
	b, err := encodeEntry(kindUpdateRollout, req)
	if err != nil {
		t.Fatal(err)
	}
	kind, got, err := decodeEntry(b)
	if err != nil || kind != kindUpdateRollout || !proto.Equal(got, req) {
		t.Fatalf("round trip: %v %v %v", kind, got, err)
	}
	for n := range len(b) {
		if _, _, err := decodeEntry(b[:n]); err == nil {
			t.Errorf("a file cut to %d of %d bytes decodes", n, len(b))
		}
	}
	for i := range len(b) {
		for bit := range 8 {
			c := append([]byte(nil), b...)
			c[i] ^= 1 << bit
			if _, _, err := decodeEntry(c); err == nil {
				t.Errorf("bit %d of byte %d flipped: decodes", bit, i)
			}
		}
	}
}

func TestSpoolScan(t *testing.T) {
	dir := t.TempDir()
	sp, found, q, err := openSpool(dir)
	if err != nil || len(found) != 0 || len(q) != 0 {
		t.Fatalf("empty dir: %v %v %v", found, q, err)
	}
	signals := &phxv1.PublishSignalsRequest{Signals: []*phxv1.HealthSignal{{SignalId: "s-1"}}}
	for _, seq := range []uint64{7, 3, 12} {
		b, err := encodeEntry(kindSignals, signals)
		if err != nil {
			t.Fatal(err)
		}
		if err := sp.write(seq, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.sync(); err != nil {
		t.Fatal(err)
	}
	// A second opener is refused while the first holds the lock.
	if _, _, _, err := openSpool(dir); err == nil {
		t.Fatal("opened a spool in use")
	}
	sp.close()
	empty, _ := encodeEntry(kindSignals, &phxv1.PublishSignalsRequest{})
	for name, data := range map[string][]byte{
		"00000000000000000005.req":  empty,            // no signals
		"00000000000000000009.req":  []byte("PHXOUT"), // shorter than the header
		"notanumber.req":            empty,
		".tmp-00000000000000000013": []byte("x"),
		"README":                    []byte("left alone"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sp, found, q, err = openSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	var seqs []uint64
	for _, f := range found {
		seqs = append(seqs, f.seq)
	}
	if len(seqs) != 3 || seqs[0] != 3 || seqs[1] != 7 || seqs[2] != 12 || len(q) != 3 {
		t.Fatalf("found %v, quarantined %q", seqs, q)
	}
	for _, name := range []string{".tmp-00000000000000000013", "notanumber.req"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
		t.Errorf("README: %v", err)
	}
}
