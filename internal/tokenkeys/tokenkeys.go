// Package tokenkeys manages the directory of Ed25519 keys that sign and
// verify the hub's bearer tokens. The hub reads it; `phx pki token-key`
// adds keys for rotation.
package tokenkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The key directory holds the hub's token keys:
//
//	<dir>/<kid>.key   an Ed25519 private key (PKCS#8 PEM): signs and verifies
//	<dir>/<kid>.pub   an Ed25519 public key (PKIX PEM): verifies only
//	<dir>/active      the kid that signs new tokens
//
// A kid is the RFC 7638 JWK thumbprint of the public key. Rotation: add a key
// (GenerateKey), make it active, and delete the old key once the tokens it
// signed have expired; until then both verify.
const activeFile = "active"

// KeySet is the hub's signing key and every key it accepts signatures of.
type KeySet struct {
	// Kid of the signing key.
	Kid    string
	signer ed25519.PrivateKey
	verify map[string]ed25519.PublicKey
}

// Signer is the active private key.
func (k *KeySet) Signer() ed25519.PrivateKey { return k.signer }

// Kids lists the verification keys' ids, sorted.
func (k *KeySet) Kids() []string {
	kids := make([]string, 0, len(k.verify))
	for kid := range k.verify {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	return kids
}

// PublicKey returns the verification key kid (nil if there is none).
func (k *KeySet) PublicKey(kid string) ed25519.PublicKey { return k.verify[kid] }

// Thumbprint returns the RFC 7638 JWK SHA-256 thumbprint of an Ed25519
// public key, base64url without padding.
func Thumbprint(pub ed25519.PublicKey) string {
	// Members in lexicographic order, no whitespace (RFC 7638 section 3).
	jwk, _ := json.Marshal(struct {
		Crv string `json:"crv"`
		Kty string `json:"kty"`
		X   string `json:"x"`
	}{"Ed25519", "OKP", base64.RawURLEncoding.EncodeToString(pub)})
	sum := sha256.Sum256(jwk)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// GenerateKey writes a new Ed25519 key into dir and, if activate, makes it
// the signing key. It returns the new kid.
func GenerateKey(dir string, activate bool) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	kid := Thumbprint(pub)
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, kid+".key"), data, 0o600); err != nil {
		return "", err
	}
	if activate {
		if err := writeAtomic(filepath.Join(dir, activeFile), []byte(kid+"\n")); err != nil {
			return "", err
		}
	}
	return kid, nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Load reads the key directory. If it holds no key and create is set,
// it generates one and makes it active.
func Load(dir string, create bool) (*KeySet, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ks := &KeySet{verify: map[string]ed25519.PublicKey{}}
	signers := map[string]ed25519.PrivateKey{}
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if e.IsDir() || (ext != ".key" && ext != ".pub") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("token key %s: not PEM", name)
		}
		var pub ed25519.PublicKey
		if ext == ".key" {
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("token key %s: %w", name, err)
			}
			priv, ok := k.(ed25519.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("token key %s: not an Ed25519 key", name)
			}
			pub = priv.Public().(ed25519.PublicKey)
			signers[Thumbprint(pub)] = priv
		} else {
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("token key %s: %w", name, err)
			}
			var ok bool
			if pub, ok = k.(ed25519.PublicKey); !ok {
				return nil, fmt.Errorf("token key %s: not an Ed25519 key", name)
			}
		}
		kid := Thumbprint(pub)
		if want := strings.TrimSuffix(name, ext); want != kid {
			return nil, fmt.Errorf("token key %s: file name does not match its kid %s", name, kid)
		}
		ks.verify[kid] = pub
	}
	if len(signers) == 0 {
		if !create {
			return nil, fmt.Errorf("no token signing key (*.key) in %s", dir)
		}
		if _, err := GenerateKey(dir, true); err != nil {
			return nil, err
		}
		return Load(dir, false)
	}
	active, err := os.ReadFile(filepath.Join(dir, activeFile))
	switch {
	case err == nil:
		ks.Kid = strings.TrimSpace(string(active))
	case errors.Is(err, fs.ErrNotExist) && len(signers) == 1:
		for kid := range signers {
			ks.Kid = kid
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s holds %d signing keys and no %q file naming the one to use", dir, len(signers), activeFile)
	default:
		return nil, err
	}
	if ks.signer = signers[ks.Kid]; ks.signer == nil {
		return nil, fmt.Errorf("%s: active key %q has no private key file %s.key", dir, ks.Kid, ks.Kid)
	}
	return ks, nil
}
