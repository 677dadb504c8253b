package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/policy"
)

type rolloutSvc struct {
	phxv1.UnimplementedRolloutServiceServer
	a *API
}

func (s *rolloutSvc) store() versioned {
	return versioned{a: s.a, stream: bus.StreamRollouts, kind: "rollout"}
}

func (s *rolloutSvc) envelope(r *phxv1.Rollout) *phxv1.Envelope {
	return &phxv1.Envelope{
		MessageId:   fmt.Sprintf("rollout/%s@%d", r.RolloutId, r.Revision),
		Kind:        phxv1.Kind_KIND_ROLLOUT,
		Publisher:   r.Publisher,
		PublishedAt: r.UpdatedAt,
		Audience:    r.Audience,
		Product:     r.Product,
		Item:        &phxv1.Envelope_Rollout{Rollout: r},
	}
}

func (s *rolloutSvc) AnnounceRollout(ctx context.Context, req *phxv1.AnnounceRolloutRequest) (resp *phxv1.AnnounceRolloutResponse, err error) {
	id := caller(ctx)
	defer func() {
		s.a.record(ctx, withOutcome(audit.Event{Kind: audit.KindPublish, IDs: []string{req.GetRollout().GetRolloutId()}, Revision: resp.GetRollout().GetRevision()}, err))
	}()
	if req.Rollout == nil {
		return nil, invalid("rollout", "is required")
	}
	if err := optMatch("request_id", reRequest, req.RequestId); err != nil {
		return nil, err
	}
	r := clone(req.Rollout)
	if r.State == phxv1.RolloutState_ROLLOUT_STATE_UNSPECIFIED {
		r.State = phxv1.RolloutState_ROLLOUT_ACTIVE
	}
	if r.State != phxv1.RolloutState_ROLLOUT_ACTIVE && r.State != phxv1.RolloutState_ROLLOUT_PAUSED {
		return nil, invalid("rollout.state", "a new rollout is ROLLOUT_ACTIVE or ROLLOUT_PAUSED")
	}
	if r.Revision != 0 || r.Publisher != "" || r.CreatedAt != nil || r.UpdatedAt != nil {
		return nil, invalid("rollout.revision", "revision, publisher and times are set by the hub")
	}
	reg := s.a.cfg.Registry.Get()
	if err := validateRolloutFields(r, reg); err != nil {
		return nil, prefix("rollout", err)
	}
	if !reg.Owns(id.Org, r.Product) {
		return nil, denied("rollout.product", "%s does not own product %q", id.Org, r.Product)
	}
	redactions := scrubRollout(r)
	r.Revision, r.Publisher, r.CreatedAt, r.UpdatedAt = 1, id.Org, s.a.now(), s.a.now()
	msgID := id.Org + ":rollout:" + r.RolloutId
	if req.RequestId != "" {
		msgID = id.Org + ":rollout-req:" + req.RequestId
	}
	st := s.store()
	env, err := st.write(ctx, s.envelope(r), id.Org, r.RolloutId, msgID, req.RequestId, id.Org, 0)
	if errors.Is(err, bus.ErrConflict) {
		if c, lerr := st.load(ctx, r.RolloutId, recipient(id)); lerr == nil && c.env.GetRollout().GetRevision() == 1 && sameRequest(c, req.RequestId, id.Org) {
			return &phxv1.AnnounceRolloutResponse{Rollout: c.env.GetRollout()}, nil
		}
		return nil, fmt.Errorf("%w: rollout %q", errExists, r.RolloutId)
	}
	if err != nil {
		return nil, err
	}
	if env.Publisher != id.Org {
		return nil, fmt.Errorf("%w: rollout %q", errExists, r.RolloutId)
	}
	return &phxv1.AnnounceRolloutResponse{Rollout: env.GetRollout(), Redactions: redactions}, nil
}

func (s *rolloutSvc) UpdateRollout(ctx context.Context, req *phxv1.UpdateRolloutRequest) (resp *phxv1.UpdateRolloutResponse, err error) {
	id := caller(ctx)
	defer func() {
		s.a.record(ctx, withOutcome(audit.Event{Kind: audit.KindUpdate, IDs: []string{req.GetRolloutId()}, Revision: resp.GetRollout().GetRevision()}, err))
	}()
	if err := match("rollout_id", reRollout, req.RolloutId); err != nil {
		return nil, err
	}
	if err := optMatch("request_id", reRequest, req.RequestId); err != nil {
		return nil, err
	}
	if req.ExpectedRevision == 0 {
		return nil, invalid("expected_revision", "is required (the revision you last read)")
	}
	if len(req.GetUpdateMask().GetPaths()) == 0 {
		return nil, invalid("update_mask", "name the fields to change")
	}
	if req.Rollout == nil {
		return nil, invalid("rollout", "is required")
	}
	st := s.store()
	c, err := st.load(ctx, req.RolloutId, recipient(id))
	if err != nil {
		return nil, err
	}
	cur := c.env.GetRollout()
	if c.env.Publisher != id.Org {
		return nil, denied("rollout_id", "only its publisher may update rollout %q", req.RolloutId)
	}
	if req.ExpectedRevision != cur.Revision {
		if sameRequest(c, req.RequestId, id.Org) {
			return &phxv1.UpdateRolloutResponse{Rollout: cur}, nil
		}
		return nil, precondition("expected_revision", "stale revision %d: rollout %q is at revision %d; read it again", req.ExpectedRevision, req.RolloutId, cur.Revision)
	}
	next := clone(cur)
	in := req.Rollout
	for i, p := range req.UpdateMask.Paths {
		switch p {
		case "state":
			if in.State != cur.State && !slices.Contains(rolloutStates[cur.State], in.State) {
				return nil, precondition("rollout.state", "cannot move from %s to %s", cur.State, in.State)
			}
			next.State = in.State
		case "current_ring":
			next.CurrentRing = in.CurrentRing
		case "percent_deployed":
			next.PercentDeployed = in.PercentDeployed
		case "incident_id":
			next.IncidentId = in.IncidentId
		case "reason":
			next.Reason = in.Reason
		case "schedule":
			next.Schedule = in.Schedule
		case "audience":
			if in.Audience == nil {
				return nil, invalid("rollout.audience", "is required when named in update_mask")
			}
			if err := policy.CheckNarrowing(cur.Audience, in.Audience, s.a.roleOf); err != nil {
				return nil, denied("rollout.audience", "%v", err)
			}
			next.Audience = in.Audience
		default:
			return nil, invalid(fmt.Sprintf("update_mask.paths[%d]", i), "%q cannot be updated (state, current_ring, percent_deployed, incident_id, reason, schedule, audience)", p)
		}
	}
	if (cur.State == phxv1.RolloutState_ROLLOUT_ROLLED_BACK || cur.State == phxv1.RolloutState_ROLLOUT_COMPLETED) && next.State == cur.State {
		return nil, precondition("rollout.state", "rollout %q is %s: it can no longer change", req.RolloutId, cur.State)
	}
	if next.CurrentRing < cur.CurrentRing && next.State != phxv1.RolloutState_ROLLOUT_ROLLED_BACK {
		return nil, precondition("rollout.current_ring", "cannot move back from %s to %s (roll back instead)", cur.CurrentRing, next.CurrentRing)
	}
	if err := validateRolloutFields(next, s.a.cfg.Registry.Get()); err != nil {
		return nil, prefix("rollout", err)
	}
	redactions := scrubRollout(next)
	next.Revision = cur.Revision + 1
	next.UpdatedAt = s.a.now()
	msgID := fmt.Sprintf("rollout/%s@%d", next.RolloutId, next.Revision)
	if req.RequestId != "" {
		msgID = id.Org + ":rollout-req:" + req.RequestId
	}
	env, err := st.write(ctx, s.envelope(next), c.env.Publisher, next.RolloutId, msgID, req.RequestId, id.Org, c.msg.Seq)
	if errors.Is(err, bus.ErrConflict) {
		return nil, precondition("expected_revision", "rollout %q changed while this update was applied; read it again", req.RolloutId)
	}
	if err != nil {
		return nil, err
	}
	return &phxv1.UpdateRolloutResponse{Rollout: env.GetRollout(), Redactions: redactions}, nil
}

func (s *rolloutSvc) GetRollout(ctx context.Context, req *phxv1.GetRolloutRequest) (resp *phxv1.GetRolloutResponse, err error) {
	id := caller(ctx)
	defer func() {
		r := resp.GetRollout()
		s.a.auditDelivered(ctx, []string{itemMessageID("rollout", r.GetRolloutId(), r.GetRevision())}, err)
	}()
	if err := match("rollout_id", reRollout, req.RolloutId); err != nil {
		return nil, err
	}
	c, err := s.store().load(ctx, req.RolloutId, recipient(id))
	if err != nil {
		return nil, err
	}
	return &phxv1.GetRolloutResponse{Rollout: s.a.present(c.env, recipient(id)).GetRollout()}, nil
}

func (s *rolloutSvc) ListRollouts(ctx context.Context, req *phxv1.ListRolloutsRequest) (resp *phxv1.ListRolloutsResponse, err error) {
	id := caller(ctx)
	defer func() {
		ids := make([]string, 0, len(resp.GetRollouts()))
		for _, r := range resp.GetRollouts() {
			ids = append(ids, itemMessageID("rollout", r.GetRolloutId(), r.GetRevision()))
		}
		s.a.auditDelivered(ctx, ids, err)
	}()
	r := recipient(id)
	size, err := pageSize(req.PageSize)
	if err != nil {
		return nil, err
	}
	for i, p := range req.Products {
		if err := match(fmt.Sprintf("products[%d]", i), reID, p); err != nil {
			return nil, err
		}
	}
	if err := optMatch("page_token", reRollout, req.PageToken); err != nil {
		return nil, err
	}
	var out []*phxv1.Rollout
	err = s.store().eachVisible(ctx, r, func(env *phxv1.Envelope) {
		ro := env.GetRollout()
		if ro.GetRolloutId() <= req.PageToken ||
			len(req.Products) > 0 && !slices.Contains(req.Products, ro.Product) ||
			len(req.States) > 0 && !slices.Contains(req.States, ro.State) {
			return
		}
		out = append(out, s.a.present(env, r).GetRollout())
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RolloutId < out[j].RolloutId })
	resp = &phxv1.ListRolloutsResponse{}
	if len(out) > size {
		out = out[:size]
		resp.NextPageToken = out[size-1].RolloutId
	}
	resp.Rollouts = out
	return resp, nil
}

func pageSize(n uint32) (int, error) {
	switch {
	case n == 0:
		return 100, nil
	case n > 1000:
		return 0, invalid("page_size", "%d is more than 1000", n)
	}
	return int(n), nil
}
