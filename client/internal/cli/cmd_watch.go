package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// now is the clock of --since; tests replace it.
var now = time.Now

func watchCmd() *command {
	return &command{
		name:    "watch",
		args:    "[--kinds K] [--publisher O] [--product P] [--min-severity S] [--from-cursor C | --since T | --from-beginning]",
		summary: "follow shared items live",
		long:    "Prints one line per item (with --json, one protojson envelope per line) and keeps going across\nhub restarts until interrupted. At exit it prints the last cursor on stderr: pass it to\n--from-cursor to resume with nothing missed and nothing repeated.",
		setup: func(fs *flag.FlagSet) runFunc {
			var kinds, publishers, products listFlag
			fs.Var(&kinds, "kinds", "only these `kinds`: health, rollout, incident, advisory (comma-separated)")
			fs.Var(&publishers, "publisher", "only items of these publisher `orgs` (repeatable, comma-separated)")
			fs.Var(&products, "product", "only items about these `products` (repeatable, comma-separated)")
			minSev := fs.String("min-severity", "", "only incidents and advisories of at least this `severity`")
			fromCursor := fs.String("from-cursor", "", "resume after this `cursor`")
			since := fs.String("since", "", "start at a `time`: a duration ago (10m, 2h) or RFC 3339")
			fromBeginning := fs.Bool("from-beginning", false, "start with everything the hub retains")
			heartbeat := fs.Uint("heartbeat", 0, "ask the hub for a heartbeat every `seconds` while idle (default 15)")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				req := &phxv1.SubscribeRequest{Publishers: publishers, Products: products, HeartbeatSeconds: uint32(*heartbeat)}
				for _, k := range kinds {
					v, err := parseKind(k)
					if err != nil {
						return e.usagef("--kinds: %v", err)
					}
					req.Kinds = append(req.Kinds, v)
				}
				if *minSev != "" {
					v, err := parseSeverity(*minSev)
					if err != nil {
						return e.usagef("--min-severity: %v", err)
					}
					req.MinSeverity = v
				}
				set := setFlags(fs)
				starts := 0
				for _, f := range []string{"from-cursor", "since", "from-beginning"} {
					if set[f] {
						starts++
					}
				}
				if starts > 1 {
					return e.usagef("give at most one of --from-cursor, --since and --from-beginning")
				}
				switch {
				case set["from-cursor"]:
					if *fromCursor == "" {
						return e.usagef("--from-cursor: empty cursor")
					}
					req.Start = &phxv1.SubscribeRequest_Cursor{Cursor: *fromCursor}
				case set["since"]:
					t, err := parseSince(*since, now())
					if err != nil {
						return e.usagef("--since: %v", err)
					}
					req.Start = &phxv1.SubscribeRequest_Since{Since: timestamppb.New(t)}
				case *fromBeginning:
					req.Start = &phxv1.SubscribeRequest_FromBeginning{FromBeginning: true}
				}
				return e.watch(ctx, req)
			}
		},
	}
}

// parseSince reads a duration ago ("10m") or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("negative duration %q", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (10m) nor an RFC 3339 time", s)
	}
	return t, nil
}

// watch prints envelopes until ctx ends (nil) or the feed fails with an
// error that resuming cannot fix. At exit it prints the last cursor to
// stderr so the user can resume.
func (e *env) watch(ctx context.Context, req *phxv1.SubscribeRequest) error {
	c, err := e.connect(sdk.WithLogger(e.logger()))
	if err != nil {
		return err
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, req)
	if err != nil {
		return err
	}
	defer func() {
		sub.Close()
		if cur := sub.Cursor(); cur != "" {
			fmt.Fprintf(e.stderr, "last cursor: %s (resume with: phx watch --from-cursor %s)\n", cur, cur)
		}
	}()
	for {
		env, err := sub.Recv()
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, sdk.ErrCanceled) {
				return nil // interrupted
			}
			return err
		}
		if e.g.json {
			if err := printJSON(e.stdout, env, false); err != nil {
				return err
			}
			continue
		}
		renderEnvelope(e, e.stdout, env)
	}
}

// Widths of the columns of watch lines.
const (
	wTime      = 20
	wKind      = 8
	wPublisher = 14
	wProduct   = 16
	wTLP       = 16
)

func pad(s string, n int) string {
	if l := len([]rune(s)); l < n {
		return s + strings.Repeat(" ", n-l)
	}
	return s
}

// renderEnvelope prints one aligned line: time, kind, publisher, product,
// TLP label and a short summary of the item.
func renderEnvelope(e *env, w io.Writer, env *phxv1.Envelope) {
	kind := enumLabel(env.GetKind(), "KIND_")
	if env.GetKind() == phxv1.Kind_KIND_HEALTH_SIGNAL {
		kind = "health"
	}
	summary, color := envelopeSummary(env)
	line := strings.Join([]string{
		pad(timeText(env.GetPublishedAt()), wTime),
		e.paint(color, pad(kind, wKind)),
		pad(orDash(env.GetPublisher()), wPublisher),
		pad(orDash(env.GetProduct()), wProduct),
		e.paint(tlpColor(env.GetAudience()), pad(tlpLabel(env.GetAudience()), wTLP)),
		summary,
	}, "  ")
	if strict(env.GetAudience()) {
		line += "  " + e.paint(yellow, "⚠ "+strictWarning)
	}
	fmt.Fprintln(w, line)
}

// envelopeSummary describes the item in a few words, and picks a colour
// for its kind column by how alarming it is.
func envelopeSummary(env *phxv1.Envelope) (string, string) {
	switch it := env.GetItem().(type) {
	case *phxv1.Envelope_Incident:
		i := it.Incident
		s := fmt.Sprintf("%s %s %s rev %d", i.GetId(), enumLabel(i.GetSeverity(), "SEVERITY_"),
			enumLabel(i.GetStatus(), "STATUS_"), i.GetRevision())
		if c := incidentChange(i); c != "" {
			return s + " " + c, severityColor(i.GetSeverity())
		}
		return s + fmt.Sprintf(" %q", i.GetTitle()), severityColor(i.GetSeverity())
	case *phxv1.Envelope_Rollout:
		r := it.Rollout
		s := fmt.Sprintf("%s %s %s %s %s rev %d", r.GetRolloutId(), enumLabel(r.GetState(), "ROLLOUT_"),
			enumLabel(r.GetCurrentRing(), "RING_"), percentText(r.GetPercentDeployed()),
			versionChange(r.GetPreviousVersion(), r.GetContentVersion()), r.GetRevision())
		if r.GetReason() != "" {
			s += fmt.Sprintf(" %q", r.GetReason())
		}
		return s, stateColor(r.GetState())
	case *phxv1.Envelope_HealthSignal:
		s := signalSummary(it.HealthSignal)
		if n := env.GetNoise(); n != nil {
			s += fmt.Sprintf(" (counts noised, ε=%.2g each)", n.GetEpsilonPerCount())
		}
		return s, ""
	case *phxv1.Envelope_Advisory:
		a := it.Advisory
		s := fmt.Sprintf("%s %s %s %s", orDash(a.GetId()), enumLabel(a.GetKind(), "ADVISORY_KIND_"),
			enumLabel(a.GetSeverity(), "SEVERITY_"), enumLabel(a.GetRecommendation(), "RECOMMENDATION_"))
		if a.GetRolloutId() != "" {
			s += " rollout=" + a.GetRolloutId()
		}
		if ev := a.GetEvidence(); ev != nil && ev.GetDevicesExposed() > 0 {
			s += fmt.Sprintf(" failing=%d/%d (%.2f%%)", ev.GetFailingDevices(), ev.GetDevicesExposed(), 100*ev.GetRate())
		}
		if a.GetSummary() != "" {
			s += fmt.Sprintf(" %q", a.GetSummary())
		}
		return s, red
	}
	return env.GetMessageId(), ""
}

// signalSummary gives a health cell's identity and its key counts, with
// rates of the exposed devices.
func signalSummary(s *phxv1.HealthSignal) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s/%s %ds exposed=%d", s.GetSignalId(), orDash(s.GetContentVersion()),
		enumLabel(s.GetRing(), "RING_"), orDash(s.GetOsBuild()), orDash(s.GetRegion()),
		s.GetWindowSeconds(), s.GetDevicesExposed())
	for _, c := range []struct {
		name string
		n    uint32
	}{
		{"boot", s.GetBootFailureDevices()},
		{"kernel", s.GetKernelCrashDevices()},
		{"hang", s.GetHangDevices()},
		{"agent", s.GetAgentCrashDevices()},
		{"silent", s.GetDevicesSilent()},
	} {
		fmt.Fprintf(&b, " %s=%d", c.name, c.n)
		if c.n > 0 {
			if p := percent(c.n, s.GetDevicesExposed()); p != "" {
				fmt.Fprintf(&b, "(%s)", p)
			}
		}
	}
	return b.String()
}

// incidentChange says in a few words what the latest revision of an
// incident changed and who changed it: a post, an answer, a status.
func incidentChange(i *phxv1.Incident) string {
	hs := i.GetHistory()
	if len(hs) == 0 {
		return ""
	}
	h := hs[len(hs)-1]
	who := orDash(h.GetAuthor())
	var parts []string
	for _, c := range h.GetChanged() {
		switch c {
		case "reported":
			parts = append(parts, fmt.Sprintf("reported by %s: %q", who, i.GetTitle()))
		case "post":
			if ps := i.GetPosts(); len(ps) > 0 {
				parts = append(parts, fmt.Sprintf("post #%d by %s: %q", ps[len(ps)-1].GetSeq(), who, ps[len(ps)-1].GetText()))
			}
		case "response":
			for _, r := range i.GetResponses() {
				if r.GetOrg() == who {
					parts = append(parts, fmt.Sprintf("response by %s: %s", who, responseLabel(r.GetKind())))
				}
			}
		case "status":
			parts = append(parts, fmt.Sprintf("status → %s by %s", enumLabel(i.GetStatus(), "STATUS_"), who))
		default:
			parts = append(parts, fmt.Sprintf("%s changed by %s", c, who))
		}
	}
	return strings.Join(parts, "; ")
}
