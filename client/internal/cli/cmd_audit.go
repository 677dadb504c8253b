package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

func auditTailCmd() *command {
	return &command{
		name:    "tail",
		args:    "[-n N] [--follow]",
		summary: "show the newest audit records (operators)",
		long:    "Prints the newest records of the hub's audit log, oldest first: one aligned line each, or with\n--json one protojson AuditRecord per line. With --follow it keeps printing new records until\ninterrupted.",
		setup: func(fs *flag.FlagSet) runFunc {
			n := fs.Uint("n", 20, "how many of the newest `records` to show first (at most 10000)")
			follow := fs.Bool("follow", false, "keep printing new records until interrupted")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				if *n < 1 || *n > 10000 {
					return e.usagef("-n: %d is not between 1 and 10000", *n)
				}
				req := &phxv1.TailAuditRequest{Limit: uint32(*n), Follow: *follow}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				if !*follow {
					var cancel context.CancelFunc
					ctx, cancel = e.callCtx(ctx)
					defer cancel()
				}
				header := !e.g.json
				err = c.TailAudit(ctx, req, func(r *phxv1.AuditRecord) error {
					if e.g.json {
						return printJSON(e.stdout, r, false)
					}
					if header {
						header = false
						fmt.Fprintln(e.stdout, auditHeader())
					}
					fmt.Fprintln(e.stdout, e.auditLine(r))
					return nil
				})
				if *follow && ctx.Err() != nil && errors.Is(err, sdk.ErrCanceled) {
					return nil // interrupted
				}
				if err == nil && header && !*follow {
					fmt.Fprintln(e.stdout, "no audit records")
				}
				return err
			}
		},
	}
}

func auditVerifyCmd() *command {
	return &command{
		name:    "verify",
		summary: "check the audit log's hash chain (operators)",
		long:    "Asks the hub to check every record of its audit log: its own hash, and its link to the record\nbefore it. Prints the head (n, hash, stream sequence) to copy elsewhere as an anchor. Exits with\nstatus 1 and names the first broken record when the chain is broken. Progress goes to stderr\nwhen it is a terminal. The check runs until done; --timeout does not bound it.",
		setup: func(fs *flag.FlagSet) runFunc {
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				c, err := e.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				var progress func(*phxv1.AuditProgress)
				tty := isTerminal(e.stderr)
				if tty {
					progress = func(p *phxv1.AuditProgress) {
						fmt.Fprintf(e.stderr, "\rchecked %d of %d records", p.GetChecked(), p.GetTotal())
					}
				}
				res, err := c.VerifyAudit(ctx, progress)
				if tty {
					fmt.Fprint(e.stderr, "\r\x1b[K")
				}
				if err != nil {
					return err
				}
				if e.g.json {
					if err := printJSON(e.stdout, res, true); err != nil {
						return err
					}
				} else {
					e.showVerification(e.stdout, res)
				}
				if b := res.GetFirstBroken(); !res.GetOk() {
					return fmt.Errorf("audit chain broken at %s: %s", breakPlace(b), b.GetReason())
				}
				return nil
			}
		},
	}
}

// breakPlace names a broken record: its n and stream sequence.
func breakPlace(b *phxv1.AuditBreak) string {
	if b.GetN() == 0 {
		return fmt.Sprintf("stream seq %d (not a record)", b.GetSeq())
	}
	return fmt.Sprintf("n %d (stream seq %d)", b.GetN(), b.GetSeq())
}

func (e *env) showVerification(w io.Writer, res *phxv1.AuditVerification) {
	if res.GetRecords() == 0 {
		fmt.Fprintln(w, "the audit log is empty")
		return
	}
	if res.GetOk() {
		fmt.Fprintf(w, "%s %d records, stream seq %d to %d\n", e.paint(green, "audit chain intact:"), res.GetRecords(), res.GetFirstSeq(), res.GetLastSeq())
	} else {
		b := res.GetFirstBroken()
		fmt.Fprintf(w, "%s first broken record: %s: %s\n", e.paint(red, "audit chain BROKEN:"), breakPlace(b), b.GetReason())
		fmt.Fprintf(w, "%d of %d records break the chain (stream seq %d to %d)\n", res.GetBroken(), res.GetRecords(), res.GetFirstSeq(), res.GetLastSeq())
	}
	if res.GetStartN() > 1 {
		fmt.Fprintf(w, "the chain starts at n %d: older records are no longer in the stream\n", res.GetStartN())
	}
	if h := res.GetHead(); h != nil {
		fmt.Fprintf(w, "head: n %d hash %s seq %d time %s\n", h.GetN(), h.GetHash(), h.GetSeq(), timeText(h.GetTime()))
	}
}

// Widths of the columns of audit lines.
const (
	wN      = 8
	wAKind  = 13
	wOrg    = 14
	wMethod = 34
	wResult = 18
)

func auditHeader() string {
	return strings.Join([]string{pad("N", wN), pad("TIME", wTime), pad("KIND", wAKind), pad("ORG", wOrg),
		pad("METHOD", wMethod), pad("RESULT", wResult), "DETAIL"}, "  ")
}

// auditLine prints one record as an aligned line.
func (e *env) auditLine(r *phxv1.AuditRecord) string {
	if r.GetInvalid() != "" {
		return e.paint(red, fmt.Sprintf("seq %d: %s", r.GetSeq(), r.GetInvalid()))
	}
	kind := r.GetKindName()
	if kind == "" {
		kind = enumLabel(r.GetKind(), "AUDIT_KIND_")
	}
	kind = strings.ReplaceAll(kind, "_", "-")
	result, color := "ok", ""
	switch {
	case r.Allowed != nil && r.GetAllowed():
		result, color = "allowed", green
	case r.Allowed != nil:
		result, color = "denied", red
	case r.GetCode() != "":
		result, color = r.GetCode(), yellow
	}
	if r.GetKind() == phxv1.AuditKind_AUDIT_KIND_AUTHN_FAILURE {
		color = red
	}
	return strings.Join([]string{
		pad(fmt.Sprint(r.GetN()), wN),
		pad(timeText(r.GetTime()), wTime),
		pad(kind, wAKind),
		pad(orDash(r.GetOrg()), wOrg),
		pad(orDash(strings.TrimPrefix(r.GetMethod(), "/phx.v1.")), wMethod),
		e.paint(color, pad(result, wResult)),
		auditDetail(r),
	}, "  ")
}

// auditDetail says in a few words what the record is about.
func auditDetail(r *phxv1.AuditRecord) string {
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	if r.GetRecipient() != "" && r.GetRecipient() != r.GetOrg() {
		add("to=%s", r.GetRecipient())
	}
	if ids := r.GetIds(); len(ids) > 0 {
		s := strings.Join(ids[:min(len(ids), 3)], ",")
		if len(ids) > 3 {
			s += fmt.Sprintf(" (+%d more)", len(ids)-3)
		}
		add("%s", s)
	}
	if r.GetRevision() > 0 {
		add("rev=%d", r.GetRevision())
	}
	if r.GetCount() > 0 {
		add("count=%d", r.GetCount())
	}
	if r.GetAccepted()+r.GetDuplicates()+r.GetRefused() > 0 {
		add("accepted=%d duplicates=%d refused=%d", r.GetAccepted(), r.GetDuplicates(), r.GetRefused())
	}
	if r.GetFirstCursor() != "" {
		add("cursors=%s..%s", r.GetFirstCursor(), r.GetLastCursor())
	}
	if r.GetTokenId() != "" {
		add("token=%s", r.GetTokenId())
	}
	if r.Allowed != nil {
		add("rule=%s", r.GetRule())
	}
	if r.GetError() != "" {
		add("error=%q", r.GetError())
	}
	if r.GetKind() == phxv1.AuditKind_AUDIT_KIND_AUTHN_FAILURE && r.GetPeer() != "" {
		add("peer=%s", r.GetPeer())
	}
	if r.GetDetail() != "" {
		add("%s", r.GetDetail())
	}
	return strings.Join(parts, " ")
}
