package grpcapi

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/authz"
	"github.com/phx-exchange/phx/server/internal/bus"
)

// record appends ev to the audit log, completed with the caller's identity,
// the gRPC method and the peer address from ctx where ev leaves them empty.
// Without an audit log it does nothing.
func (a *API) record(ctx context.Context, ev audit.Event) {
	if a.cfg.Audit == nil {
		return
	}
	if id, ok := authn.FromContext(ctx); ok && ev.Org == "" {
		ev = withIdentity(ev, id)
	}
	if ev.Method == "" {
		ev.Method, _ = grpc.Method(ctx)
	}
	if ev.Peer == "" {
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			ev.Peer = p.Addr.String()
		}
	}
	if err := a.cfg.Audit.Append(ev); err != nil {
		a.log.Warn("audit record not kept", "kind", ev.Kind, "method", ev.Method, "org", ev.Org, "err", err)
	}
}

// withIdentity fills ev with who the caller is, as the audit log keeps it.
func withIdentity(ev audit.Event, id *authn.Identity) audit.Event {
	ev.Org, ev.Role, ev.Workload, ev.AuthMethod = id.Org, id.Role, id.Workload, string(id.Method)
	if ev.TokenID == "" {
		ev.TokenID = id.TokenID
	}
	return ev
}

// withOutcome sets ev's status code and error text from a call's error.
func withOutcome(ev audit.Event, err error) audit.Event {
	if err != nil {
		st, _ := status.FromError(toStatus(err))
		ev.Code, ev.Error = st.Code().String(), st.Message()
	}
	return ev
}

// auditAuthn records a call refused for missing or bad credentials.
func (a *API) auditAuthn(ctx context.Context, method string, err error) {
	a.record(ctx, withOutcome(audit.Event{Kind: audit.KindAuthnFailure, Method: method}, err))
}

// auditAuthz records an authorization decision and the rule that made it.
func (a *API) auditAuthz(ctx context.Context, method string, id *authn.Identity, d authz.Decision, err error) {
	ev := withIdentity(audit.Event{Kind: audit.KindAuthz, Method: method, Allowed: audit.Bool(d.Allowed), Rule: d.Rule}, id)
	a.record(ctx, withOutcome(ev, err))
}

// auditDelivered records what a Get or List call handed to its caller.
func (a *API) auditDelivered(ctx context.Context, ids []string, err error) {
	if err != nil {
		return
	}
	id := caller(ctx)
	a.record(ctx, audit.Event{Kind: audit.KindDelivery, Recipient: id.Org, IDs: ids, Count: uint64(len(ids))})
}

// itemMessageID is the message id of one revision of a rollout or incident,
// as Subscribe delivers it.
func itemMessageID(kind, id string, revision uint64) string {
	return fmt.Sprintf("%s/%s@%d", kind, id, revision)
}

// Batching of the audit records of a live feed.
const (
	deliveryFlushEvery = time.Second
	deliveryFlushItems = 1000
)

// deliveries batches the audit records of what one subscriber receives: one
// record a second or every deliveryFlushItems items, and one at the end.
// Rollouts, incidents and advisories are listed by message id; health cells
// are counted, within the batch's cursor range.
type deliveries struct {
	a     *API
	ctx   context.Context
	ev    audit.Event
	timer *time.Timer
	// C fires when a batch is due; nil while none is pending.
	C <-chan time.Time
}

func (a *API) newDeliveries(ctx context.Context, recipient string) *deliveries {
	return &deliveries{a: a, ctx: ctx, ev: audit.Event{Kind: audit.KindDelivery, Recipient: recipient}}
}

// add counts one delivered envelope.
func (d *deliveries) add(env *phxv1.Envelope) {
	if d.a.cfg.Audit == nil {
		return
	}
	if d.ev.Count == 0 {
		d.ev.FirstCursor = env.Cursor
		if d.timer == nil {
			d.timer = time.NewTimer(deliveryFlushEvery)
		} else {
			d.timer.Reset(deliveryFlushEvery)
		}
		d.C = d.timer.C
	}
	d.ev.Count++
	d.ev.LastCursor = env.Cursor
	if env.Kind != phxv1.Kind_KIND_HEALTH_SIGNAL {
		d.ev.IDs = append(d.ev.IDs, env.MessageId)
	}
	if d.ev.Count >= deliveryFlushItems {
		d.flush()
	}
}

// flush records the pending batch, if any.
func (d *deliveries) flush() {
	if d.timer != nil {
		d.timer.Stop()
	}
	d.C = nil
	if d.ev.Count == 0 {
		return
	}
	d.a.record(d.ctx, d.ev)
	d.ev = audit.Event{Kind: audit.KindDelivery, Recipient: d.ev.Recipient}
}

type auditSvc struct {
	phxv1.UnimplementedAuditServiceServer
	a *API
}

// maxTail bounds TailAudit's limit.
const maxTail = 10000

func (s *auditSvc) TailAudit(req *phxv1.TailAuditRequest, stream grpc.ServerStreamingServer[phxv1.AuditRecord]) error {
	limit := uint64(req.GetLimit())
	switch {
	case limit == 0:
		limit = 20
	case limit > maxTail:
		return invalid("limit", "%d is more than %d", limit, maxTail)
	}
	st := s.a.cfg.Bus.Stream(bus.StreamAudit)
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	// A follower ends when the hub begins to shut down.
	drained := make(chan struct{})
	go func() {
		select {
		case <-s.a.cfg.Draining:
			close(drained)
			cancel()
		case <-ctx.Done():
		}
	}()
	err := audit.Tail(ctx, st, limit, req.GetFollow(), func(e audit.Entry) error {
		return stream.Send(recordProto(e))
	})
	select {
	case <-drained:
		return errShuttingDown
	default:
	}
	return err
}

func (s *auditSvc) VerifyAudit(_ *phxv1.VerifyAuditRequest, stream grpc.ServerStreamingServer[phxv1.VerifyAuditResponse]) error {
	ctx := stream.Context()
	res, err := audit.Verify(ctx, s.a.cfg.Bus.Stream(bus.StreamAudit), func(p audit.Progress) {
		_ = stream.Send(&phxv1.VerifyAuditResponse{Event: &phxv1.VerifyAuditResponse_Progress{Progress: &phxv1.AuditProgress{
			Checked: p.Checked, Total: p.Total, Seq: p.Seq,
		}}})
	})
	if err != nil {
		return err
	}
	out := &phxv1.AuditVerification{
		Ok: res.OK(), Records: res.Records, FirstSeq: res.FirstSeq, LastSeq: res.LastSeq, StartN: res.StartN, Broken: res.BrokenCount,
	}
	if res.Head.Seq != 0 {
		out.Head = &phxv1.AuditHead{N: res.Head.N, Hash: res.Head.Hash, Seq: res.Head.Seq, Time: timestamppb.New(res.Head.Time)}
	}
	if b := res.Broken; b != nil {
		out.FirstBroken = &phxv1.AuditBreak{Seq: b.Seq, N: b.N, Reason: b.Reason}
	}
	return stream.Send(&phxv1.VerifyAuditResponse{Event: &phxv1.VerifyAuditResponse_Result{Result: out}})
}

var auditKinds = map[audit.Kind]phxv1.AuditKind{
	audit.KindAuthnFailure: phxv1.AuditKind_AUDIT_KIND_AUTHN_FAILURE,
	audit.KindAuthz:        phxv1.AuditKind_AUDIT_KIND_AUTHZ,
	audit.KindPublish:      phxv1.AuditKind_AUDIT_KIND_PUBLISH,
	audit.KindUpdate:       phxv1.AuditKind_AUDIT_KIND_UPDATE,
	audit.KindDelivery:     phxv1.AuditKind_AUDIT_KIND_DELIVERY,
	audit.KindTokenIssue:   phxv1.AuditKind_AUDIT_KIND_TOKEN_ISSUE,
	audit.KindTokenRevoke:  phxv1.AuditKind_AUDIT_KIND_TOKEN_REVOKE,
}

// recordProto converts a stored audit message for the wire.
func recordProto(e audit.Entry) *phxv1.AuditRecord {
	r := e.Record
	if r == nil {
		return &phxv1.AuditRecord{Seq: e.Seq, Invalid: e.Invalid}
	}
	return &phxv1.AuditRecord{
		Seq: e.Seq, N: r.N, Time: timestamppb.New(r.Time), Hub: r.Hub,
		Kind: auditKinds[r.Kind], KindName: string(r.Kind),
		Org: r.Org, Role: r.Role, Workload: r.Workload, AuthMethod: r.AuthMethod, TokenId: r.TokenID,
		Method: r.Method, Peer: r.Peer, Allowed: r.Allowed, Rule: r.Rule, Code: r.Code, Error: r.Error,
		Ids: r.IDs, Revision: r.Revision, Recipient: r.Recipient,
		Count: r.Count, Accepted: r.Accepted, Duplicates: r.Duplicates, Refused: r.Refused,
		FirstCursor: r.FirstCursor, LastCursor: r.LastCursor, Detail: r.Detail,
		Prev: r.Prev, Hash: r.Hash,
	}
}
