package sdk

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDependencies checks that the SDK does not pull in the hub or the NATS
// server: members link the SDK into their own backends.
func TestDependencies(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "./sdk/...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/phx-exchange/phx/server",
		"github.com/nats-io/nats-server",
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed no packages")
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("sdk depends on %s", dep)
			}
		}
	}
}
