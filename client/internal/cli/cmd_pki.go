package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/pki"
)

func pkiInitCmd() *command {
	return &command{
		name:    "init",
		args:    "[--data-dir DIR]",
		summary: "create the dev PKI and member registry",
		long:    "Writes whatever is missing of the dev CA, the hub's certificate, one client certificate\nper dev org and the member registry; existing files are kept.",
		setup: func(fs *flag.FlagSet) runFunc {
			dataDir := fs.String("data-dir", "", "dev data `dir` (default: the global --data-dir)")
			return func(_ context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				dir := e.g.dataDir
				if *dataDir != "" {
					dir = *dataDir
				}
				created, err := pki.InitDev(dir)
				if err != nil {
					return err
				}
				if e.g.json {
					return printPlainJSON(e, map[string]any{"data_dir": dir, "created": nonNil(created)})
				}
				if len(created) == 0 {
					fmt.Fprintf(e.stdout, "nothing to do: the dev PKI under %s is complete\n", dir)
					return nil
				}
				fmt.Fprintf(e.stdout, "created under %s:\n", dir)
				for _, f := range created {
					fmt.Fprintf(e.stdout, "  %s\n", f)
				}
				return nil
			}
		},
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func printPlainJSON(e *env, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

func exists(name string) bool {
	_, err := os.Stat(name)
	return !errors.Is(err, fs.ErrNotExist)
}

func pkiIssueCmd() *command {
	return &command{
		name:    "issue",
		args:    "--org ORG [--workload W] [--trust-domain D] [--out-dir DIR]",
		summary: "sign a client certificate for an org",
		long:    "Signs with the data dir's CA, creating it if missing.",
		setup: func(fs *flag.FlagSet) runFunc {
			org := fs.String("org", "", "the member `org` id")
			workload := fs.String("workload", pki.DevWorkload, "the `workload` part of the SPIFFE id")
			trustDomain := fs.String("trust-domain", pki.DevTrustDomain, "the SPIFFE trust `domain`")
			outDir := fs.String("out-dir", "", "where to write the certificate and key (default: the data dir's pki/)")
			force := fs.Bool("force", false, "overwrite an existing certificate and key")
			return func(_ context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				if *org == "" {
					return e.usagef("--org is required")
				}
				if !members.IDPattern.MatchString(*org) {
					return e.usagef("--org %q does not match %s", *org, members.IDPattern)
				}
				if !members.IDPattern.MatchString(*workload) {
					return e.usagef("--workload %q does not match %s", *workload, members.IDPattern)
				}
				l := pki.Layout{DataDir: e.g.dataDir}
				dir := l.Dir()
				if *outDir != "" {
					dir = *outDir
				}
				base := *org
				if *workload != pki.DevWorkload {
					base += "-" + *workload
				}
				certFile, keyFile := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
				if !*force && (exists(certFile) || exists(keyFile)) {
					return fmt.Errorf("%s exists; pass --force to replace it", certFile)
				}
				hadCA := exists(l.CACert())
				ca, err := pki.InitCA(l)
				if err != nil {
					return err
				}
				if err := pki.IssueOrg(ca, *trustDomain, *org, *workload, certFile, keyFile); err != nil {
					return err
				}
				id := pki.SPIFFEID(*trustDomain, *org, *workload)
				note := ""
				if reg, err := members.Load(l.Members()); err == nil {
					if _, ok := reg.Lookup(*org); !ok {
						note = fmt.Sprintf("%s is not in %s: the hub refuses it until it is added", *org, l.Members())
					}
				}
				if e.g.json {
					return printPlainJSON(e, map[string]any{
						"cert": certFile, "key": keyFile, "spiffe_id": id, "ca": l.CACert(), "ca_created": !hadCA,
					})
				}
				if !hadCA {
					fmt.Fprintf(e.stdout, "created CA %s\n", l.CACert())
				}
				fmt.Fprintf(e.stdout, "wrote %s and %s for %s\n", certFile, keyFile, id)
				if note != "" {
					fmt.Fprintf(e.stderr, "note: %s\n", note)
				}
				return nil
			}
		},
	}
}
