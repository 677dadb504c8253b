package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

func rolloutAnnounceCmd() *command {
	return &command{
		name:    "announce",
		args:    "--file F | --id ID --product P --version V --ring R --tlp T [flags]",
		summary: "announce a new rollout",
		long:    "From a Rollout in protojson (--file) or from flags; flags given with --file override its fields.",
		setup: func(fs *flag.FlagSet) runFunc {
			file := fs.String("file", "", "`file` with a Rollout in protojson; - for standard input")
			id := fs.String("id", "", "rollout `id`, unique on the hub ([a-z0-9][a-z0-9_-]*)")
			product := fs.String("product", "", "`product` being rolled out (one your org owns)")
			channel := fs.String("channel", "", "content `channel`, for a content update")
			ver := fs.String("version", "", "`version` being rolled out")
			previous := fs.String("previous", "", "`version` it replaces (what a rollback returns to)")
			ring := fs.String("ring", "", "current `ring`: internal, canary, early or broad")
			pct := fs.Float64("percent", 0, "`percent` of target devices deployed so far")
			tlp := fs.String("tlp", "", "who may receive it: clear, green, amber, amber+strict or red")
			var orgs listFlag
			fs.Var(&orgs, "orgs", "limit the audience to these `orgs` (comma-separated; required for red)")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				set := setFlags(fs)
				r := &phxv1.Rollout{}
				if *file != "" {
					if err := readMessage(*file, r); err != nil {
						return err
					}
				} else {
					for _, f := range []string{"id", "product", "version", "ring", "tlp"} {
						if !set[f] {
							return e.usagef("--%s is required (or --file)", f)
						}
					}
				}
				if set["id"] {
					r.RolloutId = *id
				}
				if set["product"] {
					r.Product = *product
				}
				if set["channel"] {
					r.ContentChannel = *channel
				}
				if set["version"] {
					r.ContentVersion = *ver
				}
				if set["previous"] {
					r.PreviousVersion = *previous
				}
				if set["ring"] {
					v, err := parseRing(*ring)
					if err != nil {
						return e.usagef("--ring: %v", err)
					}
					r.CurrentRing = v
				}
				if set["percent"] {
					r.PercentDeployed = *pct
				}
				if err := applyAudience(e, set, &r.Audience, *tlp, orgs); err != nil {
					return err
				}
				if r.GetAudience().GetTlp() == phxv1.Tlp_TLP_UNSPECIFIED {
					return e.usagef("--tlp is required: say who may receive the rollout")
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					stored, err := c.AnnounceRollout(ctx, r)
					if err != nil {
						return err
					}
					return e.showRollout(stored)
				})
			}
		},
	}
}

// applyAudience sets the audience from --tlp and --orgs, when given.
func applyAudience(e *env, set map[string]bool, a **phxv1.Audience, tlp string, orgs []string) error {
	if !set["tlp"] && !set["orgs"] {
		return nil
	}
	if *a == nil {
		*a = &phxv1.Audience{}
	}
	if set["tlp"] {
		v, err := parseTLP(tlp)
		if err != nil {
			return e.usagef("--tlp: %v", err)
		}
		(*a).Tlp = v
	}
	if set["orgs"] {
		(*a).Orgs = orgs
	}
	return nil
}

func rolloutUpdateCmd() *command {
	return &command{
		name:    "update",
		args:    "ID --revision N [--state S] [--ring R] [--percent P] [--reason TEXT] [--incident ID]",
		summary: "change a rollout if it is still at revision N",
		setup: func(fs *flag.FlagSet) runFunc {
			rev := fs.Uint64("revision", 0, "the `revision` you last saw (compare-and-set)")
			state := fs.String("state", "", "new `state`: active, paused, rolled-back or completed")
			ring := fs.String("ring", "", "new current `ring`: internal, canary, early or broad")
			pct := fs.Float64("percent", 0, "new `percent` deployed")
			reason := fs.String("reason", "", "why it changed (e.g. the reason for a pause)")
			incident := fs.String("incident", "", "link the incident with this `id`")
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "rollout ID")
				if err != nil {
					return err
				}
				set := setFlags(fs)
				if !set["revision"] {
					return e.usagef("--revision is required")
				}
				r := &phxv1.Rollout{}
				var paths []string
				if set["state"] {
					v, err := parseState(*state)
					if err != nil {
						return e.usagef("--state: %v", err)
					}
					r.State, paths = v, append(paths, "state")
				}
				if set["ring"] {
					v, err := parseRing(*ring)
					if err != nil {
						return e.usagef("--ring: %v", err)
					}
					r.CurrentRing, paths = v, append(paths, "current_ring")
				}
				if set["percent"] {
					r.PercentDeployed, paths = *pct, append(paths, "percent_deployed")
				}
				if set["reason"] {
					r.Reason, paths = *reason, append(paths, "reason")
				}
				if set["incident"] {
					r.IncidentId, paths = *incident, append(paths, "incident_id")
				}
				if len(paths) == 0 {
					return e.usagef("nothing to change: give --state, --ring, --percent, --reason or --incident")
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					stored, err := c.UpdateRollout(ctx, id, *rev, r, paths...)
					if err != nil {
						return err
					}
					return e.showRollout(stored)
				})
			}
		},
	}
}

func rolloutShowCmd() *command {
	return &command{
		name:    "show",
		args:    "ID",
		summary: "show a rollout's current state",
		setup: func(*flag.FlagSet) runFunc {
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "rollout ID")
				if err != nil {
					return err
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					r, err := c.GetRollout(ctx, id)
					if err != nil {
						return err
					}
					return e.showRollout(r)
				})
			}
		},
	}
}

func rolloutListCmd() *command {
	return &command{
		name:    "list",
		args:    "[--product P] [--state S]",
		summary: "list the rollouts you may see",
		setup: func(fs *flag.FlagSet) runFunc {
			var products, states listFlag
			fs.Var(&products, "product", "only these `products` (repeatable, comma-separated)")
			fs.Var(&states, "state", "only these `states`: active, paused, rolled-back, completed")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				req := &phxv1.ListRolloutsRequest{Products: products, PageSize: 1000}
				for _, s := range states {
					v, err := parseState(s)
					if err != nil {
						return e.usagef("--state: %v", err)
					}
					req.States = append(req.States, v)
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					all := &phxv1.ListRolloutsResponse{}
					for {
						resp, err := c.ListRollouts(ctx, req)
						if err != nil {
							return err
						}
						all.Rollouts = append(all.Rollouts, resp.GetRollouts()...)
						if resp.GetNextPageToken() == "" {
							break
						}
						req.PageToken = resp.GetNextPageToken()
					}
					if e.g.json {
						return printJSON(e.stdout, all, true)
					}
					renderRolloutList(e, e.stdout, all.GetRollouts())
					return nil
				})
			}
		},
	}
}

func (e *env) showRollout(r *phxv1.Rollout) error {
	if e.g.json {
		return printJSON(e.stdout, r, true)
	}
	renderRollout(e, e.stdout, r)
	return nil
}

func percentText(p float64) string {
	return strconv.FormatFloat(p, 'f', -1, 64) + "%"
}

func versionChange(previous, current string) string {
	if previous == "" {
		return orDash(current)
	}
	return previous + " → " + current
}

// renderRollout prints one rollout as aligned "key: value" lines.
func renderRollout(e *env, w io.Writer, r *phxv1.Rollout) {
	if strict(r.GetAudience()) {
		fmt.Fprintln(w, e.paint(yellow, "⚠ "+strictWarning))
	}
	tw := newTable(w)
	row(tw, "rollout:", r.GetRolloutId())
	row(tw, "product:", r.GetProduct())
	row(tw, "channel:", orDash(r.GetContentChannel()))
	row(tw, "version:", versionChange(r.GetPreviousVersion(), r.GetContentVersion()))
	row(tw, "state:", e.paint(stateColor(r.GetState()), enumLabel(r.GetState(), "ROLLOUT_")))
	row(tw, "ring:", enumLabel(r.GetCurrentRing(), "RING_"))
	row(tw, "deployed:", percentText(r.GetPercentDeployed()))
	if len(r.GetSchedule()) > 0 {
		var stages []string
		for _, s := range r.GetSchedule() {
			st := enumLabel(s.GetRing(), "RING_") + " " + percentText(s.GetTargetPercent())
			if s.GetBakeTime() != nil {
				st += " bake " + s.GetBakeTime().AsDuration().String()
			}
			stages = append(stages, st)
		}
		row(tw, "schedule:", strings.Join(stages, ", "))
	}
	row(tw, "incident:", orDash(r.GetIncidentId()))
	row(tw, "reason:", orDash(r.GetReason()))
	row(tw, "audience:", e.paint(tlpColor(r.GetAudience()), audienceText(r.GetAudience())))
	row(tw, "publisher:", orDash(r.GetPublisher()))
	row(tw, "revision:", fmt.Sprint(r.GetRevision()))
	row(tw, "created:", timeText(r.GetCreatedAt()))
	row(tw, "updated:", timeText(r.GetUpdatedAt()))
	tw.Flush()
}

// renderRolloutList prints one line per rollout.
func renderRolloutList(e *env, w io.Writer, rs []*phxv1.Rollout) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "no rollouts")
		return
	}
	tw := newTable(w)
	row(tw, "ROLLOUT", "PRODUCT", "VERSION", e.paint("", "STATE"), "RING", "DEPLOYED", "REV", e.paint("", "TLP"), "PUBLISHER", "UPDATED")
	anyStrict := false
	for _, r := range rs {
		anyStrict = anyStrict || strict(r.GetAudience())
		row(tw, r.GetRolloutId(), r.GetProduct(), versionChange(r.GetPreviousVersion(), r.GetContentVersion()),
			e.paint(stateColor(r.GetState()), enumLabel(r.GetState(), "ROLLOUT_")),
			enumLabel(r.GetCurrentRing(), "RING_"), percentText(r.GetPercentDeployed()),
			fmt.Sprint(r.GetRevision()), e.paint(tlpColor(r.GetAudience()), tlpMark(r.GetAudience())),
			orDash(r.GetPublisher()), timeText(r.GetUpdatedAt()))
	}
	tw.Flush()
	if anyStrict {
		fmt.Fprintln(w, e.paint(yellow, "⚠ TLP:"+strictWarning))
	}
}

// tlpMark is the TLP label of a table cell, with a warning sign for
// AMBER+STRICT (explained under the table).
func tlpMark(a *phxv1.Audience) string {
	if strict(a) {
		return tlpLabel(a) + " ⚠"
	}
	return tlpLabel(a)
}
