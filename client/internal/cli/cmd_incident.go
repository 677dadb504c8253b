package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

func incidentReportCmd() *command {
	return &command{
		name:    "report",
		args:    "--file F | --title T --product P --severity S --tlp T [flags]",
		summary: "report a new incident or advisory",
		long:    "From an Incident in protojson (--file) or from flags; flags given with --file override its fields.",
		setup: func(fs *flag.FlagSet) runFunc {
			file := fs.String("file", "", "`file` with an Incident in protojson; - for standard input")
			title := fs.String("title", "", "short `title` (no personal data: it is scrubbed)")
			product := fs.String("product", "", "affected `product`")
			contentVersion := fs.String("content-version", "", "faulty content `version`")
			severity := fs.String("severity", "", "`severity`: critical, high, medium or low")
			status := fs.String("status", "", "`status`: investigating (default), identified, mitigating, monitoring or resolved")
			impact := fs.String("impact", "", "what happens to machines")
			classification := fs.String("classification", "", "incident (default) or advisory")
			tlp := fs.String("tlp", "", "who may receive it: clear, green, amber, amber+strict or red")
			var orgs, ask listFlag
			fs.Var(&orgs, "orgs", "limit the audience to these `orgs` (comma-separated; required for red)")
			fs.Var(&ask, "ask", "ask these `orgs` to respond (comma-separated)")
			askVendors := fs.Bool("ask-all-vendors", false, "ask every vendor in the audience to respond")
			respondBy := fs.String("respond-by", "", "deadline for responses: a UTC `time` (RFC 3339) or a duration from now (30m)")
			pause := fs.String("pause-rollout", "", "ask that `rollout` be paused")
			rollback := fs.String("rollback-rollout", "", "ask that `rollout` be rolled back")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				set := setFlags(fs)
				inc := &phxv1.Incident{}
				if err := applyAsk(e, set, inc, ask, *askVendors, *respondBy); err != nil {
					return err
				}
				switch {
				case *pause != "" && *rollback != "":
					return e.usagef("--pause-rollout and --rollback-rollout exclude each other")
				case *pause != "":
					inc.RolloutAction = &phxv1.RolloutAction{RolloutId: *pause, Action: phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_PAUSE}
				case *rollback != "":
					inc.RolloutAction = &phxv1.RolloutAction{RolloutId: *rollback, Action: phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_ROLLBACK}
				}
				if *file != "" {
					if err := readMessage(*file, inc); err != nil {
						return err
					}
				} else {
					for _, f := range []string{"title", "severity", "product", "tlp"} {
						if !set[f] {
							return e.usagef("--%s is required (or --file)", f)
						}
					}
				}
				if set["title"] {
					inc.Title = *title
				}
				if set["impact"] {
					inc.Impact = *impact
				}
				if set["product"] || set["content-version"] {
					if len(inc.Affected) == 0 {
						inc.Affected = []*phxv1.Affected{{}}
					}
					if set["product"] {
						inc.Affected[0].Product = *product
					}
					if set["content-version"] {
						inc.Affected[0].ContentVersion = *contentVersion
					}
				}
				if err := setIncidentEnums(e, set, inc, *severity, *status, *classification); err != nil {
					return err
				}
				if inc.Classification == phxv1.Classification_CLASSIFICATION_UNSPECIFIED {
					inc.Classification = phxv1.Classification_CLASSIFICATION_INCIDENT
				}
				if inc.Status == phxv1.Status_STATUS_UNSPECIFIED {
					inc.Status = phxv1.Status_STATUS_INVESTIGATING
				}
				if err := applyAudience(e, set, &inc.Audience, *tlp, orgs); err != nil {
					return err
				}
				if inc.GetAudience().GetTlp() == phxv1.Tlp_TLP_UNSPECIFIED {
					return e.usagef("--tlp is required: say who may receive the incident")
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					stored, err := c.ReportIncident(ctx, inc)
					if err != nil {
						return err
					}
					return e.showIncident(stored)
				})
			}
		},
	}
}

// setIncidentEnums sets severity, status and classification from the flags
// that were given.
func setIncidentEnums(e *env, set map[string]bool, inc *phxv1.Incident, severity, status, classification string) error {
	if set["severity"] {
		v, err := parseSeverity(severity)
		if err != nil {
			return e.usagef("--severity: %v", err)
		}
		inc.Severity = v
	}
	if set["status"] {
		v, err := parseStatus(status)
		if err != nil {
			return e.usagef("--status: %v", err)
		}
		inc.Status = v
	}
	if set["classification"] {
		v, err := parseClassification(classification)
		if err != nil {
			return e.usagef("--classification: %v", err)
		}
		inc.Classification = v
	}
	return nil
}

// applyAsk sets whom an incident asks to respond, and by when.
func applyAsk(e *env, set map[string]bool, inc *phxv1.Incident, ask []string, all bool, by string) error {
	if set["ask"] {
		inc.AskedOrgs = ask
	}
	inc.AskAllVendors = all
	if set["respond-by"] {
		t, err := parseDeadline(by, time.Now())
		if err != nil {
			return e.usagef("--respond-by: %v", err)
		}
		inc.RespondBy = t
	}
	if (set["ask"] || all) && !set["respond-by"] {
		return e.usagef("--ask and --ask-all-vendors need --respond-by")
	}
	return nil
}

func incidentUpdateCmd() *command {
	return &command{
		name:    "update",
		args:    "ID --revision N [--status S] [--severity S] [--title T] [--impact TEXT] [--tlp T]",
		summary: "change an incident if it is still at revision N",
		setup: func(fs *flag.FlagSet) runFunc {
			rev := fs.Uint64("revision", 0, "the `revision` you last saw (compare-and-set)")
			status := fs.String("status", "", "new `status`: investigating, identified, mitigating, monitoring or resolved")
			severity := fs.String("severity", "", "new `severity`: critical, high, medium or low")
			title := fs.String("title", "", "new `title`")
			impact := fs.String("impact", "", "new impact text")
			classification := fs.String("classification", "", "incident or advisory")
			tlp := fs.String("tlp", "", "new audience label (it may narrow, never widen)")
			var orgs, ask listFlag
			fs.Var(&orgs, "orgs", "new audience `orgs` (comma-separated)")
			fs.Var(&ask, "ask", "ask these `orgs` to respond (comma-separated; replaces the list)")
			askVendors := fs.Bool("ask-all-vendors", false, "ask every vendor in the audience to respond")
			respondBy := fs.String("respond-by", "", "deadline for responses: a UTC `time` (RFC 3339) or a duration from now (30m)")
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "incident ID")
				if err != nil {
					return err
				}
				set := setFlags(fs)
				if !set["revision"] {
					return e.usagef("--revision is required")
				}
				inc := &phxv1.Incident{}
				if err := applyAsk(e, set, inc, ask, *askVendors, *respondBy); err != nil {
					return err
				}
				if err := setIncidentEnums(e, set, inc, *severity, *status, *classification); err != nil {
					return err
				}
				var paths []string
				for _, f := range []struct{ flag, path string }{
					{"title", "title"}, {"classification", "classification"}, {"severity", "severity"},
					{"status", "status"}, {"impact", "impact"}, {"ask", "asked_orgs"}, {"ask-all-vendors", "ask_all_vendors"},
					{"respond-by", "respond_by"},
				} {
					if set[f.flag] {
						paths = append(paths, f.path)
					}
				}
				inc.Title, inc.Impact = *title, *impact
				if set["orgs"] && !set["tlp"] {
					return e.usagef("--orgs needs --tlp: the audience is replaced as a whole")
				}
				if err := applyAudience(e, set, &inc.Audience, *tlp, orgs); err != nil {
					return err
				}
				if set["tlp"] {
					paths = append(paths, "audience")
				}
				if len(paths) == 0 {
					return e.usagef("nothing to change: give --status, --severity, --title, --impact, --classification, --tlp, --ask, --ask-all-vendors or --respond-by")
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					stored, err := c.UpdateIncident(ctx, id, *rev, inc, paths...)
					if err != nil {
						return err
					}
					return e.showIncident(stored)
				})
			}
		},
	}
}

func incidentShowCmd() *command {
	return &command{
		name:    "show",
		args:    "ID [--revision N]",
		summary: "show an incident with its timeline, responses and revisions",
		setup: func(fs *flag.FlagSet) runFunc {
			rev := fs.Uint64("revision", 0, "show revision `N` as it was")
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "incident ID")
				if err != nil {
					return err
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					inc, err := c.GetIncidentRevision(ctx, id, *rev)
					if err != nil {
						return err
					}
					return e.showIncident(inc)
				})
			}
		},
	}
}

func incidentListCmd() *command {
	return &command{
		name:    "list",
		args:    "[--product P] [--status S] [--min-severity S]",
		summary: "list the incidents you may see, newest first",
		setup: func(fs *flag.FlagSet) runFunc {
			var products, statuses listFlag
			fs.Var(&products, "product", "only incidents affecting these `products` (repeatable, comma-separated)")
			fs.Var(&statuses, "status", "only these `statuses`")
			minSev := fs.String("min-severity", "", "only at least this `severity`")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				req := &phxv1.ListIncidentsRequest{Products: products, PageSize: 1000}
				for _, s := range statuses {
					v, err := parseStatus(s)
					if err != nil {
						return e.usagef("--status: %v", err)
					}
					req.Statuses = append(req.Statuses, v)
				}
				if *minSev != "" {
					v, err := parseSeverity(*minSev)
					if err != nil {
						return e.usagef("--min-severity: %v", err)
					}
					req.MinSeverity = v
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					all := &phxv1.ListIncidentsResponse{}
					for {
						resp, err := c.ListIncidents(ctx, req)
						if err != nil {
							return err
						}
						all.Incidents = append(all.Incidents, resp.GetIncidents()...)
						if resp.GetNextPageToken() == "" {
							break
						}
						req.PageToken = resp.GetNextPageToken()
					}
					if e.g.json {
						return printJSON(e.stdout, all, true)
					}
					renderIncidentList(e, e.stdout, all.GetIncidents())
					return nil
				})
			}
		},
	}
}

func (e *env) showIncident(inc *phxv1.Incident) error {
	if e.g.json {
		return printJSON(e.stdout, inc, true)
	}
	renderIncident(e, e.stdout, inc)
	return nil
}

func affectedText(a *phxv1.Affected) string {
	parts := []string{orDash(a.GetProduct())}
	if a.GetVersionRange() != "" {
		parts = append(parts, a.GetVersionRange())
	}
	if a.GetContentChannel() != "" || a.GetContentVersion() != "" {
		parts = append(parts, "content "+strings.TrimSpace(a.GetContentChannel()+" "+a.GetContentVersion()))
	}
	if len(a.GetOsBuilds()) > 0 {
		parts = append(parts, "on "+strings.Join(a.GetOsBuilds(), ", "))
	}
	return strings.Join(parts, " ")
}

func incidentProducts(inc *phxv1.Incident) string {
	var ps []string
	for _, a := range inc.GetAffected() {
		if a.GetProduct() != "" {
			ps = append(ps, a.GetProduct())
		}
	}
	return orDash(strings.Join(ps, ","))
}

// renderIncident prints an incident: its fields as aligned "key: value"
// lines, then remediations, timeline and responses.
func renderIncident(e *env, w io.Writer, inc *phxv1.Incident) {
	if strict(inc.GetAudience()) {
		fmt.Fprintln(w, e.paint(yellow, "⚠ "+strictWarning))
	}
	tw := newTable(w)
	row(tw, "incident:", inc.GetId())
	row(tw, "title:", inc.GetTitle())
	row(tw, "classification:", enumLabel(inc.GetClassification(), "CLASSIFICATION_"))
	row(tw, "severity:", e.paint(severityColor(inc.GetSeverity()), enumLabel(inc.GetSeverity(), "SEVERITY_")))
	row(tw, "status:", e.paint(statusColor(inc.GetStatus()), enumLabel(inc.GetStatus(), "STATUS_")))
	for i, a := range inc.GetAffected() {
		k := ""
		if i == 0 {
			k = "affected:"
		}
		row(tw, k, affectedText(a))
	}
	if inc.GetImpact() != "" {
		row(tw, "impact:", inc.GetImpact())
	}
	if ra := inc.GetRolloutAction(); ra != nil {
		row(tw, "rollout action:", enumLabel(ra.GetAction(), "ROLLOUT_ACTION_KIND_")+" "+ra.GetRolloutId())
	}
	if inc.GetRespondBy() != nil {
		row(tw, "respond by:", timeText(inc.GetRespondBy()))
	}
	row(tw, "audience:", e.paint(tlpColor(inc.GetAudience()), audienceText(inc.GetAudience())))
	row(tw, "reporter:", orDash(inc.GetReporter()))
	row(tw, "revision:", fmt.Sprint(inc.GetRevision()))
	row(tw, "created:", timeText(inc.GetCreatedAt()))
	row(tw, "updated:", timeText(inc.GetUpdatedAt()))
	if inc.GetResolvedAt() != nil {
		row(tw, "resolved:", timeText(inc.GetResolvedAt()))
	}
	tw.Flush()
	if rs := inc.GetRemediations(); len(rs) > 0 {
		fmt.Fprintln(w, "\nRemediations:")
		for _, r := range rs {
			line := "  " + enumLabel(r.GetCategory(), "REMEDIATION_CATEGORY_") + ": " + r.GetDetails()
			if r.GetRestartRequired() {
				line += " (restart required)"
			}
			if r.GetUrl() != "" {
				line += " " + r.GetUrl()
			}
			fmt.Fprintln(w, line)
		}
	}
	if ps := inc.GetPosts(); len(ps) > 0 {
		fmt.Fprintln(w, "\nTimeline:")
		tw := newTable(w)
		for _, p := range ps {
			st := ""
			if p.GetStatus() != phxv1.Status_STATUS_UNSPECIFIED {
				st = "→ " + enumLabel(p.GetStatus(), "STATUS_")
			}
			row(tw, fmt.Sprintf("  #%d", p.GetSeq()), timeText(p.GetPostedAt()), p.GetAuthor(), st, p.GetText())
		}
		tw.Flush()
	}
	if rs := inc.GetResponses(); len(rs) > 0 {
		fmt.Fprintln(w, "\nResponses:")
		tw := newTable(w)
		for _, r := range rs {
			at := "-"
			if r.GetRespondedAt() != nil {
				at = timeText(r.GetRespondedAt())
			}
			row(tw, "  "+r.GetOrg(), responseLabel(r.GetKind()), at, r.GetStatement())
		}
		tw.Flush()
	}
	if hs := inc.GetHistory(); len(hs) > 0 {
		fmt.Fprintln(w, "\nRevisions:")
		tw := newTable(w)
		for _, h := range hs {
			row(tw, fmt.Sprintf("  %d", h.GetRevision()), timeText(h.GetAt()), h.GetAuthor(), strings.Join(h.GetChanged(), ", "))
		}
		tw.Flush()
	}
}

// renderIncidentList prints one line per incident.
func renderIncidentList(e *env, w io.Writer, incs []*phxv1.Incident) {
	if len(incs) == 0 {
		fmt.Fprintln(w, "no incidents")
		return
	}
	tw := newTable(w)
	row(tw, "ID", e.paint("", "SEVERITY"), e.paint("", "STATUS"), "PRODUCT", "REV", e.paint("", "TLP"), "REPORTER", "UPDATED", "TITLE")
	anyStrict := false
	for _, inc := range incs {
		anyStrict = anyStrict || strict(inc.GetAudience())
		row(tw, inc.GetId(),
			e.paint(severityColor(inc.GetSeverity()), enumLabel(inc.GetSeverity(), "SEVERITY_")),
			e.paint(statusColor(inc.GetStatus()), enumLabel(inc.GetStatus(), "STATUS_")),
			incidentProducts(inc), fmt.Sprint(inc.GetRevision()),
			e.paint(tlpColor(inc.GetAudience()), tlpMark(inc.GetAudience())),
			orDash(inc.GetReporter()), timeText(inc.GetUpdatedAt()), inc.GetTitle())
	}
	tw.Flush()
	if anyStrict {
		fmt.Fprintln(w, e.paint(yellow, "⚠ TLP:"+strictWarning))
	}
}
