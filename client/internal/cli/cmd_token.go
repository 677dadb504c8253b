package cli

import (
	"context"
	"crypto/sha256"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/phx-exchange/phx/internal/tokenkeys"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

func tokenIssueCmd() *command {
	return &command{
		name:    "issue",
		args:    "--org ORG --role cert|responder [--ttl D] [--scope S,...] [--bind-cert FILE]",
		summary: "have the hub sign a bearer token (operator only)",
		long: "Prints the token alone on stdout, so it can be captured:\n" +
			"  export PHX_TOKEN=$(phx --as operator token issue --org national-cert --role cert --ttl 720h)\n" +
			"and its id, org, role, scopes and expiry on stderr. A cert token reads; a responder\n" +
			"token also posts, responds and acknowledges for its org. --bind-cert binds the token\n" +
			"to a client certificate: it is then refused on any connection without that certificate.",
		setup: func(fs *flag.FlagSet) runFunc {
			org := fs.String("org", "", "the `org` the token acts for")
			role := fs.String("role", "", "`role` granted: cert (read only) or responder")
			ttl := fs.Duration("ttl", 24*time.Hour, "lifetime of the token")
			scope := fs.String("scope", "", "comma-separated `scopes` (read, respond; default: all the role allows)")
			bind := fs.String("bind-cert", "", "bind the token to the client certificate in `file` (PEM)")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				if *org == "" || *role == "" {
					return e.usagef("--org and --role are required")
				}
				r, err := parseEnum(phxv1.Role_ROLE_UNSPECIFIED.Descriptor(), "ROLE_", *role)
				if err != nil {
					return e.usagef("--role: %v", err)
				}
				req := &phxv1.IssueTokenRequest{Org: *org, Role: phxv1.Role(r), Ttl: durationpb.New(*ttl)}
				if *scope != "" {
					req.Scope = strings.Split(*scope, ",")
				}
				if *bind != "" {
					sum, err := certSHA256(*bind)
					if err != nil {
						return e.usagef("--bind-cert: %v", err)
					}
					req.BindCertSha256 = sum
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					resp, err := c.IssueToken(ctx, req)
					if err != nil {
						return err
					}
					if e.g.json {
						return printJSON(e.stdout, resp, true)
					}
					tw := newTable(e.stderr)
					row(tw, "token:", resp.GetJti())
					row(tw, "for:", fmt.Sprintf("%s as %s (%s)", *org, strings.ToLower(*role), strings.Join(resp.GetScope(), ", ")))
					row(tw, "expires:", timeText(resp.GetExpiresAt()))
					row(tw, "bound:", map[bool]string{true: "to " + *bind, false: "no"}[resp.GetBound()])
					row(tw, "signed by key:", resp.GetKid())
					tw.Flush()
					if colorEnabled(e.stdout) {
						fmt.Fprintln(e.stderr, "\nuse it:  PHX_TOKEN=<token> phx --ca <hub CA> watch   (revoke: phx token revoke "+resp.GetJti()+")")
					}
					_, err = fmt.Fprintln(e.stdout, resp.GetToken())
					return err
				})
			}
		},
	}
}

func tokenRevokeCmd() *command {
	return &command{
		name:    "revoke",
		args:    "JTI",
		summary: "revoke a bearer token by its id (operator only)",
		long:    "Every hub replica refuses the token at once and ends the streams held with it.",
		setup: func(*flag.FlagSet) runFunc {
			return func(ctx context.Context, e *env, args []string) error {
				jti, err := oneArg(e, args, "the token id (JTI)")
				if err != nil {
					return err
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					resp, err := c.RevokeToken(ctx, jti)
					if err != nil {
						return err
					}
					if e.g.json {
						return printJSON(e.stdout, resp, true)
					}
					_, err = fmt.Fprintf(e.stdout, "revoked token %s of %s at %s (it would have expired %s)\n",
						jti, resp.GetOrg(), timeText(resp.GetRevokedAt()), timeText(resp.GetExpiresAt()))
					return err
				})
			}
		},
	}
}

func pkiTokenKeyCmd() *command {
	return &command{
		name:    "token-key",
		args:    "[--dir DIR] [--activate]",
		summary: "add a token signing key to the hub's key directory",
		long: "Writes a new Ed25519 key as <kid>.key into the hub's token key directory (default\n" +
			"<data-dir>/tokens). With --activate the hub signs new tokens with it; tokens signed\n" +
			"by the older keys stay valid until those keys' files are removed. Running hubs pick\n" +
			"the change up within seconds (or on SIGHUP).",
		setup: func(fs *flag.FlagSet) runFunc {
			dir := fs.String("dir", "", "token key `dir` (default: <data-dir>/tokens)")
			activate := fs.Bool("activate", false, "sign new tokens with the new key")
			return func(_ context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				d := *dir
				if d == "" {
					d = filepath.Join(e.g.dataDir, "tokens")
				}
				kid, err := tokenkeys.GenerateKey(d, *activate)
				if err != nil {
					return err
				}
				if e.g.json {
					return printPlainJSON(e, map[string]any{"dir": d, "kid": kid, "active": *activate})
				}
				state := "verifies only; to sign with it, write its kid to " + filepath.Join(d, "active")
				if *activate {
					state = "active: new tokens are signed with it"
				}
				_, err = fmt.Fprintf(e.stdout, "new token key %s in %s (%s)\n", kid, d, state)
				return err
			}
		},
	}
}

// certSHA256 is the SHA-256 of the DER of the first certificate in a PEM file.
func certSHA256(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s holds no PEM certificate", file)
		}
		if block.Type == "CERTIFICATE" {
			sum := sha256.Sum256(block.Bytes)
			return sum[:], nil
		}
	}
}
