package tokenkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadCreatesAndRotates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tokens")
	if _, err := Load(dir, false); err == nil {
		t.Fatal("an empty directory loaded without create")
	}
	first, err := Load(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if first.Kid == "" || first.Signer() == nil || !slices.Equal(first.Kids(), []string{first.Kid}) {
		t.Fatalf("first key set: %+v", first.Kids())
	}
	again, err := Load(dir, true)
	if err != nil || again.Kid != first.Kid {
		t.Fatalf("reload made another key: %v %s", err, again.Kid)
	}

	// An inactive key verifies only; activating it signs.
	second, err := GenerateKey(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := Load(dir, false)
	if err != nil || ks.Kid != first.Kid || len(ks.Kids()) != 2 {
		t.Fatalf("after an inactive key: %v %s %v", err, ks.Kid, ks.Kids())
	}
	third, err := GenerateKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	ks, err = Load(dir, false)
	if err != nil || ks.Kid != third || len(ks.Kids()) != 3 || ks.PublicKey(second) == nil {
		t.Fatalf("after activating: %v %s %v", err, ks.Kid, ks.Kids())
	}

	// A public key alone verifies.
	pub := ks.PublicKey(first.Kid)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	if err := os.Remove(filepath.Join(dir, first.Kid+".key")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, first.Kid+".pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ks, err = Load(dir, false)
	if err != nil || !ks.PublicKey(first.Kid).Equal(pub) {
		t.Fatalf("public-only key: %v", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	write := func(t *testing.T, dir, name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	kid := Thumbprint(priv.Public().(ed25519.PublicKey))
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"not PEM", func(t *testing.T, dir string) { write(t, dir, kid+".key", []byte("nope")) }, "not PEM"},
		{"misnamed", func(t *testing.T, dir string) { write(t, dir, "other.key", keyPEM) }, "does not match its kid"},
		{"two keys, none active", func(t *testing.T, dir string) {
			write(t, dir, kid+".key", keyPEM)
			if _, err := GenerateKey(dir, false); err != nil {
				t.Fatal(err)
			}
		}, "no \"active\" file"},
		{"active key without its private key", func(t *testing.T, dir string) {
			write(t, dir, kid+".key", keyPEM)
			write(t, dir, "active", []byte("missing\n"))
		}, "has no private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			_, err := Load(dir, true)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestThumbprint checks the RFC 7638 thumbprint against the RFC 8037
// appendix A.3 example key.
func TestThumbprint(t *testing.T) {
	x := []byte{0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
		0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a}
	if got, want := Thumbprint(ed25519.PublicKey(x)), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Fatalf("Thumbprint = %s, want %s", got, want)
	}
}
