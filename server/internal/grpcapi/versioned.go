package grpcapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/policy"
)

// versioned stores items whose every revision is a message on the item's own
// subject (phx.v1.<kind>.<owner>.<id>); the last one is the current state.
type versioned struct {
	a      *API
	stream string
	kind   string // subject token: "rollout" or "incident"
}

func (v versioned) subject(owner, id string) string {
	return "phx.v1." + v.kind + "." + owner + "." + id
}
func (v versioned) anyOwner(id string) string { return "phx.v1." + v.kind + ".*." + id }

type current struct {
	env *phxv1.Envelope
	msg *bus.StoredMsg
}

// load returns the current state of id, or errNotFound when it does not
// exist or r may not see it (an item r may not see does not exist for r).
func (v versioned) load(ctx context.Context, id string, r policy.Recipient) (*current, error) {
	m, err := v.a.cfg.Bus.Last(ctx, v.stream, v.anyOwner(id))
	if err != nil {
		if err == bus.ErrNotFound {
			return nil, fmt.Errorf("%w: %s %q", errNotFound, v.kind, id)
		}
		return nil, err
	}
	env, err := decodeEnvelope(m.Data)
	if err != nil {
		return nil, err
	}
	if !policy.Visible(r, env.Publisher, env.Audience) {
		return nil, fmt.Errorf("%w: %s %q", errNotFound, v.kind, id)
	}
	return &current{env: env, msg: m}, nil
}

// loadSeq returns the item stored at seq (after a de-duplicated publish).
func (v versioned) loadSeq(ctx context.Context, seq uint64) (*phxv1.Envelope, error) {
	m, err := v.a.cfg.Bus.Get(ctx, v.stream, seq)
	if err != nil {
		return nil, err
	}
	return decodeEnvelope(m.Data)
}

// write publishes env as the next revision: expectSeq is the stream sequence
// of the revision it replaces (0 for a new item, checked across owners).
// A retry with the same msgID returns the stored envelope.
func (v versioned) write(ctx context.Context, env *phxv1.Envelope, owner, id, msgID, requestID, updatedBy string, expectSeq uint64) (*phxv1.Envelope, error) {
	data, err := proto.Marshal(env)
	if err != nil {
		return nil, err
	}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderPublisher, updatedBy)
	if requestID != "" {
		hdr.Set(bus.HeaderRequestID, requestID)
	}
	expectSubject := v.subject(owner, id)
	if expectSeq == 0 {
		expectSubject = v.anyOwner(id)
	}
	res, err := v.a.cfg.Bus.PublishExpect(ctx, bus.Message{Subject: v.subject(owner, id), MsgID: msgID, Data: data, Header: hdr}, expectSubject, expectSeq)
	if requestID == "" && (errors.Is(err, bus.ErrDuplicateInProcess) || err == nil && res.Duplicate) {
		// Without a request id the message id is derived from the item
		// (e.g. its next revision), so a duplicate is another caller's
		// write of the same revision: that one won. (A single JetStream
		// server checks the expectation first and says ErrConflict
		// itself; a cluster checks the message id first.)
		return nil, bus.ErrConflict
	}
	if err != nil {
		return nil, err
	}
	if res.Duplicate {
		// A retry of this very request: answer with what it stored.
		return v.loadSeq(ctx, res.Seq)
	}
	return env, nil
}

// sameRequest reports whether the current revision was written by this very
// request (a retry after a lost answer).
func sameRequest(c *current, requestID, org string) bool {
	return requestID != "" && c.msg.Header.Get(bus.HeaderRequestID) == requestID && c.msg.Header.Get(bus.HeaderPublisher) == org
}

func clone[T proto.Message](m T) T { return proto.Clone(m).(T) }

// eachVisible calls fn with the current state of every item of the stream
// that r may see.
func (v versioned) eachVisible(ctx context.Context, r policy.Recipient, fn func(*phxv1.Envelope)) error {
	return v.a.cfg.Bus.LastPerSubject(ctx, v.stream, "phx.v1."+v.kind+".>", func(m *bus.StoredMsg) error {
		env, err := decodeEnvelope(m.Data)
		if err != nil {
			return err
		}
		if policy.Visible(r, env.Publisher, env.Audience) {
			fn(env)
		}
		return nil
	})
}
