package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/pki"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// The sharing table of DESIGN.md section 5, written out from its text and
// not taken from the hub's policy package: for each label, whether an org of
// a role receives an item, given whether the audience names it.
var section5 = map[phxv1.Tlp]func(role string, named bool) bool{
	// every member, and public feeds
	phxv1.Tlp_TLP_CLEAR: func(string, bool) bool { return true },
	// every member, CERTs included
	phxv1.Tlp_TLP_GREEN: func(string, bool) bool { return true },
	// vendors and the platform; CERTs only when named in orgs
	phxv1.Tlp_TLP_AMBER: amberRow,
	// as AMBER (recipients are told it may not leave their organization)
	phxv1.Tlp_TLP_AMBER_STRICT: amberRow,
	// only the orgs named in orgs
	phxv1.Tlp_TLP_RED: func(_ string, named bool) bool { return named },
}

func amberRow(role string, named bool) bool {
	switch role {
	case members.RoleVendor, members.RolePlatform:
		return true
	case members.RoleCERT:
		return named
	}
	return false
}

// shouldSee applies section 5 to one reader: the publisher always sees its
// own items; a non-empty orgs narrows every label to the orgs named; then
// the label's row decides.
func shouldSee(reader members.Member, publisher string, aud *phxv1.Audience) bool {
	if reader.Org == publisher {
		return true
	}
	named := slices.Contains(aud.Orgs, reader.Org)
	if len(aud.Orgs) > 0 && !named {
		return false
	}
	row, ok := section5[aud.Tlp]
	return ok && row(reader.Role, named)
}

// showsRealPublisher: a pseudonymous publisher is shown by its org to the
// platform, the hub operator and itself; every other reader gets the
// pseudonym.
func showsRealPublisher(reader members.Member, publisher string) bool {
	return reader.Org == publisher || reader.Role == members.RolePlatform || reader.Role == members.RoleOperator
}

// matrixWait bounds the long-lived streams of these tests (publishing a few
// hundred items under -race on a loaded machine takes a while); nothing is
// asserted on timing.
const matrixWait = 3 * time.Minute

// streamAfter subscribes and reads the first heartbeat, so the stream's start
// position is fixed before the call returns.
func streamAfter(t *testing.T, c *clients, req *phxv1.SubscribeRequest) grpc.ServerStreamingClient[phxv1.Envelope] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), matrixWait)
	t.Cleanup(cancel)
	st, err := c.feed.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	env, err := st.Recv()
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if env.Kind != phxv1.Kind_KIND_HEARTBEAT {
		t.Fatalf("first envelope is %s, want a heartbeat", env.Kind)
	}
	return st
}

// drain reads items until it has received one sentinel of each kind, that
// is an item of that kind published by sentinelOrg, and returns the other
// items. Each kind is one stream delivered in order, and the sentinels are
// published last: once they are in, everything before them is too.
func drain(st grpc.ServerStreamingClient[phxv1.Envelope], sentinelOrg string, kinds []phxv1.Kind) ([]*phxv1.Envelope, error) {
	pending := map[phxv1.Kind]bool{}
	for _, k := range kinds {
		pending[k] = true
	}
	var out []*phxv1.Envelope
	for len(pending) > 0 {
		env, err := st.Recv()
		if err != nil {
			return out, fmt.Errorf("after %d items, still waiting for the sentinels of %v: %w", len(out), pending, err)
		}
		if env.Cursor == "" {
			return out, fmt.Errorf("%s %s without a cursor", env.Kind, env.MessageId)
		}
		switch {
		case env.Kind == phxv1.Kind_KIND_HEARTBEAT:
		case env.Publisher == sentinelOrg:
			delete(pending, env.Kind)
		default:
			out = append(out, env)
		}
	}
	return out, nil
}

// drainAll drains one stream per reader concurrently.
func drainAll(streams map[string]grpc.ServerStreamingClient[phxv1.Envelope], sentinelOrg string, kinds []phxv1.Kind) (map[string][]*phxv1.Envelope, map[string]error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		got  = map[string][]*phxv1.Envelope{}
		errs = map[string]error{}
	)
	for org, st := range streams {
		wg.Go(func() {
			envs, err := drain(st, sentinelOrg, kinds)
			mu.Lock()
			defer mu.Unlock()
			got[org], errs[org] = envs, err
		})
	}
	wg.Wait()
	return got, errs
}

// publishSentinels publishes one GREEN item of each kind as org, after
// everything else.
func publishSentinels(t *testing.T, c *clients, product string, kinds []phxv1.Kind) {
	t.Helper()
	for _, k := range kinds {
		switch k {
		case phxv1.Kind_KIND_HEALTH_SIGNAL:
			publish(t, c, cell(product))
		case phxv1.Kind_KIND_ROLLOUT:
			announce(t, c, rollout(uniq("sentinel"), product, green()))
		case phxv1.Kind_KIND_INCIDENT:
			report(t, c, incident("sentinel", product, phxv1.Severity_SEVERITY_LOW, green()))
		}
	}
}

// listPages reads every page of a listing and checks that the paging shows
// only what the reader may see: every page but the last is full and ends at
// its token, the last one has no token, and nothing comes twice. So the
// number of pages follows from the visible items alone.
func listPages[T any](size int, page func(token string) ([]T, string, error), id func(T) string) ([]T, error) {
	var (
		all   []T
		seen  = map[string]bool{}
		token string
	)
	for n := 1; ; n++ {
		items, next, err := page(token)
		if err != nil {
			return all, fmt.Errorf("page %d: %w", n, err)
		}
		if len(items) > size {
			return all, fmt.Errorf("page %d has %d items, page_size %d", n, len(items), size)
		}
		for _, it := range items {
			if seen[id(it)] {
				return all, fmt.Errorf("page %d repeats %s", n, id(it))
			}
			seen[id(it)] = true
		}
		all = append(all, items...)
		if next == "" {
			if len(items) == 0 && n > 1 {
				return all, fmt.Errorf("page %d is empty, yet page %d had a next_page_token", n, n-1)
			}
			return all, nil
		}
		if len(items) != size || next != id(items[len(items)-1]) {
			return all, fmt.Errorf("page %d: %d items (page_size %d) with next_page_token %q: a short page or a token that is not the last item shown betrays hidden items", n, len(items), size, next)
		}
		token = next
	}
}

// itemID is the rollout id or incident id of env ("" for other kinds).
func itemID(env *phxv1.Envelope) string {
	if r := env.GetRollout(); r != nil {
		return r.RolloutId
	}
	return env.GetIncident().GetId()
}

// notFoundShape is a NotFound status with the id taken out, so the answer
// for a hidden item can be compared with the one for an id that never
// existed.
func notFoundShape(err error, id string) string {
	st, _ := status.FromError(err)
	return fmt.Sprintf("%s %q details=%d", st.Code(), strings.ReplaceAll(st.Message(), id, "<id>"), len(st.Details()))
}

// delivery is one item as a reader received it on one path.
type delivery struct {
	key       string
	kind      phxv1.Kind
	revision  uint64
	publisher string // as shown: the envelope's, the rollout's or the incident reporter
	audience  *phxv1.Audience
	// inconsistent says how the delivery disagrees with itself (envelope
	// against item).
	inconsistent string
	// msg is the delivered message, for finding a hidden publisher in it.
	msg proto.Message
}

func fromEnvelope(env *phxv1.Envelope) delivery {
	d := delivery{key: key(env), kind: env.Kind, publisher: env.Publisher, audience: env.Audience, msg: env}
	var itemAud *phxv1.Audience
	switch it := env.Item.(type) {
	case *phxv1.Envelope_HealthSignal:
		itemAud, d.revision = it.HealthSignal.Audience, 1
		if !strings.HasSuffix(env.MessageId, "/"+it.HealthSignal.SignalId) || !strings.HasPrefix(env.MessageId, env.Publisher+"/") {
			d.inconsistent = fmt.Sprintf("message_id %q is not <publisher>/<signal_id> with publisher %q", env.MessageId, env.Publisher)
		}
	case *phxv1.Envelope_Rollout:
		itemAud, d.revision = it.Rollout.Audience, it.Rollout.Revision
		if it.Rollout.Publisher != env.Publisher {
			d.inconsistent = fmt.Sprintf("envelope publisher %q, rollout publisher %q", env.Publisher, it.Rollout.Publisher)
		}
	case *phxv1.Envelope_Incident:
		itemAud, d.revision = it.Incident.Audience, it.Incident.Revision
		if it.Incident.Reporter != env.Publisher {
			d.inconsistent = fmt.Sprintf("envelope publisher %q, incident reporter %q", env.Publisher, it.Incident.Reporter)
		}
	default:
		d.inconsistent = fmt.Sprintf("unexpected %s envelope", env.Kind)
	}
	if d.inconsistent == "" && !proto.Equal(env.Audience, itemAud) {
		d.inconsistent = fmt.Sprintf("envelope audience {%v}, item audience {%v}", env.Audience, itemAud)
	}
	return d
}

func fromRollout(r *phxv1.Rollout) delivery {
	return delivery{key: rkey(r), kind: phxv1.Kind_KIND_ROLLOUT, revision: r.Revision, publisher: r.Publisher, audience: r.Audience, msg: r}
}

func fromIncident(in *phxv1.Incident) delivery {
	return delivery{key: ikey(in), kind: phxv1.Kind_KIND_INCIDENT, revision: in.Revision, publisher: in.Reporter, audience: in.Audience, msg: in}
}

// withoutProducts returns m as text with its product fields cleared: the
// product is public and names what it names; nothing else may name a
// pseudonymous publisher.
func withoutProducts(m proto.Message) string {
	m = proto.Clone(m)
	clearProducts := func(m proto.Message) {
		switch x := m.(type) {
		case *phxv1.HealthSignal:
			x.Product = ""
		case *phxv1.Rollout:
			x.Product = ""
		case *phxv1.Incident:
			for _, a := range x.Affected {
				a.Product = ""
			}
		}
	}
	if env, ok := m.(*phxv1.Envelope); ok {
		env.Product = ""
		switch it := env.Item.(type) {
		case *phxv1.Envelope_HealthSignal:
			clearProducts(it.HealthSignal)
		case *phxv1.Envelope_Rollout:
			clearProducts(it.Rollout)
		case *phxv1.Envelope_Incident:
			clearProducts(it.Incident)
		}
	} else {
		clearProducts(m)
	}
	return prototext.Format(m)
}

// matrixItem is one combination of the matrix.
type matrixItem struct {
	kind      phxv1.Kind
	publisher string
	aud       *phxv1.Audience
	// name encodes the combination; it is the signal and rollout id and
	// the incident title.
	name string
	// id is the signal id, rollout id or hub-assigned incident id ("" for
	// a refused incident).
	id      string
	key     string
	refused bool // TLP_RED without orgs: refused at publish, never stored
}

var kindNames = map[phxv1.Kind]string{
	phxv1.Kind_KIND_HEALTH_SIGNAL: "health signal",
	phxv1.Kind_KIND_ROLLOUT:       "rollout",
	phxv1.Kind_KIND_INCIDENT:      "incident",
}

func (it *matrixItem) String() string {
	s := fmt.Sprintf("%s %s by %s (%s orgs=%v pseudonymous=%t)", kindNames[it.kind], it.name, it.publisher, it.aud.Tlp, it.aud.Orgs, it.aud.Pseudonymous)
	if it.kind == phxv1.Kind_KIND_INCIDENT && it.id != "" {
		s += " id " + it.id
	}
	return s
}

// TestPolicyMatrix publishes every combination of kind, TLP label, named
// orgs and pseudonym flag as a vendor and as the platform, reads every path
// as every org of the dev registry, and compares what each org got with
// section 5 of the design.
func TestPolicyMatrix(t *testing.T) {
	t.Parallel()
	start := time.Now()
	h := servertest.Start(t)

	readers := pki.DevMembers
	cl := map[string]*clients{}
	for _, m := range readers {
		cl[m.Org] = as(t, h, m.Org)
	}
	publishers := []struct{ org, product, short string }{
		{"contoso", "contoso-av", "con"}, // a vendor, for its own product
		{"microsoft", "defender", "ms"},  // the platform
	}
	labels := []struct {
		tlp   phxv1.Tlp
		short string
	}{
		{phxv1.Tlp_TLP_CLEAR, "clear"}, {phxv1.Tlp_TLP_GREEN, "green"}, {phxv1.Tlp_TLP_AMBER, "amber"},
		{phxv1.Tlp_TLP_AMBER_STRICT, "strict"}, {phxv1.Tlp_TLP_RED, "red"},
	}
	// Named orgs: none; a vendor; a CERT (lets it into AMBER); both; the
	// platform (the publisher itself when it publishes); the vendor
	// publisher with the operator (which the table leaves out of AMBER).
	orgSets := []struct {
		short string
		orgs  []string
	}{
		{"none", nil}, {"fab", []string{"fabrikam"}}, {"cert", []string{"national-cert"}},
		{"fab-cert", []string{"fabrikam", "national-cert"}}, {"ms", []string{"microsoft"}},
		{"con-op", []string{"contoso", "operator"}},
	}
	kinds := []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL, phxv1.Kind_KIND_ROLLOUT, phxv1.Kind_KIND_INCIDENT}
	const sentinelOrg, sentinelProduct = "northwind", "northwind-sensor"
	for _, p := range publishers {
		if p.org == sentinelOrg {
			t.Fatal("the sentinel org must not publish matrix items")
		}
	}

	var items []*matrixItem
	for _, k := range kinds {
		for _, p := range publishers {
			for _, l := range labels {
				for _, o := range orgSets {
					for _, anon := range []bool{false, true} {
						pn := "real"
						if anon {
							pn = "anon"
						}
						name := fmt.Sprintf("pm-%s-%s-%s-%s-%s", strings.Split(kindNames[k], " ")[0], p.short, l.short, o.short, pn)
						items = append(items, &matrixItem{
							kind: k, publisher: p.org, name: name,
							aud:     &phxv1.Audience{Tlp: l.tlp, Orgs: o.orgs, Pseudonymous: anon},
							refused: l.tlp == phxv1.Tlp_TLP_RED && len(o.orgs) == 0,
						})
					}
				}
			}
		}
	}

	// Live streams open before anything is published.
	req := &phxv1.SubscribeRequest{Kinds: kinds}
	live := map[string]grpc.ServerStreamingClient[phxv1.Envelope]{}
	for _, m := range readers {
		live[m.Org] = streamAfter(t, cl[m.Org], req)
	}
	var liveGot map[string][]*phxv1.Envelope
	var liveErr map[string]error
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		liveGot, liveErr = drainAll(live, sentinelOrg, kinds)
	}()

	// Publish. Health cells go in one batch per publisher and are answered
	// per item.
	product := map[string]string{}
	for _, p := range publishers {
		product[p.org] = p.product
	}
	published := 0
	for _, p := range publishers {
		var batch []*phxv1.HealthSignal
		var of []*matrixItem
		for _, it := range items {
			if it.kind == phxv1.Kind_KIND_HEALTH_SIGNAL && it.publisher == p.org {
				s := signal(it.name)
				s.Product, s.Audience = p.product, it.aud
				it.id, it.key = it.name, "h:"+it.name
				batch, of = append(batch, s), append(of, it)
			}
		}
		res, err := cl[p.org].health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: batch})
		if err != nil {
			t.Fatalf("publish %d cells as %s: %v", len(batch), p.org, err)
		}
		for i, r := range res.Results {
			it := of[i]
			if it.refused {
				if r.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED || r.Error == nil ||
					codes.Code(r.Error.Code) != codes.InvalidArgument || r.Error.Field != "audience.orgs" || r.Cursor != "" {
					t.Fatalf("%s: %s %v cursor %q, want REJECTED with InvalidArgument on audience.orgs", it, r.Outcome, r.Error, r.Cursor)
				}
				continue
			}
			if r.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED {
				t.Fatalf("%s: %s %v", it, r.Outcome, r.Error)
			}
			published++
		}
	}
	for _, it := range items {
		c := cl[it.publisher]
		switch it.kind {
		case phxv1.Kind_KIND_ROLLOUT:
			it.id = it.name
			it.key = fmt.Sprintf("r:%s@1", it.id)
			res, err := c.rollouts.AnnounceRollout(testCtx(t), &phxv1.AnnounceRolloutRequest{Rollout: rollout(it.name, product[it.publisher], it.aud)})
			if it.refused {
				if !isCode(err, codes.InvalidArgument) {
					t.Fatalf("%s: announced (%v), want InvalidArgument", it, err)
				}
				wantStatus(t, err, codes.InvalidArgument, "rollout.audience.orgs")
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", it, err)
			}
			if res.Rollout.Publisher != it.publisher || res.Rollout.Revision != 1 || !proto.Equal(res.Rollout.Audience, it.aud) {
				t.Fatalf("%s: announced %v", it, res.Rollout)
			}
		case phxv1.Kind_KIND_INCIDENT:
			res, err := c.incident.ReportIncident(testCtx(t), &phxv1.ReportIncidentRequest{Incident: incident(it.name, product[it.publisher], phxv1.Severity_SEVERITY_HIGH, it.aud)})
			if it.refused {
				if !isCode(err, codes.InvalidArgument) {
					t.Fatalf("%s: reported (%v), want InvalidArgument", it, err)
				}
				wantStatus(t, err, codes.InvalidArgument, "incident.audience.orgs")
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", it, err)
			}
			if res.Incident.Reporter != it.publisher || res.Incident.Revision != 1 || !proto.Equal(res.Incident.Audience, it.aud) {
				t.Fatalf("%s: reported %v", it, res.Incident)
			}
			it.id, it.key = res.Incident.Id, ikey(res.Incident)
		default:
			continue
		}
		published++
	}
	publishSentinels(t, cl[sentinelOrg], sentinelProduct, kinds)

	// Replays from cursor 0, opened after everything was published.
	replay := map[string]grpc.ServerStreamingClient[phxv1.Envelope]{}
	for _, m := range readers {
		replay[m.Org] = streamAfter(t, cl[m.Org], &phxv1.SubscribeRequest{Kinds: kinds, Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h0.r0.i0.a0"}})
	}
	replayGot, replayErr := drainAll(replay, sentinelOrg, kinds)
	<-liveDone

	byKey := map[string]*matrixItem{}
	for _, it := range items {
		if it.key != "" {
			byKey[it.key] = it
		}
	}

	const maxErrors = 40
	nerr := 0
	errorf := func(format string, args ...any) {
		t.Helper()
		nerr++
		if nerr <= maxErrors {
			t.Errorf(format, args...)
		}
	}
	pseudonyms := map[string]string{} // real publisher → the pseudonym peers see
	decisions, deliveries := 0, 0

	// check compares what reader got on path with the table: every item of
	// kinds it should see exactly once, nothing else, each shown as the
	// policy says.
	check := func(reader members.Member, path string, pathKinds []phxv1.Kind, got []delivery) {
		t.Helper()
		seen := map[string]bool{}
		for _, d := range got {
			it := byKey[d.key]
			if it == nil {
				errorf("%s, %s: got %s %s, which was never published (or was refused)", reader.Org, path, d.kind, d.key)
				continue
			}
			if seen[d.key] {
				errorf("%s, %s: %s delivered twice", reader.Org, path, it)
				continue
			}
			seen[d.key] = true
			if it.refused || !shouldSee(reader, it.publisher, it.aud) {
				errorf("%s, %s: got %s, which section 5 hides from a %s", reader.Org, path, it, reader.Role)
				continue
			}
			deliveries++
			if d.inconsistent != "" {
				errorf("%s, %s: %s: %s", reader.Org, path, it, d.inconsistent)
			}
			if d.kind != it.kind || d.revision != 1 {
				errorf("%s, %s: %s arrived as %s revision %d", reader.Org, path, it, d.kind, d.revision)
			}
			if !proto.Equal(d.audience, it.aud) {
				errorf("%s, %s: %s arrived with audience {%v}", reader.Org, path, it, d.audience)
			} else if it.aud.Tlp == phxv1.Tlp_TLP_AMBER_STRICT && d.audience.GetTlp() != phxv1.Tlp_TLP_AMBER_STRICT {
				errorf("%s, %s: %s: the recipient is not told it is TLP_AMBER_STRICT", reader.Org, path, it)
			}
			switch {
			case !it.aud.Pseudonymous || showsRealPublisher(reader, it.publisher):
				if d.publisher != it.publisher {
					errorf("%s, %s: %s shown as published by %q, want %q", reader.Org, path, it, d.publisher, it.publisher)
				}
			case !pseudonym.MatchString(d.publisher):
				errorf("%s, %s: %s shown as published by %q, want its pseudonym anon-…", reader.Org, path, it, d.publisher)
			default:
				if p, ok := pseudonyms[it.publisher]; ok && p != d.publisher {
					errorf("%s, %s: %s shown as published by %q, elsewhere by %q: the pseudonym is not stable", reader.Org, path, it, d.publisher, p)
				}
				pseudonyms[it.publisher] = d.publisher
				if txt := withoutProducts(d.msg); strings.Contains(txt, it.publisher) {
					errorf("%s, %s: %s names its pseudonymous publisher:\n%s", reader.Org, path, it, txt)
				}
			}
		}
		for _, it := range items {
			if !slices.Contains(pathKinds, it.kind) || it.key == "" {
				continue
			}
			decisions++
			if !seen[it.key] && !it.refused && shouldSee(reader, it.publisher, it.aud) {
				errorf("%s, %s: missing %s, which section 5 shows to a %s", reader.Org, path, it, reader.Role)
			}
		}
	}

	versioned := []phxv1.Kind{phxv1.Kind_KIND_ROLLOUT, phxv1.Kind_KIND_INCIDENT}
	const pageSize = 7
	for _, reader := range readers {
		c := cl[reader.Org]
		for _, res := range []struct {
			path string
			envs []*phxv1.Envelope
			err  error
		}{
			{"live stream", liveGot[reader.Org], liveErr[reader.Org]},
			{"replay from cursor 0", replayGot[reader.Org], replayErr[reader.Org]},
		} {
			if res.err != nil {
				errorf("%s, %s: %v", reader.Org, res.path, res.err)
			}
			var ds []delivery
			for _, env := range res.envs {
				ds = append(ds, fromEnvelope(env))
			}
			check(reader, res.path, kinds, ds)
		}

		// Get every item published, and every refused rollout by its id.
		// What the reader may not see answers exactly like an id that
		// never existed.
		_, err := c.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: "pm-never-published"})
		noRollout := notFoundShape(err, "pm-never-published")
		if !isCode(err, codes.NotFound) {
			t.Fatalf("%s: get of a rollout that never existed: %v", reader.Org, err)
		}
		_, err = c.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: "INC-0000000000"})
		noIncident := notFoundShape(err, "INC-0000000000")
		if !isCode(err, codes.NotFound) {
			t.Fatalf("%s: get of an incident that never existed: %v", reader.Org, err)
		}
		var got []delivery
		for _, it := range items {
			var (
				d     delivery
				err   error
				never string
			)
			switch {
			case it.kind == phxv1.Kind_KIND_ROLLOUT:
				var res *phxv1.GetRolloutResponse
				res, err = c.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: it.id})
				if err == nil {
					d = fromRollout(res.Rollout)
				}
				never = noRollout
			case it.kind == phxv1.Kind_KIND_INCIDENT && it.id != "":
				var res *phxv1.GetIncidentResponse
				res, err = c.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: it.id})
				if err == nil {
					d = fromIncident(res.Incident)
				}
				never = noIncident
			default:
				continue
			}
			if err == nil {
				got = append(got, d)
				continue
			}
			if shape := notFoundShape(err, it.id); !isCode(err, codes.NotFound) || shape != never {
				errorf("%s, get: %s answered %s, an id that never existed %s", reader.Org, it, shape, never)
			}
			if !it.refused && shouldSee(reader, it.publisher, it.aud) {
				errorf("%s, get: %s: %v, but section 5 shows it to a %s", reader.Org, it, err, reader.Role)
			}
		}
		check(reader, "get", versioned, got)

		// List, every page.
		rs, err := listPages(pageSize, func(token string) ([]*phxv1.Rollout, string, error) {
			res, err := c.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{PageSize: pageSize, PageToken: token})
			return res.GetRollouts(), res.GetNextPageToken(), err
		}, func(r *phxv1.Rollout) string { return r.RolloutId })
		if err != nil {
			errorf("%s, list rollouts: %v", reader.Org, err)
		}
		is, err := listPages(pageSize, func(token string) ([]*phxv1.Incident, string, error) {
			res, err := c.incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{PageSize: pageSize, PageToken: token})
			return res.GetIncidents(), res.GetNextPageToken(), err
		}, func(in *phxv1.Incident) string { return in.Id })
		if err != nil {
			errorf("%s, list incidents: %v", reader.Org, err)
		}
		got = got[:0]
		for _, r := range rs {
			if r.Publisher != sentinelOrg {
				got = append(got, fromRollout(r))
			}
		}
		for _, in := range is {
			if in.Reporter != sentinelOrg {
				got = append(got, fromIncident(in))
			}
		}
		check(reader, "list", versioned, got)
	}

	if a, b := pseudonyms["contoso"], pseudonyms["microsoft"]; a == "" || b == "" || a == b {
		errorf("pseudonyms of contoso %q and microsoft %q: want two different ones", a, b)
	}
	if nerr > maxErrors {
		t.Errorf("... and %d more", nerr-maxErrors)
	}
	t.Logf("%d combinations, %d items published, %d refused (TLP_RED without orgs); %d readers × up to 4 paths: %d visibility decisions checked, %d deliveries checked; %s",
		len(items), published, len(items)-published, len(readers), decisions, deliveries, time.Since(start).Round(time.Millisecond))
}

// TestPolicyWiden updates the audience of a rollout and of an incident: each
// widening is refused and changes nothing; a narrowing is applied and the org
// narrowed out no longer finds the item on any path.
func TestPolicyWiden(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	readers := pki.DevMembers
	cl := map[string]*clients{}
	for _, m := range readers {
		cl[m.Org] = as(t, h, m.Org)
	}
	contoso := cl["contoso"]
	const sentinelOrg, sentinelProduct = "fabrikam", "fabrikam-edr"
	kinds := []phxv1.Kind{phxv1.Kind_KIND_ROLLOUT, phxv1.Kind_KIND_INCIDENT}

	orgs := []string{"fabrikam", "northwind", "national-cert"}
	from := &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: orgs, Pseudonymous: true}
	// Narrowed: a stricter label, northwind dropped.
	to := &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT, Orgs: []string{"fabrikam", "national-cert"}, Pseudonymous: true}
	widenings := []struct {
		name string
		aud  *phxv1.Audience
	}{
		{"a less strict label (GREEN)", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN, Orgs: orgs, Pseudonymous: true}},
		{"a less strict label (CLEAR)", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_CLEAR, Orgs: orgs, Pseudonymous: true}},
		{"adding an org", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: append(slices.Clone(orgs), "microsoft"), Pseudonymous: true}},
		{"replacing an org", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: []string{"fabrikam", "national-cert", "microsoft"}, Pseudonymous: true}},
		{"dropping the named orgs", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Pseudonymous: true}},
		{"un-pseudonymizing", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Orgs: orgs}},
		{"a stricter label that drops the named orgs", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT, Pseudonymous: true}},
	}

	// One target per kind that has an audience to update.
	type target struct {
		kind   string
		id     string
		field  string
		update func(aud *phxv1.Audience) (uint64, error)
		// get returns the revision and audience org sees, or the error.
		get   func(org string) (uint64, *phxv1.Audience, error)
		never string // an id of this kind that never existed
		// listed reports whether org's listing holds the item.
		listed func(org string) (bool, error)
		key    func(rev uint64) string
	}
	ro := announce(t, contoso, rollout("w-rollout", "contoso-av", from))
	in := report(t, contoso, incident("widening", "contoso-av", phxv1.Severity_SEVERITY_HIGH, from))
	targets := []target{
		{
			kind: "rollout", id: ro.RolloutId, field: "rollout.audience", never: "w-never-published",
			update: func(aud *phxv1.Audience) (uint64, error) {
				res, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: ro.RolloutId, ExpectedRevision: 1,
					Rollout: &phxv1.Rollout{Audience: aud}, UpdateMask: mask("audience")})
				return res.GetRollout().GetRevision(), err
			},
			get: func(org string) (uint64, *phxv1.Audience, error) {
				res, err := cl[org].rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: ro.RolloutId})
				return res.GetRollout().GetRevision(), res.GetRollout().GetAudience(), err
			},
			listed: func(org string) (bool, error) {
				rs, err := listPages(2, func(token string) ([]*phxv1.Rollout, string, error) {
					res, err := cl[org].rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{PageSize: 2, PageToken: token})
					return res.GetRollouts(), res.GetNextPageToken(), err
				}, func(r *phxv1.Rollout) string { return r.RolloutId })
				return slices.ContainsFunc(rs, func(r *phxv1.Rollout) bool { return r.RolloutId == ro.RolloutId }), err
			},
			key: func(rev uint64) string { return fmt.Sprintf("r:%s@%d", ro.RolloutId, rev) },
		},
		{
			kind: "incident", id: in.Id, field: "incident.audience", never: "INC-0000000000",
			update: func(aud *phxv1.Audience) (uint64, error) {
				res, err := contoso.incident.UpdateIncident(testCtx(t), &phxv1.UpdateIncidentRequest{Id: in.Id, ExpectedRevision: 1,
					Incident: &phxv1.Incident{Audience: aud}, UpdateMask: mask("audience")})
				return res.GetIncident().GetRevision(), err
			},
			get: func(org string) (uint64, *phxv1.Audience, error) {
				res, err := cl[org].incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: in.Id})
				return res.GetIncident().GetRevision(), res.GetIncident().GetAudience(), err
			},
			listed: func(org string) (bool, error) {
				is, err := listPages(2, func(token string) ([]*phxv1.Incident, string, error) {
					res, err := cl[org].incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{PageSize: 2, PageToken: token})
					return res.GetIncidents(), res.GetNextPageToken(), err
				}, func(in *phxv1.Incident) string { return in.Id })
				return slices.ContainsFunc(is, func(x *phxv1.Incident) bool { return x.Id == in.Id }), err
			},
			key: func(rev uint64) string { return fmt.Sprintf("i:%s@%d", in.Id, rev) },
		},
	}
	// Unrelated items, so that listings have several pages.
	for range 3 {
		announce(t, cl["northwind"], rollout(uniq("w-other"), "northwind-sensor", green()))
		report(t, cl["northwind"], incident("other", "northwind-sensor", phxv1.Severity_SEVERITY_LOW, green()))
	}

	// wantState checks every path but the streams for every reader: the
	// item at rev with audience aud where section 5 shows it, nowhere
	// else, and a NotFound like that of an id that never existed.
	wantState := func(t *testing.T, tg target, rev uint64, aud *phxv1.Audience) {
		t.Helper()
		for _, reader := range readers {
			visible := shouldSee(reader, "contoso", aud)
			gotRev, gotAud, err := tg.get(reader.Org)
			switch {
			case visible && err != nil:
				t.Errorf("%s: get %s %s: %v, want revision %d", reader.Org, tg.kind, tg.id, err, rev)
			case visible && (gotRev != rev || !proto.Equal(gotAud, aud)):
				t.Errorf("%s: get %s %s: revision %d audience {%v}, want revision %d audience {%v}", reader.Org, tg.kind, tg.id, gotRev, gotAud, rev, aud)
			case !visible:
				var neverErr error
				if tg.kind == "rollout" {
					_, neverErr = cl[reader.Org].rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: tg.never})
				} else {
					_, neverErr = cl[reader.Org].incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: tg.never})
				}
				if got, want := notFoundShape(err, tg.id), notFoundShape(neverErr, tg.never); !isCode(err, codes.NotFound) || got != want {
					t.Errorf("%s: get %s %s (audience {%v}): %s, want %s as for an id that never existed", reader.Org, tg.kind, tg.id, aud, got, want)
				}
			}
			listed, err := tg.listed(reader.Org)
			if err != nil {
				t.Errorf("%s: list %ss: %v", reader.Org, tg.kind, err)
			}
			if listed != visible {
				t.Errorf("%s: list %ss: listed = %t, want %t (audience {%v})", reader.Org, tg.kind, listed, visible, aud)
			}
		}
	}
	for _, tg := range targets {
		wantState(t, tg, 1, from)
	}

	live := map[string]grpc.ServerStreamingClient[phxv1.Envelope]{}
	for _, m := range readers {
		live[m.Org] = streamAfter(t, cl[m.Org], &phxv1.SubscribeRequest{Kinds: kinds})
	}

	for _, tg := range targets {
		t.Run(tg.kind, func(t *testing.T) {
			for _, w := range widenings {
				_, err := tg.update(w.aud)
				if err == nil {
					t.Fatalf("%s %s: widening by %s from {%v} to {%v} was accepted", tg.kind, tg.id, w.name, from, w.aud)
				}
				if !isCode(err, codes.PermissionDenied) {
					t.Fatalf("%s %s: widening by %s: %v, want PermissionDenied", tg.kind, tg.id, w.name, err)
				}
				wantStatus(t, err, codes.PermissionDenied, tg.field)
			}
			// Nothing changed.
			wantState(t, tg, 1, from)
			rev, err := tg.update(to)
			if err != nil {
				t.Fatalf("%s %s: narrowing from {%v} to {%v}: %v", tg.kind, tg.id, from, to, err)
			}
			if rev != 2 {
				t.Fatalf("%s %s: narrowed to revision %d, want 2", tg.kind, tg.id, rev)
			}
			wantState(t, tg, 2, to)
		})
	}

	// The streams: live ones opened before the updates carry the narrowing
	// to those who may still see the item and nothing to anyone else; a new
	// replay from the start shows the item (any revision) only to those who
	// may see it now.
	publishSentinels(t, cl[sentinelOrg], sentinelProduct, kinds)
	liveGot, liveErr := drainAll(live, sentinelOrg, kinds)
	replay := map[string]grpc.ServerStreamingClient[phxv1.Envelope]{}
	for _, m := range readers {
		replay[m.Org] = streamAfter(t, cl[m.Org], &phxv1.SubscribeRequest{Kinds: kinds, Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h0.r0.i0.a0"}})
	}
	replayGot, replayErr := drainAll(replay, sentinelOrg, kinds)
	for _, reader := range readers {
		visible := shouldSee(reader, "contoso", to)
		for _, tg := range targets {
			liveKeys, replayKeys := map[string]bool{}, map[string]bool{}
			for _, env := range liveGot[reader.Org] {
				liveKeys[key(env)] = true
			}
			for _, env := range replayGot[reader.Org] {
				replayKeys[key(env)] = true
			}
			if got := liveKeys[tg.key(2)]; got != visible {
				t.Errorf("%s: live stream: revision 2 of %s %s delivered = %t, want %t (audience {%v})", reader.Org, tg.kind, tg.id, got, visible, to)
			}
			for _, env := range liveGot[reader.Org] {
				if itemID(env) == tg.id && key(env) != tg.key(2) {
					t.Errorf("%s: live stream: %s after the updates: only the narrowing may have been stored", reader.Org, key(env))
				}
			}
			if got := replayKeys[tg.key(2)]; got != visible {
				t.Errorf("%s: new replay: revision 2 of %s %s delivered = %t, want %t (audience {%v})", reader.Org, tg.kind, tg.id, got, visible, to)
			}
			if !visible && replayKeys[tg.key(1)] {
				t.Errorf("%s: new replay: revision 1 of %s %s (audience {%v}) delivered, yet it was narrowed to {%v}", reader.Org, tg.kind, tg.id, from, to)
			}
		}
		for _, env := range replayGot[reader.Org] {
			if d := fromEnvelope(env); d.publisher == "contoso" && !showsRealPublisher(reader, "contoso") {
				t.Errorf("%s: new replay: %s shows its pseudonymous publisher", reader.Org, d.key)
			}
		}
		if liveErr[reader.Org] != nil {
			t.Errorf("%s: live stream: %v", reader.Org, liveErr[reader.Org])
		}
		if replayErr[reader.Org] != nil {
			t.Errorf("%s: new replay: %v", reader.Org, replayErr[reader.Org])
		}
	}
}

// TestPseudonymCoversOlderRevisions: once an update asks for a pseudonym,
// a replay shows every revision of the item under it, so the revisions
// before the update cannot link the pseudonym to the org.
func TestPseudonymCoversOlderRevisions(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	contoso, fabrikam, platform := as(t, h, "contoso"), as(t, h, "fabrikam"), as(t, h, "microsoft")
	amber := &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER}
	ro := announce(t, contoso, rollout(uniq("r-pseudo"), "contoso-av", amber))
	if _, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: ro.RolloutId, ExpectedRevision: 1,
		Rollout: &phxv1.Rollout{Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Pseudonymous: true}}, UpdateMask: mask("audience")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		reader *clients
		name   string
		real   bool
	}{{fabrikam, "fabrikam", false}, {platform, "microsoft", true}} {
		f := open(t, tc.reader, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ROLLOUT}, Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h0.r0.i0.a0"}})
		for _, env := range f.items(2) {
			if got := env.GetRollout().GetPublisher(); tc.real != (got == "contoso") || tc.real != (env.Publisher == "contoso") {
				t.Errorf("%s: revision %d shown as published by %q/%q", tc.name, env.GetRollout().GetRevision(), env.Publisher, got)
			}
			if !tc.real && !pseudonym.MatchString(env.Publisher) {
				t.Errorf("%s: revision %d shown as published by %q, want a pseudonym", tc.name, env.GetRollout().GetRevision(), env.Publisher)
			}
		}
		f.close()
	}
}
