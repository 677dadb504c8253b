package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// Pseudonymizer maps org ids to stable pseudonyms with a keyed HMAC: the
// same org always gets the same pseudonym, and without the hub's secret a
// pseudonym cannot be linked to its org.
type Pseudonymizer struct{ key []byte }

// NewPseudonymizer returns a Pseudonymizer with the hub's secret key.
func NewPseudonymizer(key []byte) *Pseudonymizer { return &Pseudonymizer{key: key} }

// Pseudonym returns org's pseudonym, e.g. "anon-k3v9q2m7xd".
func (p *Pseudonymizer) Pseudonym(org string) string {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte("phx-pseudonym-v1\x00" + org))
	sum := m.Sum(nil)
	return "anon-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:10]))[:12]
}
