package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
	"strings"

	"github.com/phx-exchange/phx/internal/version"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

func noArgs(e *env, args []string) error {
	if len(args) > 0 {
		return e.usagef("unexpected argument %q", args[0])
	}
	return nil
}

// oneArg returns the single positional argument, named what.
func oneArg(e *env, args []string, what string) (string, error) {
	switch {
	case len(args) == 0:
		return "", e.usagef("missing %s", what)
	case len(args) > 1:
		return "", e.usagef("unexpected argument %q", args[1])
	}
	return args[0], nil
}

// call connects, runs fn under the --timeout and closes the connection.
// What the hub redacted from free text is told on stderr.
func (e *env) call(ctx context.Context, fn func(ctx context.Context, c *sdk.Client) error) error {
	c, err := e.connect(sdk.WithRedactionHandler(e.showRedactions))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := e.callCtx(ctx)
	defer cancel()
	return fn(ctx, c)
}

func whoamiCmd() *command {
	return &command{
		name:    "whoami",
		summary: "show the org, role and credentials the hub sees",
		setup: func(*flag.FlagSet) runFunc {
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					resp, err := c.WhoAmI(ctx)
					if err != nil {
						return err
					}
					if e.g.json {
						return printJSON(e.stdout, resp, true)
					}
					renderWhoAmI(e, resp)
					return nil
				})
			}
		},
	}
}

func renderWhoAmI(e *env, r *phxv1.WhoAmIResponse) {
	tw := newTable(e.stdout)
	org := r.GetOrg()
	if r.GetDisplayName() != "" && r.GetDisplayName() != org {
		org += " (" + r.GetDisplayName() + ")"
	}
	row(tw, "org:", org)
	row(tw, "role:", enumLabel(r.GetRole(), "ROLE_"))
	row(tw, "workload:", orDash(r.GetWorkload()))
	row(tw, "products:", orDash(strings.Join(r.GetProducts(), ", ")))
	auth := enumLabel(r.GetAuthMethod(), "AUTH_METHOD_")
	switch r.GetAuthMethod() {
	case phxv1.AuthMethod_AUTH_METHOD_MTLS:
		auth = "mTLS"
	case phxv1.AuthMethod_AUTH_METHOD_TOKEN:
		auth = "bearer token"
	}
	if r.GetSpiffeId() != "" {
		auth += " " + r.GetSpiffeId()
	}
	row(tw, "auth:", auth)
	if r.GetTokenId() != "" {
		row(tw, "token:", r.GetTokenId()+" ("+strings.Join(r.GetTokenScopes(), ", ")+")")
	}
	row(tw, "expires:", timeText(r.GetCredentialExpiresAt()))
	if p := r.GetPrivacy(); p != nil {
		row(tw, "min cohort:", fmt.Sprintf("%d devices, %d tenants per cell", p.GetKDevices(), p.GetKTenants()))
	}
	row(tw, "hub:", orDash(r.GetHubVersion()))
	tw.Flush()
}

func versionCmd() *command {
	return &command{
		name:    "version",
		summary: "print the version of phx",
		setup: func(*flag.FlagSet) runFunc {
			return func(_ context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				if e.g.json {
					b, _ := json.MarshalIndent(map[string]string{"version": version.String(), "go": runtime.Version()}, "", "  ")
					_, err := fmt.Fprintf(e.stdout, "%s\n", b)
					return err
				}
				_, err := fmt.Fprintf(e.stdout, "phx %s (%s)\n", version.String(), runtime.Version())
				return err
			}
		},
	}
}

// showRedactions tells on stderr which identifiers the hub removed from the
// free text sent, field by field.
func (e *env) showRedactions(_ string, rs []*phxv1.Redaction) {
	fmt.Fprintf(e.stderr, "%s the hub removed %d identifier(s) before storing:\n", e.paint(yellow, "note:"), len(rs))
	tw := newTable(e.stderr)
	for _, r := range rs {
		row(tw, "  "+r.GetField(), r.GetKind(), fmt.Sprintf("bytes %d–%d", r.GetStart(), r.GetEnd()))
	}
	tw.Flush()
}
