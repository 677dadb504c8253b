package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

func signalPublishCmd() *command {
	return &command{
		name:    "publish",
		args:    "--file F",
		summary: "publish health signals from a file",
		long:    "The file holds HealthSignal messages in protojson, as one JSON array or one object per line\n(NDJSON). Each item is answered on its own; phx exits with status 1 if any was rejected.",
		setup: func(fs *flag.FlagSet) runFunc {
			file := fs.String("file", "", "`file` of signals: a JSON array or one object per line; - for standard input")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				if *file == "" {
					return e.usagef("--file is required")
				}
				data, err := readInput(*file)
				if err != nil {
					return err
				}
				signals, err := parseSignals(data, *file)
				if err != nil {
					return err
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					resp, err := c.PublishSignals(ctx, signals)
					if len(resp.GetResults()) > 0 || err == nil {
						if e.g.json {
							if perr := printJSON(e.stdout, resp, true); perr != nil {
								return perr
							}
						} else {
							renderPublish(e, e.stdout, resp, len(signals))
						}
					}
					if err != nil {
						return err
					}
					if n := resp.GetRejected(); n > 0 {
						return fmt.Errorf("%d of %d signals rejected", n, len(signals))
					}
					return nil
				})
			}
		},
	}
}

// renderPublish prints one line per item and a summary.
func renderPublish(e *env, w io.Writer, resp *phxv1.PublishSignalsResponse, total int) {
	tw := newTable(w)
	row(tw, "INDEX", "SIGNAL_ID", e.paint("", "OUTCOME"), "CURSOR/ERROR")
	for _, r := range resp.GetResults() {
		detail := r.GetCursor()
		if err := sdk.ItemErr(r.GetError()); err != nil {
			detail = err.Error()
		}
		row(tw, fmt.Sprint(r.GetIndex()), r.GetSignalId(),
			e.paint(outcomeColor(r.GetOutcome()), enumLabel(r.GetOutcome(), "SIGNAL_OUTCOME_")),
			orDash(detail))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d accepted, %d duplicate, %d rejected of %d signals\n",
		resp.GetAccepted(), resp.GetDuplicates(), resp.GetRejected(), total)
}
