package pki

import (
	"crypto/x509"
	"encoding/pem"

	"github.com/phx-exchange/phx/internal/tlsutil"
)

func marshalKey(ca *tlsutil.CA) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
