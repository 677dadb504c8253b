package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/policy"
)

// Coordinated response (DESIGN.md section 6): the append-only timeline of
// posts, responses of asked orgs with a deadline, numbered revisions with
// who and when, and per-org delivery receipts.

// addHistory records the revision in records: who made it, when, and what
// it changed.
func addHistory(in *phxv1.Incident, author string, changed ...string) {
	in.History = append(in.History, &phxv1.RevisionInfo{Revision: in.Revision, Author: author, At: in.UpdatedAt, Changed: changed})
}

// validateAsk checks who an incident asks to respond: members of this hub
// who can see the incident, not the reporter, named once, and a deadline
// when anyone is asked.
func validateAsk(in *phxv1.Incident, reporter string, reg *members.Registry) error {
	for i, o := range in.AskedOrgs {
		f := fmt.Sprintf("incident.asked_orgs[%d]", i)
		if err := match(f, reID, o); err != nil {
			return err
		}
		m, ok := reg.Lookup(o)
		if !ok {
			return invalid(f, "%q is not a member of this hub", o)
		}
		if o == reporter {
			return invalid(f, "the reporter does not answer its own incident")
		}
		if slices.Contains(in.AskedOrgs[:i], o) {
			return invalid(f, "%q is asked twice", o)
		}
		if !policy.Visible(policy.Recipient{Org: o, OrgRole: m.Role}, reporter, in.Audience) {
			return invalid(f, "%q cannot see this incident (audience %s); widen nothing, ask orgs in the audience", o, in.Audience.GetTlp())
		}
	}
	if (len(in.AskedOrgs) > 0 || in.AskAllVendors) && in.RespondBy == nil {
		return invalid("incident.respond_by", "is required when orgs are asked to respond")
	}
	return nil
}

// askedOrgs lists the orgs an incident asks to respond, sorted: the named
// ones, and with ask_all_vendors every vendor that can see it.
func askedOrgs(in *phxv1.Incident, reporter string, reg *members.Registry) []string {
	out := slices.Clone(in.AskedOrgs)
	if in.AskAllVendors {
		for _, o := range reg.Orgs() {
			m, _ := reg.Lookup(o)
			if m.Role == members.RoleVendor && o != reporter && !slices.Contains(out, o) &&
				policy.Visible(policy.Recipient{Org: o, OrgRole: m.Role}, reporter, in.Audience) {
				out = append(out, o)
			}
		}
	}
	slices.Sort(out)
	return out
}

// completeResponses adds, for every asked org that has not answered, a
// response of kind NO_RESPONSE once the deadline has passed, or of kind
// UNSPECIFIED (asked, not answered yet) before it. Answers come first in
// the order given; then the others by org.
func (a *API) completeResponses(in *phxv1.Incident, reporter string) {
	asked := askedOrgs(in, reporter, a.cfg.Registry.Get())
	late := in.RespondBy != nil && a.cfg.Now().After(in.RespondBy.AsTime())
	for _, o := range asked {
		if slices.ContainsFunc(in.Responses, func(r *phxv1.Response) bool { return r.Org == o }) {
			continue
		}
		kind := phxv1.ResponseKind_RESPONSE_KIND_UNSPECIFIED
		if late {
			kind = phxv1.ResponseKind_RESPONSE_KIND_NO_RESPONSE
		}
		in.Responses = append(in.Responses, &phxv1.Response{Org: o, Kind: kind})
	}
}

// errContended: an incident kept changing under a post or response.
var errContended = errors.New("too many changes at once")

// mutate applies change to the current revision of incident id, as r sees
// it, and stores the result as the next revision, retrying when another
// writer got there first. Posts and responses are not compare-and-set for
// the caller: they append to whatever is current.
func (s *incidentSvc) mutate(ctx context.Context, id *authn.Identity, incidentID string, change func(cur, next *phxv1.Incident) ([]string, error)) (*phxv1.Envelope, error) {
	st := s.store()
	for attempt := 0; ; attempt++ {
		c, err := st.load(ctx, incidentID, recipient(id))
		if err != nil {
			return nil, err
		}
		cur := c.env.GetIncident()
		next := clone(cur)
		changed, err := change(cur, next)
		if err != nil {
			return nil, err
		}
		next.Revision, next.UpdatedAt = cur.Revision+1, s.a.now()
		if next.Status == phxv1.Status_STATUS_RESOLVED && cur.Status != phxv1.Status_STATUS_RESOLVED {
			next.ResolvedAt = next.UpdatedAt
		}
		addHistory(next, id.Org, changed...)
		msgID := fmt.Sprintf("incident/%s@%d", next.Id, next.Revision)
		env, err := st.write(ctx, s.envelope(next), c.env.Publisher, next.Id, msgID, "", id.Org, c.msg.Seq)
		if errors.Is(err, bus.ErrConflict) && attempt < 8 {
			continue
		}
		if errors.Is(err, bus.ErrConflict) {
			return nil, fmt.Errorf("%w: %s is being changed by many at once; try again", errContended, incidentID)
		}
		if err == nil {
			s.a.delivered(ctx, incidentID, id.Org) // the reply carries the incident
		}
		return env, err
	}
}

func (s *incidentSvc) AddPost(ctx context.Context, req *phxv1.AddPostRequest) (_ *phxv1.AddPostResponse, err error) {
	id := caller(ctx)
	if err := match("id", reIncident, req.Id); err != nil {
		return nil, err
	}
	if err := validText("text", req.Text, maxText, true); err != nil {
		return nil, err
	}
	if req.Status != phxv1.Status_STATUS_UNSPECIFIED {
		if _, ok := phxv1.Status_name[int32(req.Status)]; !ok {
			return nil, invalid("status", "%d is not a status", req.Status)
		}
	}
	text := req.Text
	redactions := scrubFields("", map[string]*string{"text": &text})
	defer func() {
		s.a.record(ctx, withOutcome(audit.Event{Kind: audit.KindUpdate, IDs: []string{req.GetId()}, Detail: "post"}, err))
	}()
	env, err := s.mutate(ctx, id, req.Id, func(cur, next *phxv1.Incident) ([]string, error) {
		changed := []string{"post"}
		if req.Status != phxv1.Status_STATUS_UNSPECIFIED && req.Status != cur.Status {
			if next.Reporter != id.Org && id.Member.Role != members.RolePlatform {
				return nil, denied("status", "only the reporter or the platform may change the status of %s", req.Id)
			}
			if err := checkStatusMove(cur.Status, req.Status); err != nil {
				return nil, err
			}
			next.Status = req.Status
			changed = append(changed, "status")
		}
		next.Posts = append(next.Posts, &phxv1.Post{
			Seq: uint32(len(cur.Posts) + 1), Author: id.Org, PostedAt: s.a.now(), Text: text, Status: req.Status,
		})
		return changed, nil
	})
	if err != nil {
		return nil, err
	}
	return &phxv1.AddPostResponse{Incident: s.a.present(env, recipient(id)).GetIncident(), Redactions: redactions}, nil
}

func (s *incidentSvc) Respond(ctx context.Context, req *phxv1.RespondRequest) (_ *phxv1.RespondResponse, err error) {
	id := caller(ctx)
	if err := match("id", reIncident, req.Id); err != nil {
		return nil, err
	}
	switch req.Kind {
	case phxv1.ResponseKind_RESPONSE_KIND_AFFECTED, phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED, phxv1.ResponseKind_RESPONSE_KIND_INVESTIGATING:
	default:
		return nil, invalid("kind", "answer RESPONSE_KIND_AFFECTED, RESPONSE_KIND_NOT_AFFECTED or RESPONSE_KIND_INVESTIGATING, not %s", req.Kind)
	}
	if err := validText("statement", req.Statement, maxText, false); err != nil {
		return nil, err
	}
	statement := req.Statement
	redactions := scrubFields("", map[string]*string{"statement": &statement})
	defer func() {
		s.a.record(ctx, withOutcome(audit.Event{Kind: audit.KindUpdate, IDs: []string{req.GetId()}, Detail: "response " + req.Kind.String()}, err))
	}()
	reg := s.a.cfg.Registry.Get()
	env, err := s.mutate(ctx, id, req.Id, func(cur, next *phxv1.Incident) ([]string, error) {
		if !slices.Contains(askedOrgs(cur, cur.Reporter, reg), id.Org) {
			return nil, precondition("id", "%s was not asked to respond to %s", id.Org, req.Id)
		}
		r := &phxv1.Response{Org: id.Org, Kind: req.Kind, Statement: statement, RespondedAt: s.a.now()}
		if i := slices.IndexFunc(next.Responses, func(x *phxv1.Response) bool { return x.Org == id.Org }); i >= 0 {
			next.Responses[i] = r // an org may change its answer; the history keeps the old one
		} else {
			next.Responses = append(next.Responses, r)
		}
		return []string{"response"}, nil
	})
	if err != nil {
		return nil, err
	}
	return &phxv1.RespondResponse{Incident: s.a.present(env, recipient(id)).GetIncident(), Redactions: redactions}, nil
}

// receiptSubject is where one org's receipt of an incident is kept:
// phx.v1.receipt.<incident>.<org>.<delivered|acked>, written once.
func receiptSubject(incidentID, org, what string) string {
	return "phx.v1.receipt." + incidentID + "." + org + "." + what
}

// receipt records, once, that org received or acknowledged an incident,
// and returns when it first did.
func (a *API) receipt(ctx context.Context, incidentID, org, what string) (time.Time, error) {
	subj := receiptSubject(incidentID, org, what)
	if t, ok := a.receipts.Load(subj); ok {
		return t.(time.Time), nil
	}
	// An incident fanned out to many streams of one org asks at once:
	// one of them records the receipt, the others wait for it.
	v, err, _ := a.flight.Do("receipt "+subj, func() (any, error) {
		ctx, cancel := sharedCtx(ctx)
		defer cancel()
		return a.recordReceipt(ctx, subj)
	})
	if err != nil {
		return time.Time{}, err
	}
	return v.(time.Time), nil
}

// recordReceipt stores the receipt subj unless it is stored already, and
// returns its time.
func (a *API) recordReceipt(ctx context.Context, subj string) (time.Time, error) {
	if t, ok := a.receipts.Load(subj); ok {
		return t.(time.Time), nil
	}
	now := a.cfg.Now().UTC()
	data, _ := now.MarshalText()
	_, err := a.cfg.Bus.PublishExpect(ctx, bus.Message{Subject: subj, Data: data}, subj, 0)
	if errors.Is(err, bus.ErrConflict) {
		m, gerr := a.cfg.Bus.Last(ctx, bus.StreamReceipts, subj)
		if gerr != nil {
			return time.Time{}, gerr
		}
		if err := now.UnmarshalText(m.Data); err != nil {
			return time.Time{}, err
		}
	} else if err != nil {
		return time.Time{}, err
	}
	a.receipts.Store(subj, now)
	return now, nil
}

// delivered records the first delivery of an incident to an org; a
// failure is logged, not returned: the delivery itself has happened.
func (a *API) delivered(ctx context.Context, incidentID, org string) {
	if _, err := a.receipt(ctx, incidentID, org, "delivered"); err != nil {
		a.log.Warn("delivery receipt not recorded", "incident", incidentID, "org", org, "err", err)
	}
}

func (s *incidentSvc) Acknowledge(ctx context.Context, req *phxv1.AcknowledgeRequest) (*phxv1.AcknowledgeResponse, error) {
	id := caller(ctx)
	if err := match("id", reIncident, req.Id); err != nil {
		return nil, err
	}
	if _, err := s.store().load(ctx, req.Id, recipient(id)); err != nil {
		return nil, err
	}
	s.a.delivered(ctx, req.Id, id.Org) // it was read, or it could not be acknowledged
	at, err := s.a.receipt(ctx, req.Id, id.Org, "acked")
	if err != nil {
		return nil, err
	}
	return &phxv1.AcknowledgeResponse{AcknowledgedAt: timestamppb.New(at)}, nil
}

func (s *incidentSvc) ListReceipts(ctx context.Context, req *phxv1.ListReceiptsRequest) (*phxv1.ListReceiptsResponse, error) {
	id := caller(ctx)
	if err := match("id", reIncident, req.Id); err != nil {
		return nil, err
	}
	c, err := s.store().load(ctx, req.Id, recipient(id))
	if err != nil {
		return nil, err
	}
	in := c.env.GetIncident()
	if c.env.Publisher != id.Org && id.Member.Role != members.RolePlatform {
		return nil, denied("id", "only the reporter or the platform may list the receipts of %s", req.Id)
	}
	// One row per org in the current audience: never an org outside it.
	reg := s.a.cfg.Registry.Get()
	rows := map[string]*phxv1.Receipt{}
	for _, o := range reg.Orgs() {
		m, _ := reg.Lookup(o)
		if o == c.env.Publisher || m.Role == members.RoleOperator {
			continue
		}
		if policy.Visible(policy.Recipient{Org: o, OrgRole: m.Role}, c.env.Publisher, in.Audience) {
			rows[o] = &phxv1.Receipt{Org: o}
		}
	}
	err = s.a.cfg.Bus.LastPerSubject(ctx, bus.StreamReceipts, "phx.v1.receipt."+req.Id+".>", func(m *bus.StoredMsg) error {
		org, what, _ := strings.Cut(strings.TrimPrefix(m.Subject, "phx.v1.receipt."+req.Id+"."), ".")
		r, ok := rows[org]
		if !ok {
			return nil
		}
		var t time.Time
		if err := t.UnmarshalText(m.Data); err != nil {
			return nil
		}
		switch what {
		case "delivered":
			r.DeliveredAt = timestamppb.New(t)
		case "acked":
			r.AcknowledgedAt = timestamppb.New(t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &phxv1.ListReceiptsResponse{}
	for _, r := range rows {
		out.Receipts = append(out.Receipts, r)
	}
	sort.Slice(out.Receipts, func(i, j int) bool { return out.Receipts[i].Org < out.Receipts[j].Org })
	return out, nil
}

// revision returns revision rev of an incident r may see now (its current
// audience decides), or errNotFound.
func (s *incidentSvc) revision(ctx context.Context, c *current, rev uint64) (*phxv1.Envelope, error) {
	cur := c.env.GetIncident()
	if rev == cur.Revision {
		return c.env, nil
	}
	if rev > cur.Revision {
		return nil, fmt.Errorf("%w: incident %s has %d revisions", errNotFound, cur.Id, cur.Revision)
	}
	subject := s.store().anyOwner(cur.Id)
	for seq := uint64(1); ; {
		m, err := s.a.cfg.Bus.NextForSubject(ctx, bus.StreamIncidents, subject, seq)
		if errors.Is(err, bus.ErrNotFound) {
			return nil, fmt.Errorf("%w: revision %d of incident %s is no longer kept", errNotFound, rev, cur.Id)
		}
		if err != nil {
			return nil, err
		}
		env, err := decodeEnvelope(m.Data)
		if err != nil {
			return nil, err
		}
		if got := env.GetIncident().GetRevision(); got == rev {
			return env, nil
		} else if got > rev {
			return nil, fmt.Errorf("%w: revision %d of incident %s is no longer kept", errNotFound, rev, cur.Id)
		}
		seq = m.Seq + 1
	}
}
