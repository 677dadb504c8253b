package server_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server"
	"github.com/phx-exchange/phx/server/servertest"
)

// key names an item across kinds: "h:<signal_id>", "r:<rollout_id>@<rev>",
// "i:<incident id>@<rev>".
func key(env *phxv1.Envelope) string {
	switch it := env.Item.(type) {
	case *phxv1.Envelope_HealthSignal:
		return "h:" + it.HealthSignal.SignalId
	case *phxv1.Envelope_Rollout:
		return fmt.Sprintf("r:%s@%d", it.Rollout.RolloutId, it.Rollout.Revision)
	case *phxv1.Envelope_Incident:
		return fmt.Sprintf("i:%s@%d", it.Incident.Id, it.Incident.Revision)
	}
	return env.Kind.String()
}

// collect reads items until it has every key of want and fails on any item
// outside want or any item twice. Because each stream is delivered in order,
// when the last item of every stream read is in want, nothing else can follow.
func (f *feed) collect(want ...string) []*phxv1.Envelope {
	f.t.Helper()
	pending := map[string]bool{}
	for _, k := range want {
		pending[k] = true
	}
	seen := map[string]bool{}
	var out []*phxv1.Envelope
	for len(pending) > 0 {
		env := f.next()
		k := key(env)
		if seen[k] {
			f.t.Fatalf("%s delivered twice", k)
		}
		seen[k] = true
		if !pending[k] {
			f.t.Fatalf("unexpected %s (still waiting for %v)", k, keys(pending))
		}
		delete(pending, k)
		out = append(out, env)
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func hkeys(cells ...*phxv1.HealthSignal) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = "h:" + c.SignalId
	}
	return out
}

func rkey(r *phxv1.Rollout) string  { return fmt.Sprintf("r:%s@%d", r.RolloutId, r.Revision) }
func ikey(i *phxv1.Incident) string { return fmt.Sprintf("i:%s@%d", i.Id, i.Revision) }

var pseudonym = regexp.MustCompile(`^anon-[a-z2-7]{12}$`)

func TestFeed(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	contoso, fabrikam, northwind, microsoft, cert, operator := as(t, h, "contoso"), as(t, h, "fabrikam"), as(t, h, "northwind"),
		as(t, h, "microsoft"), as(t, h, "national-cert"), as(t, h, "operator")
	publish(t, contoso, cells("contoso-av", 3)...)

	t.Run("bad requests", func(t *testing.T) {
		many := make([]string, 101)
		for i := range many {
			many[i] = fmt.Sprintf("p-%d", i)
		}
		cases := []struct {
			name  string
			req   *phxv1.SubscribeRequest
			field string
		}{
			{"empty cursor", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: ""}}, "cursor"},
			{"garbage cursor", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "not-a-cursor"}}, "cursor"},
			{"unknown stream letter", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h1.x2"}}, "cursor"},
			{"stream twice", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h1.h2"}}, "cursor"},
			{"negative position", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h-1.r0.i0.a0"}}, "cursor"},
			{"position not a number", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h1.rx.i0.a0"}}, "cursor"},
			{"trailing dot", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h1.r0.i0.a0."}}, "cursor"},
			{"position overflows", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h18446744073709551616"}}, "cursor"},
			{"cursor too long", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h" + strings.Repeat("0", 200)}}, "cursor"},
			{"heartbeat kind", &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEARTBEAT}}, "kinds[0]"},
			{"kind 99", &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ROLLOUT, 99}}, "kinds[1]"},
			{"publisher not an id", &phxv1.SubscribeRequest{Publishers: []string{"contoso", "Contoso Ltd"}}, "publishers[1]"},
			{"product not an id", &phxv1.SubscribeRequest{Products: []string{""}}, "products[0]"},
			{"101 publishers", &phxv1.SubscribeRequest{Publishers: many}, "publishers"},
			{"101 products", &phxv1.SubscribeRequest{Products: many}, "products"},
			{"min_severity 99", &phxv1.SubscribeRequest{MinSeverity: 99}, "min_severity"},
			{"heartbeat_seconds 301", &phxv1.SubscribeRequest{HeartbeatSeconds: 301}, "heartbeat_seconds"},
			{"invalid since", &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Since{Since: &timestamppb.Timestamp{Nanos: -1}}}, "since"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := subscribe(t, fabrikam, tc.req).recvErr()
				wantStatus(t, err, codes.InvalidArgument, tc.field)
			})
		}
	})

	t.Run("cursor ahead of the stream", func(t *testing.T) {
		for _, c := range []string{"h999999.r0.i0.a0", "h0.r0.i0.a7", "i5", "h3.r1"} {
			err := subscribe(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: c}}).recvErr()
			wantStatus(t, err, codes.OutOfRange, "")
		}
		// The current end is a valid cursor.
		open(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h3.r0.i0.a0"}})
		open(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: "h2"}})
	})

	t.Run("TLP routing", func(t *testing.T) {
		req := &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}}
		subs := map[string]*feed{}
		for org, c := range map[string]*clients{"contoso": contoso, "fabrikam": fabrikam, "northwind": northwind, "microsoft": microsoft, "national-cert": cert, "operator": operator} {
			subs[org] = open(t, c, req)
		}
		withAud := func(a *phxv1.Audience) *phxv1.HealthSignal { s := cell("contoso-av"); s.Audience = a; return s }
		red := withAud(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam"}})
		amber := withAud(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER})
		strict := withAud(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER_STRICT, Orgs: []string{"national-cert", "northwind"}})
		greenNamed := withAud(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN, Orgs: []string{"microsoft"}})
		clear := withAud(&phxv1.Audience{Tlp: phxv1.Tlp_TLP_CLEAR})
		marker := withAud(green())
		all := []*phxv1.HealthSignal{red, amber, strict, greenNamed, clear, marker}
		for _, s := range all {
			publish(t, contoso, s) // one call each: stored in this order
		}
		want := map[string][]*phxv1.HealthSignal{
			"contoso":       all,
			"fabrikam":      {red, amber, clear, marker},
			"northwind":     {amber, strict, clear, marker},
			"microsoft":     {amber, greenNamed, clear, marker},
			"national-cert": {strict, clear, marker},
			"operator":      {clear, marker},
		}
		for org, w := range want {
			got := subs[org].until(signalID, marker.SignalId)
			wantIDs(t, org, signalIDs(got), ids(w))
			for _, env := range got {
				if !proto.Equal(env.Audience, env.GetHealthSignal().Audience) {
					t.Fatalf("%s: envelope audience %v, item audience %v", org, env.Audience, env.GetHealthSignal().Audience)
				}
			}
		}

		// The same for incidents: northwind gets the next GREEN incident
		// but never the RED one.
		isub := map[string]*feed{}
		for org, c := range map[string]*clients{"fabrikam": fabrikam, "northwind": northwind} {
			isub[org] = open(t, c, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_INCIDENT}})
		}
		redInc := report(t, contoso, incident("for fabrikam only", "contoso-av", phxv1.Severity_SEVERITY_HIGH, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{"fabrikam"}}))
		greenInc := report(t, contoso, incident("for everyone", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green()))
		isub["fabrikam"].collect(ikey(redInc), ikey(greenInc))
		isub["northwind"].collect(ikey(greenInc))
	})

	t.Run("pseudonymous publisher", func(t *testing.T) {
		all := &phxv1.SubscribeRequest{}
		subs := map[string]*feed{}
		for org, c := range map[string]*clients{"contoso": contoso, "fabrikam": fabrikam, "microsoft": microsoft, "national-cert": cert, "operator": operator} {
			subs[org] = open(t, c, all)
		}
		// A peer filtering on the real org must not find the item.
		byOrg := open(t, fabrikam, &phxv1.SubscribeRequest{Publishers: []string{"contoso"}})
		anon := &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN, Pseudonymous: true}
		s := cell("contoso-av")
		s.Audience = anon
		publish(t, contoso, s)
		r := announce(t, contoso, rollout(uniq("r-anon"), "contoso-av", anon))
		i := report(t, contoso, incident("anonymous report", "contoso-av", phxv1.Severity_SEVERITY_HIGH, anon))
		// Markers the real-org filter does match.
		ms := publish(t, contoso, cell("contoso-av"))[0]
		mr := announce(t, contoso, rollout(uniq("r-marker"), "contoso-av", green()))
		mi := report(t, contoso, incident("marker", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green()))
		byOrg.collect("h:"+ms.SignalId, rkey(mr), ikey(mi))

		var seen string
		for org, f := range subs {
			envs := f.collect("h:"+s.SignalId, rkey(r), ikey(i), "h:"+ms.SignalId, rkey(mr), ikey(mi))
			for _, env := range envs {
				if !env.Audience.GetPseudonymous() {
					if env.Publisher != "contoso" {
						t.Fatalf("%s: %s has publisher %q", org, key(env), env.Publisher)
					}
					continue
				}
				realOrg := org == "contoso" || org == "microsoft" || org == "operator"
				if realOrg {
					if env.Publisher != "contoso" || (env.GetRollout() != nil && env.GetRollout().Publisher != "contoso") ||
						(env.GetIncident() != nil && env.GetIncident().Reporter != "contoso") {
						t.Fatalf("%s must see the real publisher: %v", org, env)
					}
					continue
				}
				if !pseudonym.MatchString(env.Publisher) {
					t.Fatalf("%s sees publisher %q", org, env.Publisher)
				}
				if seen == "" {
					seen = env.Publisher
				}
				if env.Publisher != seen {
					t.Fatalf("%s sees pseudonym %q, elsewhere %q: not stable", org, env.Publisher, seen)
				}
				// Nothing else in the envelope names the org (the product
				// is public and says what it says).
				c := proto.Clone(env).(*phxv1.Envelope)
				c.Product = ""
				switch it := c.Item.(type) {
				case *phxv1.Envelope_HealthSignal:
					it.HealthSignal.Product = ""
				case *phxv1.Envelope_Rollout:
					it.Rollout.Product = ""
				case *phxv1.Envelope_Incident:
					for _, a := range it.Incident.Affected {
						a.Product = ""
					}
				}
				if txt := prototext.Format(c); strings.Contains(txt, "contoso") {
					t.Fatalf("%s: a pseudonymous %s reveals its publisher:\n%s", org, c.Kind, txt)
				}
			}
		}
		// Get and List show the same pseudonym as the feed.
		g, err := fabrikam.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: r.RolloutId})
		if err != nil || g.Rollout.Publisher != seen {
			t.Fatalf("get: %v %v, feed pseudonym %q", g, err, seen)
		}
		gi, err := cert.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: i.Id})
		if err != nil || gi.Incident.Reporter != seen {
			t.Fatalf("get incident: %v %v, feed pseudonym %q", gi, err, seen)
		}
		// A peer may follow the pseudonym.
		byAnon := open(t, fabrikam, &phxv1.SubscribeRequest{Publishers: []string{seen}, Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
		byAnon.collect("h:"+s.SignalId, rkey(r), ikey(i))
	})

	t.Run("filters", func(t *testing.T) {
		hb := uint32(300)
		type sub struct {
			name string
			req  *phxv1.SubscribeRequest
			f    *feed
			want []string
		}
		subs := []*sub{
			{name: "kinds rollout", req: &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_ROLLOUT}}},
			{name: "kinds health+incident", req: &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL, phxv1.Kind_KIND_INCIDENT}}},
			{name: "product", req: &phxv1.SubscribeRequest{Products: []string{"fabrikam-edr"}}},
			{name: "publisher", req: &phxv1.SubscribeRequest{Publishers: []string{"contoso"}}},
			{name: "min_severity", req: &phxv1.SubscribeRequest{MinSeverity: phxv1.Severity_SEVERITY_HIGH}},
			{name: "combined", req: &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_INCIDENT}, Products: []string{"contoso-av"}, MinSeverity: phxv1.Severity_SEVERITY_MEDIUM}},
		}
		for _, s := range subs {
			s.req.HeartbeatSeconds = hb
			s.f = open(t, northwind, s.req)
		}
		add := func(k string, in ...string) {
			for _, s := range subs {
				if slices.Contains(in, s.name) {
					s.want = append(s.want, k)
				}
			}
		}
		c1 := publish(t, contoso, cell("contoso-av"))[0]
		add("h:"+c1.SignalId, "kinds health+incident", "publisher", "min_severity")
		c2 := publish(t, fabrikam, cell("fabrikam-edr"))[0]
		add("h:"+c2.SignalId, "kinds health+incident", "product", "min_severity")
		r1 := announce(t, contoso, rollout(uniq("r-f"), "contoso-av", green()))
		add(rkey(r1), "kinds rollout", "publisher", "min_severity")
		r2 := announce(t, fabrikam, rollout(uniq("r-f"), "fabrikam-edr", green()))
		add(rkey(r2), "kinds rollout", "product", "min_severity")
		i1 := report(t, contoso, incident("low", "contoso-av", phxv1.Severity_SEVERITY_LOW, green()))
		add(ikey(i1), "kinds health+incident", "publisher")
		i2 := report(t, fabrikam, incident("high", "fabrikam-edr", phxv1.Severity_SEVERITY_HIGH, green()))
		add(ikey(i2), "kinds health+incident", "product", "min_severity")
		multi := incident("ecosystem", "contoso-av", phxv1.Severity_SEVERITY_MEDIUM, green())
		multi.Affected = append(multi.Affected, &phxv1.Affected{Product: "fabrikam-edr"})
		i3 := report(t, microsoft, multi)
		add(ikey(i3), "kinds health+incident", "product", "combined")
		// Markers last in every stream, from both vendors, matching every
		// subscription that reads their stream.
		for _, c := range []struct {
			cl      *clients
			org     string
			product string
		}{{contoso, "contoso", "contoso-av"}, {fabrikam, "fabrikam", "fabrikam-edr"}} {
			mine, mineIncident := []string{"product"}, []string{"product"}
			if c.org == "contoso" {
				mine, mineIncident = []string{"publisher"}, []string{"publisher", "combined"}
			}
			m := publish(t, c.cl, cell(c.product))[0]
			add("h:"+m.SignalId, append([]string{"kinds health+incident", "min_severity"}, mine...)...)
			mr := announce(t, c.cl, rollout(uniq("r-m"), c.product, green()))
			add(rkey(mr), append([]string{"kinds rollout", "min_severity"}, mine...)...)
			mi := report(t, c.cl, incident("marker", c.product, phxv1.Severity_SEVERITY_CRITICAL, green()))
			add(ikey(mi), append([]string{"kinds health+incident", "min_severity"}, mineIncident...)...)
		}
		for _, s := range subs {
			t.Run(s.name, func(t *testing.T) {
				s.f.t = t
				s.f.collect(s.want...)
			})
		}
	})

	t.Run("since", func(t *testing.T) {
		publish(t, contoso, cell("contoso-av"))
		announce(t, contoso, rollout(uniq("r-before"), "contoso-av", green()))
		report(t, contoso, incident("before", "contoso-av", phxv1.Severity_SEVERITY_LOW, green()))
		since := time.Now()
		after := cells("contoso-av", 2)
		publish(t, contoso, after...)
		r := announce(t, contoso, rollout(uniq("r-after"), "contoso-av", green()))
		i := report(t, contoso, incident("after", "contoso-av", phxv1.Severity_SEVERITY_LOW, green()))
		f := open(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Since{Since: ts(since)}})
		got := f.collect(append(hkeys(after...), rkey(r), ikey(i))...)
		var health []string
		for _, env := range got {
			if env.Kind == phxv1.Kind_KIND_HEALTH_SIGNAL {
				health = append(health, signalID(env))
			}
		}
		wantIDs(t, "health in order", health, ids(after))
		// A time in the future starts at new items.
		later := open(t, fabrikam, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}, Start: &phxv1.SubscribeRequest_Since{Since: ts(time.Now().Add(time.Hour))}})
		next := publish(t, contoso, cell("contoso-av"))[0]
		later.collect("h:" + next.SignalId)
	})
}

// TestFeedResume: a subscriber that reconnects with its last cursor gets
// exactly what it has not seen, across disconnects, heartbeats and restarts.
func TestFeedResume(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	contoso, fabrikam := as(t, h, "contoso"), as(t, h, "fabrikam")
	health := []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}
	fromCursor := func(c string) *phxv1.SubscribeRequest {
		return &phxv1.SubscribeRequest{Kinds: health, Start: &phxv1.SubscribeRequest_Cursor{Cursor: c}}
	}

	var everything []*phxv1.HealthSignal // every cell of this hub, in order
	t.Run("from_beginning, then resume", func(t *testing.T) {
		first := cells("contoso-av", 10)
		publish(t, contoso, first...)
		everything = append(everything, first...)
		f := open(t, fabrikam, &phxv1.SubscribeRequest{Kinds: health, Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
		got := f.items(4)
		wantIDs(t, "first four", signalIDs(got), ids(first[:4]))
		cur := f.last
		f.close()
		more := cells("contoso-av", 3)
		publish(t, contoso, more...)
		everything = append(everything, more...)
		rest := append(slices.Clone(first[4:]), more...)
		g := open(t, fabrikam, fromCursor(cur))
		wantIDs(t, "resumed", signalIDs(g.items(len(rest))), ids(rest))
		// And nothing else: the next item is the next one published.
		m := cells("contoso-av", 1)
		publish(t, contoso, m...)
		everything = append(everything, m...)
		wantIDs(t, "after", signalIDs(g.items(1)), ids(m))
		// Every cursor of the stream resumes right after its item.
		for i, env := range got {
			r := open(t, fabrikam, fromCursor(env.Cursor))
			wantIDs(t, "from cursor", signalIDs(r.items(1)), ids(first[i+1:i+2]))
			r.close()
		}
	})

	t.Run("across kinds", func(t *testing.T) {
		f := open(t, fabrikam, &phxv1.SubscribeRequest{})
		s1 := cell("contoso-av")
		publish(t, contoso, s1)
		everything = append(everything, s1)
		r := announce(t, contoso, rollout("r-resume", "contoso-av", green()))
		i := report(t, contoso, incident("resume", "contoso-av", phxv1.Severity_SEVERITY_HIGH, green()))
		three := []string{"h:" + s1.SignalId, rkey(r), ikey(i)}
		got := f.items(2)
		cur := f.last
		f.close()
		var left []string
		for _, k := range three {
			if !slices.ContainsFunc(got, func(e *phxv1.Envelope) bool { return key(e) == k }) {
				left = append(left, k)
			}
		}
		s2 := cell("contoso-av")
		publish(t, contoso, s2)
		everything = append(everything, s2)
		u, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: r.RolloutId, ExpectedRevision: 1,
			Rollout: &phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED}, UpdateMask: mask("state")})
		if err != nil {
			t.Fatal(err)
		}
		ui, err := contoso.incident.UpdateIncident(testCtx(t), &phxv1.UpdateIncidentRequest{Id: i.Id, ExpectedRevision: 1,
			Incident: &phxv1.Incident{Status: phxv1.Status_STATUS_IDENTIFIED}, UpdateMask: mask("status")})
		if err != nil {
			t.Fatal(err)
		}
		g := open(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: cur}})
		g.collect(append(left, "h:"+s2.SignalId, rkey(u.Rollout), ikey(ui.Incident))...)
	})

	t.Run("heartbeat cursors", func(t *testing.T) {
		req := &phxv1.SubscribeRequest{Kinds: health, HeartbeatSeconds: 1}
		f := subscribe(t, fabrikam, req)
		hb0 := f.recv()
		if hb0.Kind != phxv1.Kind_KIND_HEARTBEAT || hb0.PublishedAt == nil || hb0.Item != nil || hb0.MessageId != "" {
			t.Fatalf("first envelope %v", hb0)
		}
		two := cells("contoso-av", 2)
		publish(t, contoso, two...)
		everything = append(everything, two...)
		got := f.items(2)
		wantIDs(t, "live", signalIDs(got), ids(two))
		// Idle now: the next envelope is a heartbeat at the same position.
		hb := f.recv()
		if hb.Kind != phxv1.Kind_KIND_HEARTBEAT || hb.Cursor != got[1].Cursor {
			t.Fatalf("after the items: %s with cursor %q, want a heartbeat at %q", hb.Kind, hb.Cursor, got[1].Cursor)
		}
		f.close()
		three := cells("contoso-av", 1)
		publish(t, contoso, three...)
		everything = append(everything, three...)
		wantIDs(t, "from the idle heartbeat", signalIDs(open(t, fabrikam, fromCursor(hb.Cursor)).items(1)), ids(three))
		// The first heartbeat marks the start: nothing before it, nothing
		// after it missed.
		wantIDs(t, "from the first heartbeat", signalIDs(open(t, fabrikam, fromCursor(hb0.Cursor)).items(3)), ids(append(two, three...)))
	})

	t.Run("across a restart", func(t *testing.T) {
		f := open(t, fabrikam, &phxv1.SubscribeRequest{Kinds: health})
		before := cells("contoso-av", 3)
		publish(t, contoso, before...)
		everything = append(everything, before...)
		got := f.items(2)
		cur := f.last

		// Record what the hub holds.
		anon := announce(t, contoso, rollout("r-anon-restart", "contoso-av", &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN, Pseudonymous: true}))
		inc := report(t, contoso, incident("kept", "contoso-av", phxv1.Severity_SEVERITY_CRITICAL, &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER, Pseudonymous: true}))
		ga, err := fabrikam.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: anon.RolloutId})
		if err != nil || !pseudonym.MatchString(ga.Rollout.Publisher) {
			t.Fatalf("pseudonym before restart: %v %v", ga, err)
		}
		rolloutsBefore, err := fabrikam.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		incidentsBefore, err := fabrikam.incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{})
		if err != nil {
			t.Fatal(err)
		}

		h.Restart(t)
		// The live stream ends; the client reconnects.
		wantStatus(t, f.recvErr(), codes.Unavailable, "")
		contoso, fabrikam := as(t, h, "contoso"), as(t, h, "fabrikam")

		after := cells("contoso-av", 2)
		publish(t, contoso, after...)
		everything = append(everything, after...)
		rest := append(slices.Clone(before[len(got):]), after...)
		wantIDs(t, "resumed after restart", signalIDs(open(t, fabrikam, fromCursor(cur)).items(len(rest))), ids(rest))

		// Every stored item is still there, and the pseudonym is the same.
		all := open(t, fabrikam, &phxv1.SubscribeRequest{Kinds: health, Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
		wantIDs(t, "every cell", signalIDs(all.items(len(everything))), ids(everything))
		rolloutsAfter, err := fabrikam.rollouts.ListRollouts(testCtx(t), &phxv1.ListRolloutsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		incidentsAfter, err := fabrikam.incident.ListIncidents(testCtx(t), &phxv1.ListIncidentsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(rolloutsBefore, rolloutsAfter) || len(rolloutsAfter.Rollouts) < 2 {
			t.Fatalf("rollouts before restart:\n%v\nafter:\n%v", rolloutsBefore, rolloutsAfter)
		}
		if !proto.Equal(incidentsBefore, incidentsAfter) || len(incidentsAfter.Incidents) < 2 {
			t.Fatalf("incidents before restart:\n%v\nafter:\n%v", incidentsBefore, incidentsAfter)
		}
		gb, err := fabrikam.rollouts.GetRollout(testCtx(t), &phxv1.GetRolloutRequest{RolloutId: anon.RolloutId})
		if err != nil || gb.Rollout.Publisher != ga.Rollout.Publisher {
			t.Fatalf("pseudonym after restart %v %v, before %q", gb, err, ga.Rollout.Publisher)
		}
		gi, err := fabrikam.incident.GetIncident(testCtx(t), &phxv1.GetIncidentRequest{Id: inc.Id})
		if err != nil || gi.Incident.Reporter != ga.Rollout.Publisher {
			t.Fatalf("incident reporter after restart %v %v, pseudonym %q", gi, err, ga.Rollout.Publisher)
		}
		// Idempotency keys survive too.
		res, err := contoso.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: before[:1]})
		if err != nil || res.Results[0].Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE {
			t.Fatalf("republished after restart: %v %v", res, err)
		}
		// And the revisions go on.
		u, err := contoso.rollouts.UpdateRollout(testCtx(t), &phxv1.UpdateRolloutRequest{RolloutId: anon.RolloutId, ExpectedRevision: 1,
			Rollout: &phxv1.Rollout{PercentDeployed: 50}, UpdateMask: mask("percent_deployed")})
		if err != nil || u.Rollout.Revision != 2 {
			t.Fatalf("update after restart: %v %v", u, err)
		}
	})
}

// TestFeedRetention: a position older than what the hub retains is refused
// with OutOfRange, never skipped silently. The cells are published under the
// default retention (a cell must have ended, so it cannot be younger than a
// one-second retention), then the same data dir is served with one second.
func TestFeedRetention(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t)
	start := time.Now()
	contoso, fabrikam := as(t, h, "contoso"), as(t, h, "fabrikam")
	old := cells("contoso-av", 3)
	publish(t, contoso, old...)
	f := open(t, fabrikam, &phxv1.SubscribeRequest{Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}, Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}})
	got := f.items(3)
	wantIDs(t, "stored", signalIDs(got), ids(old))
	f.close()
	oldest, middle, newest := got[0].Cursor, got[1].Cursor, got[2].Cursor
	h.Stop()

	short := servertest.Start(t, servertest.WithDataDir(h.DataDir), servertest.WithConfig(func(c *server.Config) { c.HealthRetention = time.Second }))
	fabrikam = as(t, short, "fabrikam")
	at := func(c string) *phxv1.SubscribeRequest {
		return &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Cursor{Cursor: c}}
	}
	eventually(t, "cells age out", func() error {
		f := subscribe(t, fabrikam, at(middle))
		defer f.close()
		_, err := f.stream.Recv()
		if isCode(err, codes.OutOfRange) {
			return nil
		}
		if err != nil {
			return err
		}
		return errNotYet
	})
	wantStatus(t, subscribe(t, fabrikam, at(oldest)).recvErr(), codes.OutOfRange, "")
	// The newest position lost nothing: it still resumes.
	open(t, fabrikam, at(newest)).close()
	// A start time before the lost cells is refused too; one after them
	// lost nothing.
	wantStatus(t, subscribe(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Since{Since: ts(start)}}).recvErr(), codes.OutOfRange, "")
	open(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Since{Since: ts(time.Now())}}).close()
	short.Stop()

	// Back to the default retention, with new cells after the gap.
	again := servertest.Start(t, servertest.WithDataDir(h.DataDir))
	contoso, fabrikam = as(t, again, "contoso"), as(t, again, "fabrikam")
	fresh := cells("contoso-av", 2)
	publish(t, contoso, fresh...)
	wantStatus(t, subscribe(t, fabrikam, at(oldest)).recvErr(), codes.OutOfRange, "")
	wantStatus(t, subscribe(t, fabrikam, at(middle)).recvErr(), codes.OutOfRange, "")
	wantStatus(t, subscribe(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_Since{Since: ts(start)}}).recvErr(), codes.OutOfRange, "")
	wantIDs(t, "after the newest kept position", signalIDs(open(t, fabrikam, at(newest)).items(2)), ids(fresh))
	wantIDs(t, "from the beginning", signalIDs(open(t, fabrikam, &phxv1.SubscribeRequest{Start: &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}}).items(2)), ids(fresh))
}
