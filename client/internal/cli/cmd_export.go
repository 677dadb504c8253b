package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/phx-exchange/phx/client/internal/csaf"
	"github.com/phx-exchange/phx/internal/version"
	"github.com/phx-exchange/phx/sdk"
)

// exportFormats are the formats of "incident export".
var exportFormats = []string{"csaf"}

func incidentExportCmd() *command {
	return &command{
		name:    "export",
		args:    "ID [--format csaf] [--out FILE] [--namespace URL]",
		summary: "write an incident as a CSAF 2.1 advisory",
		long: "Writes the incident's current state as a CSAF 2.1 document (profile csaf_security_advisory): " +
			"tracking with the revision history, product status, remediations in CSAF categories, " +
			"and the incident's TLP label as the distribution. The document keeps that label: share it only as the label allows.",
		setup: func(fs *flag.FlagSet) runFunc {
			format := fs.String("format", "csaf", "output `format`: "+strings.Join(exportFormats, ", "))
			out := fs.String("out", "", "write to `file` (mode 0600) instead of standard output")
			namespace := fs.String("namespace", "", "publisher namespace `URL` (default "+csaf.DefaultNamespaceBase+"<reporter>)")
			return func(ctx context.Context, e *env, args []string) error {
				id, err := oneArg(e, args, "incident ID")
				if err != nil {
					return err
				}
				if *format != "csaf" {
					return e.usagef("--format: unknown value %q (one of: %s)", *format, strings.Join(exportFormats, ", "))
				}
				if *namespace != "" {
					if err := csaf.CheckNamespace(*namespace); err != nil {
						return e.usagef("--namespace: %q is not an absolute http or https URL", *namespace)
					}
				}
				return e.call(ctx, func(ctx context.Context, c *sdk.Client) error {
					inc, err := c.GetIncident(ctx, id)
					if err != nil {
						return err
					}
					doc, err := csaf.Convert(inc, csaf.Options{
						Namespace: *namespace, GeneratorVersion: version.String(), Now: time.Now(),
					})
					if err != nil {
						return err
					}
					var b bytes.Buffer
					if err := csaf.Encode(&b, doc); err != nil {
						return err
					}
					if strict(inc.GetAudience()) {
						fmt.Fprintln(e.stderr, e.paint(yellow, "⚠ "+strictWarning))
					}
					if *out == "" {
						_, err := e.stdout.Write(b.Bytes())
						return err
					}
					if err := writeFileAtomic(*out, b.Bytes()); err != nil {
						return err
					}
					fmt.Fprintf(e.stderr, "wrote %s: %s revision %s as CSAF 2.1, TLP:%s\n", *out,
						doc.Document.Tracking.ID, doc.Document.Tracking.Version, doc.Document.Distribution.TLP.Label)
					return nil
				})
			}
		},
	}
}

// writeFileAtomic writes data to name through a temporary file in the same
// directory, readable by its owner only: a reader never sees half a file.
func writeFileAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
