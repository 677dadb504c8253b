package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnit: deploy/systemd/phxd.service passes systemd-analyze
// verify with nothing to say (an unknown or misspelt directive is only a
// warning to systemd, so any output fails the test), run against the phxd
// this package built in place of /usr/local/bin/phxd.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	unit, err := os.ReadFile("../deploy/systemd/phxd.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/phxd") {
		t.Fatal("the unit does not start /usr/local/bin/phxd")
	}
	path := filepath.Join(t.TempDir(), "phxd.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/phxd", filepath.Join(bin, "phxd"))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
