package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// parseDeadline reads a UTC deadline: RFC 3339, or a duration from now
// ("30m").
func parseDeadline(s string, now time.Time) (*timestamppb.Timestamp, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return nil, fmt.Errorf("%q is not in the future", s)
		}
		return timestamppb.New(now.Add(d).UTC().Truncate(time.Second)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither a time (2024-07-19T06:00:00Z) nor a duration (30m)", s)
	}
	return timestamppb.New(t), nil
}

func incidentPostCmd() *command {
	return &command{
		name:    "post",
		args:    "ID --text TEXT [--status S]",
		summary: "add a post to an incident's timeline",
		long:    "Posts are never edited or deleted. The reporter or the platform may change the status with a post.",
		setup: func(fs *flag.FlagSet) runFunc {
			text := fs.String("text", "", "the `text` of the post (scrubbed of personal data)")
			status := fs.String("status", "", "also change the `status`: identified, mitigating, monitoring or resolved")
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "incident ID")
				if err != nil {
					return err
				}
				if *text == "" {
					return e.usagef("--text is required")
				}
				st := phxv1.Status_STATUS_UNSPECIFIED
				if *status != "" {
					if st, err = parseStatus(*status); err != nil {
						return e.usagef("--status: %v", err)
					}
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					inc, err := c.AddPost(ctx, id, *text, st)
					if err != nil {
						return err
					}
					return e.showIncident(inc)
				})
			}
		},
	}
}

func incidentRespondCmd() *command {
	return &command{
		name:    "respond",
		args:    "ID --kind affected|not-affected|investigating [--statement TEXT]",
		summary: "answer an incident your org was asked about",
		long:    "An org may change its answer later; every answer is kept in the incident's revisions.",
		setup: func(fs *flag.FlagSet) runFunc {
			kind := fs.String("kind", "", "the answer: affected, not-affected or investigating")
			statement := fs.String("statement", "", "a statement (scrubbed of personal data)")
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "incident ID")
				if err != nil {
					return err
				}
				k, err := parseEnum(phxv1.ResponseKind_RESPONSE_KIND_UNSPECIFIED.Descriptor(), "RESPONSE_KIND_", *kind)
				if err != nil || phxv1.ResponseKind(k) == phxv1.ResponseKind_RESPONSE_KIND_NO_RESPONSE {
					return e.usagef("--kind must be affected, not-affected or investigating")
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					inc, err := c.Respond(ctx, id, phxv1.ResponseKind(k), *statement)
					if err != nil {
						return err
					}
					return e.showIncident(inc)
				})
			}
		},
	}
}

func incidentAckCmd() *command {
	return &command{
		name:    "ack",
		args:    "ID",
		summary: "acknowledge an incident for your org",
		setup: func(*flag.FlagSet) runFunc {
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "incident ID")
				if err != nil {
					return err
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					at, err := c.Acknowledge(ctx, id)
					if err != nil {
						return err
					}
					if e.g.json {
						return printPlainJSON(e, map[string]any{"id": id, "acknowledged_at": at.UTC().Format(time.RFC3339Nano)})
					}
					_, err = fmt.Fprintf(e.stdout, "%s acknowledged at %s\n", id, at.UTC().Format(time.RFC3339))
					return err
				})
			}
		},
	}
}

func incidentReceiptsCmd() *command {
	return &command{
		name:    "receipts",
		args:    "ID",
		summary: "show who has received and acknowledged an incident (reporter and platform)",
		setup: func(*flag.FlagSet) runFunc {
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "incident ID")
				if err != nil {
					return err
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					rs, err := c.ListReceipts(ctx, id)
					if err != nil {
						return err
					}
					if e.g.json {
						return printJSON(e.stdout, &phxv1.ListReceiptsResponse{Receipts: rs}, true)
					}
					renderReceipts(e, e.stdout, rs)
					return nil
				})
			}
		},
	}
}

// renderReceipts prints one row per org of the audience.
func renderReceipts(e *env, w io.Writer, rs []*phxv1.Receipt) {
	tw := newTable(w)
	row(tw, "ORG", "DELIVERED", "ACKNOWLEDGED")
	for _, r := range rs {
		delivered, acked := "not yet", "not yet"
		if r.GetDeliveredAt() != nil {
			delivered = timeText(r.GetDeliveredAt())
		}
		if r.GetAcknowledgedAt() != nil {
			acked = timeText(r.GetAcknowledgedAt())
		}
		row(tw, r.GetOrg(), delivered, acked)
	}
	tw.Flush()
}

// responseLabel names an answer; an asked org that has not answered yet is
// "pending".
func responseLabel(k phxv1.ResponseKind) string {
	switch k {
	case phxv1.ResponseKind_RESPONSE_KIND_UNSPECIFIED:
		return "pending"
	case phxv1.ResponseKind_RESPONSE_KIND_NO_RESPONSE:
		return "no_response"
	}
	return enumLabel(k, "RESPONSE_KIND_")
}
