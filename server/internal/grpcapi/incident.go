package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/policy"
)

type incidentSvc struct {
	phxv1.UnimplementedIncidentServiceServer
	a *API
}

func (s *incidentSvc) store() versioned {
	return versioned{a: s.a, stream: bus.StreamIncidents, kind: "incident"}
}

func (s *incidentSvc) envelope(in *phxv1.Incident) *phxv1.Envelope {
	product := ""
	if len(in.Affected) > 0 {
		product = in.Affected[0].Product
	}
	return &phxv1.Envelope{
		MessageId:   fmt.Sprintf("incident/%s@%d", in.Id, in.Revision),
		Kind:        phxv1.Kind_KIND_INCIDENT,
		Publisher:   in.Reporter,
		PublishedAt: in.UpdatedAt,
		Audience:    in.Audience,
		Product:     product,
		Item:        &phxv1.Envelope_Incident{Incident: in},
	}
}

// checkAffectedOwnership: a vendor reports only about its own products; the
// platform may report about any.
func checkAffectedOwnership(id *authn.Identity, in *phxv1.Incident, reg *members.Registry) error {
	if id.Role == members.RolePlatform {
		return nil
	}
	for i, a := range in.Affected {
		if !reg.Owns(id.Org, a.Product) {
			return denied(fmt.Sprintf("incident.affected[%d].product", i), "%s does not own product %q; only the platform may open incidents about any product", id.Org, a.Product)
		}
	}
	return nil
}

func (s *incidentSvc) ReportIncident(ctx context.Context, req *phxv1.ReportIncidentRequest) (resp *phxv1.ReportIncidentResponse, err error) {
	id := caller(ctx)
	defer func() {
		ev := audit.Event{Kind: audit.KindPublish, Revision: resp.GetIncident().GetRevision()}
		if in := resp.GetIncident(); in != nil {
			ev.IDs = []string{in.GetId()}
		}
		s.a.record(ctx, withOutcome(ev, err))
	}()
	if req.Incident == nil {
		return nil, invalid("incident", "is required")
	}
	if err := optMatch("request_id", reRequest, req.RequestId); err != nil {
		return nil, err
	}
	in := clone(req.Incident)
	if in.Id != "" || in.Revision != 0 || in.Reporter != "" || in.CreatedAt != nil || in.UpdatedAt != nil || in.ResolvedAt != nil {
		return nil, invalid("incident.id", "id, revision, reporter and times are set by the hub")
	}
	if len(in.Posts) > 0 || len(in.Responses) > 0 {
		return nil, invalid("incident.posts", "posts and responses are added with AddPost and Respond")
	}
	if in.Status == phxv1.Status_STATUS_UNSPECIFIED {
		in.Status = phxv1.Status_STATUS_INVESTIGATING
	}
	if in.Classification == phxv1.Classification_CLASSIFICATION_UNSPECIFIED {
		in.Classification = phxv1.Classification_CLASSIFICATION_INCIDENT
	}
	reg := s.a.cfg.Registry.Get()
	if err := validateIncidentFields(in, reg); err != nil {
		return nil, prefix("incident", err)
	}
	if err := checkAffectedOwnership(id, in, reg); err != nil {
		return nil, err
	}
	if len(in.History) > 0 {
		return nil, invalid("incident.history", "is kept by the hub")
	}
	if err := validateAsk(in, id.Org, reg); err != nil {
		return nil, err
	}
	redactions := scrubIncident(in)
	now := s.a.now()
	in.Id, in.Revision, in.Reporter, in.CreatedAt, in.UpdatedAt = newIncidentID(), 1, id.Org, now, now
	addHistory(in, id.Org, "reported")
	if in.Status == phxv1.Status_STATUS_RESOLVED {
		in.ResolvedAt = now
	}
	msgID := "incident/" + in.Id + "@1"
	if req.RequestId != "" {
		msgID = id.Org + ":incident-req:" + req.RequestId
	}
	env, err := s.store().write(ctx, s.envelope(in), id.Org, in.Id, msgID, req.RequestId, id.Org, 0)
	if err != nil {
		return nil, err
	}
	if env.Publisher != id.Org {
		return nil, fmt.Errorf("%w: request_id %q was used by another org", errExists, req.RequestId)
	}
	return &phxv1.ReportIncidentResponse{Incident: s.a.present(env, recipient(id)).GetIncident(), Redactions: redactions}, nil
}

var incidentPaths = []string{"title", "classification", "severity", "status", "affected", "impact", "remediations", "rollout_action", "respond_by", "asked_orgs", "ask_all_vendors", "audience"}

func (s *incidentSvc) UpdateIncident(ctx context.Context, req *phxv1.UpdateIncidentRequest) (resp *phxv1.UpdateIncidentResponse, err error) {
	id := caller(ctx)
	defer func() {
		s.a.record(ctx, withOutcome(audit.Event{Kind: audit.KindUpdate, IDs: []string{req.GetId()}, Revision: resp.GetIncident().GetRevision()}, err))
	}()
	if err := match("id", reIncident, req.Id); err != nil {
		return nil, err
	}
	if err := optMatch("request_id", reRequest, req.RequestId); err != nil {
		return nil, err
	}
	if req.ExpectedRevision == 0 {
		return nil, invalid("expected_revision", "is required (the revision you last read)")
	}
	if len(req.GetUpdateMask().GetPaths()) == 0 {
		return nil, invalid("update_mask", "name the fields to change (%s)", strings.Join(incidentPaths, ", "))
	}
	if req.Incident == nil {
		return nil, invalid("incident", "is required")
	}
	st := s.store()
	c, err := st.load(ctx, req.Id, recipient(id))
	if err != nil {
		return nil, err
	}
	cur := c.env.GetIncident()
	if c.env.Publisher != id.Org && id.Role != members.RolePlatform {
		return nil, denied("id", "only the reporter or the platform may update incident %s", req.Id)
	}
	if req.ExpectedRevision != cur.Revision {
		if sameRequest(c, req.RequestId, id.Org) {
			return &phxv1.UpdateIncidentResponse{Incident: s.a.present(c.env, recipient(id)).GetIncident()}, nil
		}
		return nil, precondition("expected_revision", "stale revision %d: incident %s is at revision %d; read it again", req.ExpectedRevision, req.Id, cur.Revision)
	}
	next := clone(cur)
	in := req.Incident
	for i, p := range req.UpdateMask.Paths {
		switch p {
		case "title":
			next.Title = in.Title
		case "classification":
			next.Classification = in.Classification
		case "severity":
			next.Severity = in.Severity
		case "status":
			if err := checkStatusMove(cur.Status, in.Status); err != nil {
				return nil, err
			}
			next.Status = in.Status
		case "affected":
			next.Affected = in.Affected
		case "impact":
			next.Impact = in.Impact
		case "remediations":
			next.Remediations = in.Remediations
		case "rollout_action":
			next.RolloutAction = in.RolloutAction
		case "respond_by":
			next.RespondBy = in.RespondBy
		case "asked_orgs":
			next.AskedOrgs = in.AskedOrgs
		case "ask_all_vendors":
			next.AskAllVendors = in.AskAllVendors
		case "audience":
			if in.Audience == nil {
				return nil, invalid("incident.audience", "is required when named in update_mask")
			}
			if err := policy.CheckNarrowing(cur.Audience, in.Audience, s.a.roleOf); err != nil {
				return nil, denied("incident.audience", "%v", err)
			}
			next.Audience = in.Audience
		default:
			return nil, invalid(fmt.Sprintf("update_mask.paths[%d]", i), "%q cannot be updated (%s)", p, strings.Join(incidentPaths, ", "))
		}
	}
	reg := s.a.cfg.Registry.Get()
	if err := validateIncidentFields(next, reg); err != nil {
		return nil, prefix("incident", err)
	}
	if slices.Contains(req.UpdateMask.Paths, "affected") {
		if err := checkAffectedOwnership(id, next, reg); err != nil {
			return nil, err
		}
	}
	if err := validateAsk(next, c.env.Publisher, reg); err != nil {
		return nil, err
	}
	redactions := scrubIncident(next)
	now := s.a.now()
	next.Revision, next.UpdatedAt = cur.Revision+1, now
	addHistory(next, id.Org, req.UpdateMask.Paths...)
	switch {
	case next.Status == phxv1.Status_STATUS_RESOLVED && cur.Status != phxv1.Status_STATUS_RESOLVED:
		next.ResolvedAt = now
	case next.Status != phxv1.Status_STATUS_RESOLVED:
		next.ResolvedAt = nil
	}
	msgID := fmt.Sprintf("incident/%s@%d", next.Id, next.Revision)
	if req.RequestId != "" {
		msgID = id.Org + ":incident-req:" + req.RequestId
	}
	env, err := st.write(ctx, s.envelope(next), c.env.Publisher, next.Id, msgID, req.RequestId, id.Org, c.msg.Seq)
	if errors.Is(err, bus.ErrConflict) {
		return nil, precondition("expected_revision", "incident %s changed while this update was applied; read it again", req.Id)
	}
	if err != nil {
		return nil, err
	}
	return &phxv1.UpdateIncidentResponse{Incident: s.a.present(env, recipient(id)).GetIncident(), Redactions: redactions}, nil
}

func (s *incidentSvc) GetIncident(ctx context.Context, req *phxv1.GetIncidentRequest) (resp *phxv1.GetIncidentResponse, err error) {
	id := caller(ctx)
	defer func() {
		in := resp.GetIncident()
		s.a.auditDelivered(ctx, []string{itemMessageID("incident", in.GetId(), in.GetRevision())}, err)
	}()
	if err := match("id", reIncident, req.Id); err != nil {
		return nil, err
	}
	c, err := s.store().load(ctx, req.Id, recipient(id))
	if err != nil {
		return nil, err
	}
	env := c.env
	if req.Revision != 0 {
		if env, err = s.revision(ctx, c, req.Revision); err != nil {
			return nil, err
		}
	}
	s.a.delivered(ctx, req.Id, id.Org)
	return &phxv1.GetIncidentResponse{Incident: s.a.present(env, recipient(id)).GetIncident()}, nil
}

func (s *incidentSvc) ListIncidents(ctx context.Context, req *phxv1.ListIncidentsRequest) (resp *phxv1.ListIncidentsResponse, err error) {
	id := caller(ctx)
	defer func() {
		ids := make([]string, 0, len(resp.GetIncidents()))
		for _, in := range resp.GetIncidents() {
			ids = append(ids, itemMessageID("incident", in.GetId(), in.GetRevision()))
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
	if _, ok := phxv1.Severity_name[int32(req.MinSeverity)]; !ok {
		return nil, invalid("min_severity", "%d is not a severity", req.MinSeverity)
	}
	if err := optMatch("page_token", reIncident, req.PageToken); err != nil {
		return nil, err
	}
	type row struct {
		inc *phxv1.Incident
		seq uint64
	}
	var (
		rows   []row
		anchor *phxv1.Incident // the page token's incident, filtered or not
	)
	err = s.store().eachVisible(ctx, r, func(env *phxv1.Envelope) {
		in := env.GetIncident()
		if req.PageToken != "" && in.Id == req.PageToken {
			anchor = in
		}
		if len(req.Statuses) > 0 && !slices.Contains(req.Statuses, in.Status) {
			return
		}
		if in.Severity < req.MinSeverity {
			return
		}
		if len(req.Products) > 0 && !slices.ContainsFunc(in.Affected, func(a *phxv1.Affected) bool { return slices.Contains(req.Products, a.Product) }) {
			return
		}
		rows = append(rows, row{inc: s.a.present(env, r).GetIncident()})
	})
	if err != nil {
		return nil, err
	}
	// Newest first; ties by id. The page token is the last id returned; the
	// next page starts after its place in this order, even if it has since
	// changed so that it no longer matches the filters.
	before := func(a, b *phxv1.Incident) bool {
		if !a.CreatedAt.AsTime().Equal(b.CreatedAt.AsTime()) {
			return a.CreatedAt.AsTime().After(b.CreatedAt.AsTime())
		}
		return a.Id < b.Id
	}
	sort.Slice(rows, func(i, j int) bool { return before(rows[i].inc, rows[j].inc) })
	if req.PageToken != "" {
		if anchor == nil {
			return nil, invalid("page_token", "%q is not a page of this listing", req.PageToken)
		}
		i := slices.IndexFunc(rows, func(x row) bool { return before(anchor, x.inc) })
		if i < 0 {
			i = len(rows)
		}
		rows = rows[i:]
	}
	resp = &phxv1.ListIncidentsResponse{}
	if len(rows) > size {
		rows = rows[:size]
		resp.NextPageToken = rows[size-1].inc.Id
	}
	for _, x := range rows {
		resp.Incidents = append(resp.Incidents, x.inc)
		s.a.delivered(ctx, x.inc.Id, id.Org)
	}
	return resp, nil
}
