// Package cli implements the phx command: a client of the phx hub for
// people and scripts. Run is the whole program; the main package only wires
// it to the process's arguments, signals and exit code.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/phx-exchange/phx/sdk"
)

// stdin is where "-" files are read from; tests replace it.
var stdin io.Reader = os.Stdin

// UsageError is an error in how phx was invoked: an unknown command or flag,
// a missing or conflicting argument. The process exits with status 2.
type UsageError struct {
	// Cmd is the command path, e.g. "rollout update", or "" for phx itself.
	Cmd string
	// Msg says what is wrong.
	Msg string
}

// Error formats the error as one line.
func (e *UsageError) Error() string {
	help := "phx help"
	if e.Cmd != "" {
		help = "phx " + e.Cmd + " -h"
	}
	prefix := ""
	if e.Cmd != "" {
		prefix = e.Cmd + ": "
	}
	return fmt.Sprintf("%s%s (see '%s')", prefix, e.Msg, help)
}

func usagef(cmd, format string, args ...any) error {
	return &UsageError{Cmd: cmd, Msg: fmt.Sprintf(format, args...)}
}

// ExitCode returns the process exit status for an error returned by Run:
// 0 for nil, 2 for a *UsageError, 1 otherwise.
func ExitCode(err error) int {
	var ue *UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// Main runs the command, prints an error as one line "phx: <message>" to
// stderr, and returns the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := Run(ctx, args, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "phx: %s\n", oneLine(err.Error()))
	}
	return ExitCode(err)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// globals are the flags given before the subcommand (and --json anywhere).
type globals struct {
	hub, ca, cert, key, token, as, dataDir string
	json                                   bool
	timeout                                time.Duration
}

// env is what every command runs with.
type env struct {
	g              globals
	cmd            string // the command path, e.g. "rollout update"
	stdout, stderr io.Writer
	color          bool
}

// usagef returns a usage error of the running command.
func (e *env) usagef(format string, args ...any) error { return usagef(e.cmd, format, args...) }

// runFunc runs a leaf command with its positional arguments.
type runFunc func(ctx context.Context, e *env, args []string) error

// command is a leaf command or a group of subcommands.
type command struct {
	name    string
	args    string // argument synopsis, e.g. "ID --revision N [flags]"
	summary string // one short line for the command list
	long    string // more detail for the command's own help, if any
	// setup registers the command's flags and returns the function that
	// runs it with their values. Nil for groups.
	setup func(fs *flag.FlagSet) runFunc
	subs  []*command
}

// commands is the command tree, in the order of the usage text.
func commands() []*command {
	return []*command{
		whoamiCmd(),
		{name: "signal", summary: "publish health signals", subs: []*command{signalPublishCmd()}},
		{name: "rollout", summary: "announce, update and read rollouts", subs: []*command{
			rolloutAnnounceCmd(), rolloutUpdateCmd(), rolloutShowCmd(), rolloutListCmd(),
		}},
		{name: "incident", summary: "report, update and read incidents", subs: []*command{
			incidentReportCmd(), incidentUpdateCmd(), incidentShowCmd(), incidentListCmd(),
			incidentPostCmd(), incidentRespondCmd(), incidentAckCmd(), incidentReceiptsCmd(), incidentExportCmd(),
		}},
		watchCmd(),
		simulateCmd(),
		benchCmd(),
		{name: "token", summary: "issue and revoke bearer tokens (operator)", subs: []*command{
			tokenIssueCmd(), tokenRevokeCmd(),
		}},
		{name: "audit", summary: "read and check the hub's audit log (operator)", subs: []*command{
			auditTailCmd(), auditVerifyCmd(),
		}},
		{name: "pki", summary: "create a development PKI, member certificates and token keys", subs: []*command{
			pkiInitCmd(), pkiIssueCmd(), pkiTokenKeyCmd(),
		}},
		versionCmd(),
		{name: "help", args: "[COMMAND]", summary: "show help for phx or a command"},
	}
}

// EnvDataDir names the dev data dir when --data-dir is not given.
const EnvDataDir = "PHX_DATA_DIR"

// DefaultDataDir is the dev data dir when neither --data-dir nor
// PHX_DATA_DIR names one.
const DefaultDataDir = "./phx-data"

func globalFlags(fs *flag.FlagSet, g *globals) {
	fs.StringVar(&g.hub, "hub", "", "hub `address`, host:port, or several separated by commas for failover (env PHX_HUB, default "+sdk.DefaultHub+")")
	fs.StringVar(&g.ca, "ca", "", "`file` of the CA certificate that verifies the hub (env PHX_CA)")
	fs.StringVar(&g.cert, "cert", "", "client certificate `file` (env PHX_CERT)")
	fs.StringVar(&g.key, "key", "", "client key `file` (env PHX_KEY)")
	fs.StringVar(&g.token, "token", "", "bearer `token` (env PHX_TOKEN)")
	fs.StringVar(&g.as, "as", "", "act as dev `org`, with its certificate from the data dir")
	fs.StringVar(&g.dataDir, "data-dir", "", "dev data `dir` (env PHX_DATA_DIR, default "+DefaultDataDir+")")
	fs.BoolVar(&g.json, "json", false, "print JSON for machines")
	fs.DurationVar(&g.timeout, "timeout", 30*time.Second, "time limit of each call to the hub (0: none; watch runs until interrupted)")
}

// fromEnv fills the flags that were not given from the environment, then
// from the defaults: flags beat environment variables.
func (g *globals) fromEnv() {
	fill := func(v *string, env, def string) {
		if *v == "" {
			*v = os.Getenv(env)
		}
		if *v == "" {
			*v = def
		}
	}
	fill(&g.hub, sdk.EnvHub, sdk.DefaultHub)
	fill(&g.ca, sdk.EnvCA, "")
	fill(&g.cert, sdk.EnvCert, "")
	fill(&g.key, sdk.EnvKey, "")
	fill(&g.token, sdk.EnvToken, "")
	fill(&g.dataDir, EnvDataDir, DefaultDataDir)
}

// Run runs phx with args (without the program name), writing output to
// stdout and diagnostics to stderr. It returns a *UsageError for a bad
// invocation and an *sdk.Error for a refused call.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	e := &env{stdout: stdout, stderr: stderr, color: colorEnabled(stdout)}
	fs := flag.NewFlagSet("phx", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	globalFlags(fs, &e.g)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, fs)
			return nil
		}
		return usagef("", "%v", err)
	}
	e.g.fromEnv()
	rest := fs.Args()
	if len(rest) == 0 {
		printUsage(stderr, fs)
		return usagef("", "missing command")
	}
	cmds := commands()
	if rest[0] == "help" {
		return help(e, fs, cmds, rest[1:])
	}
	return explain(dispatch(ctx, e, cmds, "", rest), e.g.hub)
}

// transportError matches gRPC's wording of a failed connection.
var transportError = regexp.MustCompile(`connection error: desc = "transport: (?:Error while dialing: )?(.*)"`)

// hubError is an SDK error that happened before the hub could answer,
// described in terms of the hub address.
type hubError struct {
	msg string
	err error
}

func (e *hubError) Error() string { return e.msg }
func (e *hubError) Unwrap() error { return e.err }

// explain rewrites gRPC's transport wording of an error ("connection error:
// desc = "transport: Error while dialing: ...") into one that names the hub.
func explain(err error, hub string) error {
	var se *sdk.Error
	if !errors.As(err, &se) || !transportError.MatchString(err.Error()) {
		return err
	}
	msg := transportError.ReplaceAllStringFunc(err.Error(), func(m string) string {
		inner := transportError.FindStringSubmatch(m)[1]
		return "cannot reach the hub at " + hub + ": " + strings.ReplaceAll(inner, `\"`, `"`)
	})
	return &hubError{msg: msg, err: err}
}

func find(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

func names(cmds []*command) string {
	var n []string
	for _, c := range cmds {
		n = append(n, c.name)
	}
	return strings.Join(n, ", ")
}

func dispatch(ctx context.Context, e *env, cmds []*command, parent string, args []string) error {
	c := find(cmds, args[0])
	path := strings.TrimSpace(parent + " " + args[0])
	if c == nil {
		if parent == "" {
			return usagef("", "unknown command %q", args[0])
		}
		return usagef(parent, "unknown command %q (one of: %s)", args[0], names(cmds))
	}
	args = args[1:]
	if c.subs != nil {
		if len(args) == 0 {
			return usagef(path, "missing command (one of: %s)", names(c.subs))
		}
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			printGroupUsage(e.stdout, path, c)
			return nil
		}
		return dispatch(ctx, e, c.subs, path, args)
	}
	fs := flag.NewFlagSet("phx "+path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&e.g.json, "json", e.g.json, "print JSON for machines")
	run := c.setup(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(e.stdout, path, c, fs)
			return nil
		}
		return usagef(path, "%v", err)
	}
	e.cmd = path
	return run(ctx, e, pos)
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("rollout update ID --revision 3"), and returns the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		// A "--" ends the flags: everything after it is positional.
		for i, a := range args {
			if a == "--" {
				if err := fs.Parse(args[:i]); err != nil {
					return nil, err
				}
				pos = append(pos, fs.Args()...)
				return append(pos, args[i+1:]...), nil
			}
		}
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func help(e *env, global *flag.FlagSet, cmds []*command, args []string) error {
	if len(args) == 0 {
		printUsage(e.stdout, global)
		return nil
	}
	path := ""
	for i, a := range args {
		c := find(cmds, a)
		path = strings.TrimSpace(path + " " + a)
		if c == nil {
			return usagef("", "unknown command %q", path)
		}
		if c.subs == nil || i == len(args)-1 {
			if c.subs != nil {
				printGroupUsage(e.stdout, path, c)
				return nil
			}
			fs := flag.NewFlagSet("phx "+path, flag.ContinueOnError)
			fs.Bool("json", false, "print JSON for machines")
			if c.setup != nil {
				c.setup(fs)
			}
			printCommandUsage(e.stdout, path, c, fs)
			return nil
		}
		cmds = c.subs
	}
	return nil
}

func printUsage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprint(w, "phx is the command-line client of a phx hub (the Product Health eXchange).\n\n")
	fmt.Fprint(w, "Usage:\n  phx [global flags] COMMAND [flags] [args]\n\nCommands:\n")
	var lines [][2]string
	var walk func(prefix string, cmds []*command)
	walk = func(prefix string, cmds []*command) {
		for _, c := range cmds {
			p := strings.TrimSpace(prefix + " " + c.name)
			if c.subs != nil {
				walk(p, c.subs)
				continue
			}
			lines = append(lines, [2]string{p, c.summary})
		}
	}
	walk("", commands())
	width := 0
	for _, l := range lines {
		width = max(width, len(l[0]))
	}
	for _, l := range lines {
		fmt.Fprintf(w, "  %-*s  %s\n", width, l[0], l[1])
	}
	fmt.Fprint(w, "\nGlobal flags (before the command; --json also after it):\n")
	printFlags(w, global)
	fmt.Fprint(w, "\nRun 'phx COMMAND -h' for a command's flags.\n")
}

func printGroupUsage(w io.Writer, path string, c *command) {
	fmt.Fprintf(w, "phx %s: %s\n\nCommands:\n", path, c.summary)
	for _, s := range c.subs {
		fmt.Fprintf(w, "  phx %s %s\n      %s\n", path, strings.TrimSpace(s.name+" "+s.args), s.summary)
	}
	fmt.Fprintf(w, "\nRun 'phx %s COMMAND -h' for a command's flags.\n", path)
}

func printCommandUsage(w io.Writer, path string, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: phx %s\n\n%s\n", strings.TrimSpace(path+" "+c.args), c.summary)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", c.long)
	}
	fmt.Fprint(w, "\nFlags:\n")
	printFlags(w, fs)
}

func printFlags(w io.Writer, fs *flag.FlagSet) {
	type fl struct{ name, usage, def string }
	var all []fl
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		n := "--" + f.Name
		if name != "" {
			n += " " + name
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		all = append(all, fl{n, usage, def})
	})
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	width := 0
	for _, f := range all {
		width = max(width, len(f.name))
	}
	for _, f := range all {
		fmt.Fprintf(w, "  %-*s  %s%s\n", width, f.name, f.usage, f.def)
	}
}
