// Package audit is the hub's tamper-evident audit log: every authentication
// failure, authorization decision, publish, update, delivery, token issue and
// revocation becomes one record on the PHX_AUDIT stream.
//
// Each stored record carries the SHA-256 of the stored bytes of the record
// before it (prev), its own position in the chain (n) and the SHA-256 of its
// own canonical JSON (hash). Editing a record breaks its own hash; editing it
// and recomputing its hash breaks the next record's prev; removing a record
// leaves a gap in n and a prev that names another record. Verify walks the
// stream and names the first record where the chain breaks.
//
// The stream itself may be changed by anyone with NATS administrator rights
// (it is not DenyDelete or DenyPurge): the chain is what makes a change
// visible. The head that Verify returns (n, hash, stream sequence) is meant
// to be copied somewhere else from time to time, so that removing the newest
// records, or the whole stream, shows too.
//
// Records are appended by one goroutine (Log.Run) that chains them in order
// and stores them with JetStream expectations, so that hub replicas sharing
// one JetStream cluster never interleave into a broken chain: see Log.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Subject is where records are stored (a subject of the PHX_AUDIT stream).
const Subject = "phx.v1.audit.log"

// Kind says what a record is about.
type Kind string

// Kinds of records.
const (
	// KindAuthnFailure: a call without valid credentials.
	KindAuthnFailure Kind = "authn_failure"
	// KindAuthz: an authorization decision, allowed or denied, with its rule.
	KindAuthz Kind = "authz"
	// KindPublish: a new item (health signals, rollout, incident).
	KindPublish Kind = "publish"
	// KindUpdate: a new revision of a rollout or incident.
	KindUpdate Kind = "update"
	// KindDelivery: items handed to one recipient (a feed batch, a get or
	// list answer).
	KindDelivery Kind = "delivery"
	// KindTokenIssue: a bearer token was signed.
	KindTokenIssue Kind = "token_issue"
	// KindTokenRevoke: a bearer token was revoked.
	KindTokenRevoke Kind = "token_revoke"
)

// Kinds lists every kind, in the order of the constants.
var Kinds = []Kind{KindAuthnFailure, KindAuthz, KindPublish, KindUpdate, KindDelivery, KindTokenIssue, KindTokenRevoke}

// Event is what happened, as the hub saw it. Fields that do not apply to a
// kind stay empty and are left out of the stored JSON.
type Event struct {
	// Kind says what the event is.
	Kind Kind `json:"kind"`
	// Org is the caller's org (empty when authentication failed).
	Org string `json:"org,omitempty"`
	// Role is the caller's role.
	Role string `json:"role,omitempty"`
	// Workload is the workload of the caller's SPIFFE id, or a token subject.
	Workload string `json:"workload,omitempty"`
	// AuthMethod is how the caller authenticated ("mtls", "token").
	AuthMethod string `json:"auth_method,omitempty"`
	// TokenID is the id (jti) of the bearer token used, or issued or revoked.
	TokenID string `json:"token_id,omitempty"`
	// Method is the full gRPC method name, e.g. /phx.v1.HealthService/PublishSignals.
	Method string `json:"method,omitempty"`
	// Peer is the caller's network address.
	Peer string `json:"peer,omitempty"`
	// Allowed is the authorization decision (authz records only).
	Allowed *bool `json:"allowed,omitempty"`
	// Rule is the authorization rule that decided.
	Rule string `json:"rule,omitempty"`
	// Code is the gRPC status code name of a refusal, e.g. "PermissionDenied".
	Code string `json:"code,omitempty"`
	// Error is the refusal's text.
	Error string `json:"error,omitempty"`
	// IDs are the items concerned: rollout or incident ids, or the message
	// ids of delivered items.
	IDs []string `json:"ids,omitempty"`
	// Revision is the item's revision after a publish or update.
	Revision uint64 `json:"revision,omitempty"`
	// Recipient is the org items were delivered to.
	Recipient string `json:"recipient,omitempty"`
	// Count is how many items the event covers (signals in a call, items in
	// a delivery batch).
	Count uint64 `json:"count,omitempty"`
	// Accepted is how many of them were stored.
	Accepted uint64 `json:"accepted,omitempty"`
	// Duplicates is how many were already stored.
	Duplicates uint64 `json:"duplicates,omitempty"`
	// Refused is how many were refused.
	Refused uint64 `json:"refused,omitempty"`
	// FirstCursor and LastCursor bound the cursors of the items concerned.
	FirstCursor string `json:"first_cursor,omitempty"`
	// LastCursor: see FirstCursor.
	LastCursor string `json:"last_cursor,omitempty"`
	// Detail is anything else worth keeping, in words.
	Detail string `json:"detail,omitempty"`
}

// Bool returns a pointer to b, for Event.Allowed.
func Bool(b bool) *bool { return &b }

// Record is an Event as stored: chained and sealed.
type Record struct {
	// N is the record's position in the chain, from 1.
	N uint64 `json:"n"`
	// Time is when the hub saw the event (UTC).
	Time time.Time `json:"time"`
	// Hub is the id of the hub instance that saw it.
	Hub string `json:"hub"`
	Event
	// Prev is the hex SHA-256 of the stored bytes of the record before this
	// one; empty for the first record of a chain.
	Prev string `json:"prev,omitempty"`
	// Hash is the hex SHA-256 of the record's canonical JSON with Hash
	// empty. It is also the record's Nats-Msg-Id.
	Hash string `json:"hash,omitempty"`
}

// A record's canonical JSON is encoding/json's encoding of Record without
// Hash: fields in the order above, empty optional fields left out, no
// spaces. The stored bytes are the canonical JSON with the member
// "hash":"<hex>" added last. So the hash can be checked on the stored bytes
// alone, by a verifier that knows nothing of the fields: remove the final
// ,"hash":"<64 hex digits>" and hash what is left.

const hashLen = 64 // hex digits of a SHA-256

// seal sets r.Hash and returns the bytes to store.
func seal(r *Record) ([]byte, error) {
	r.Hash = ""
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	r.Hash = digest(body)
	out := make([]byte, 0, len(body)+len(`,"hash":""`)+hashLen)
	out = append(out, body[:len(body)-1]...)
	out = append(out, `,"hash":"`...)
	out = append(out, r.Hash...)
	out = append(out, `"}`...)
	return out, nil
}

// digest is the hex SHA-256 of b.
func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Parse decodes stored bytes into a Record. It does not check the hash.
// Fields it does not know (written by a newer hub) are ignored.
func Parse(data []byte) (*Record, error) {
	r := &Record{}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, err
	}
	return r, nil
}

// selfCheck reports what is wrong with a stored record on its own, or "".
// It checks the stored bytes, not a re-encoding of r, so that fields a newer
// hub added are covered by the hash too.
func selfCheck(r *Record, data []byte) string {
	const pre, post = `,"hash":"`, `"}`
	n := len(data) - len(post) - hashLen - len(pre)
	if n < 1 || !bytes.HasSuffix(data, []byte(post)) || !bytes.Equal(data[n:n+len(pre)], []byte(pre)) {
		return `the record does not end with its "hash"`
	}
	stored := string(data[n+len(pre) : n+len(pre)+hashLen])
	if stored != r.Hash {
		return `the record has more than one "hash"`
	}
	body := make([]byte, 0, n+1)
	body = append(append(body, data[:n]...), '}')
	if digest(body) != stored {
		return "hash mismatch: the record was changed after it was stored"
	}
	return ""
}
