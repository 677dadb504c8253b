// Package phxv1 is the wire contract of phx, the Product Health eXchange:
// the services and messages of package phx.v1, generated from the .proto
// files in this directory. Regenerate with:
//
//	go generate ./proto/...
package phxv1

//go:generate ../../../scripts/gen-proto
