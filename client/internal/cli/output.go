package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// strictWarning is shown with every TLP:AMBER+STRICT item.
const strictWarning = "AMBER+STRICT — do not share outside your org"

// colorEnabled reports whether w is a terminal and NO_COLOR is unset.
func colorEnabled(w io.Writer) bool {
	return os.Getenv("NO_COLOR") == "" && isTerminal(w)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// ANSI colours. Every code has the same length, so that table columns of
// painted cells stay aligned under text/tabwriter.
const (
	red     = "\x1b[31m"
	green   = "\x1b[32m"
	yellow  = "\x1b[33m"
	magenta = "\x1b[35m"
	plain   = "\x1b[39m"
	reset   = "\x1b[0m"
)

// paint colours s when colour is on. An empty colour paints with the
// default colour, which keeps cells of a column the same extra width.
func (e *env) paint(color, s string) string {
	if !e.color {
		return s
	}
	if color == "" {
		color = plain
	}
	return color + s + reset
}

// printJSON prints a message as protojson: indented for one object,
// one line for items of a stream.
func printJSON(w io.Writer, m proto.Message, multiline bool) error {
	opts := protojson.MarshalOptions{EmitUnpopulated: false}
	if multiline {
		opts.Multiline, opts.Indent = true, "  "
	}
	b, err := opts.Marshal(m)
	if err != nil {
		return err
	}
	// protojson may vary its whitespace; one line must be one line.
	if !multiline {
		b = []byte(strings.ReplaceAll(string(b), "\n", " "))
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// enumLabel is an enum value's name without its prefix, in lower case with
// dashes: RING_CANARY → "canary", ROLLOUT_ROLLED_BACK → "rolled-back".
func enumLabel(v protoreflect.Enum, prefix string) string {
	d := v.Descriptor().Values().ByNumber(v.Number())
	if d == nil {
		return fmt.Sprint(v.Number())
	}
	if v.Number() == 0 {
		return "-"
	}
	name := strings.TrimPrefix(string(d.Name()), prefix)
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// parseEnum reads an enum value given as its short label ("canary",
// "rolled-back", "amber+strict") or its full name ("RING_CANARY"),
// case-insensitively. Zero (unspecified) values are not accepted.
func parseEnum(d protoreflect.EnumDescriptor, prefix, s string) (protoreflect.EnumNumber, error) {
	n := strings.ToUpper(strings.NewReplacer("-", "_", "+", "_", " ", "_").Replace(strings.TrimSpace(s)))
	for _, name := range []string{prefix + n, n} {
		if v := d.Values().ByName(protoreflect.Name(name)); v != nil && v.Number() != 0 {
			return v.Number(), nil
		}
	}
	var valid []string
	for i := 0; i < d.Values().Len(); i++ {
		v := d.Values().Get(i)
		if v.Number() == 0 {
			continue
		}
		valid = append(valid, strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(string(v.Name()), prefix)), "_", "-"))
	}
	return 0, fmt.Errorf("unknown value %q (one of: %s)", s, strings.Join(valid, ", "))
}

func parseRing(s string) (phxv1.Ring, error) {
	n, err := parseEnum(phxv1.Ring(0).Descriptor(), "RING_", s)
	return phxv1.Ring(n), err
}

func parseTLP(s string) (phxv1.Tlp, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "TLP:"), "TLP_")
	n, err := parseEnum(phxv1.Tlp(0).Descriptor(), "TLP_", s)
	return phxv1.Tlp(n), err
}

func parseSeverity(s string) (phxv1.Severity, error) {
	n, err := parseEnum(phxv1.Severity(0).Descriptor(), "SEVERITY_", s)
	return phxv1.Severity(n), err
}

func parseStatus(s string) (phxv1.Status, error) {
	n, err := parseEnum(phxv1.Status(0).Descriptor(), "STATUS_", s)
	return phxv1.Status(n), err
}

func parseState(s string) (phxv1.RolloutState, error) {
	n, err := parseEnum(phxv1.RolloutState(0).Descriptor(), "ROLLOUT_", s)
	return phxv1.RolloutState(n), err
}

func parseClassification(s string) (phxv1.Classification, error) {
	n, err := parseEnum(phxv1.Classification(0).Descriptor(), "CLASSIFICATION_", s)
	return phxv1.Classification(n), err
}

func parseKind(s string) (phxv1.Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "health", "signal", "signals":
		return phxv1.Kind_KIND_HEALTH_SIGNAL, nil
	}
	n, err := parseEnum(phxv1.Kind(0).Descriptor(), "KIND_", s)
	if err == nil && phxv1.Kind(n) == phxv1.Kind_KIND_HEARTBEAT {
		return 0, fmt.Errorf("heartbeats are not a kind to subscribe to")
	}
	return phxv1.Kind(n), err
}

// tlpLabel is the TLP 2.0 label of an audience, e.g. "TLP:AMBER+STRICT".
func tlpLabel(a *phxv1.Audience) string {
	switch a.GetTlp() {
	case phxv1.Tlp_TLP_CLEAR:
		return "TLP:CLEAR"
	case phxv1.Tlp_TLP_GREEN:
		return "TLP:GREEN"
	case phxv1.Tlp_TLP_AMBER:
		return "TLP:AMBER"
	case phxv1.Tlp_TLP_AMBER_STRICT:
		return "TLP:AMBER+STRICT"
	case phxv1.Tlp_TLP_RED:
		return "TLP:RED"
	}
	return "TLP:?"
}

func tlpColor(a *phxv1.Audience) string {
	switch a.GetTlp() {
	case phxv1.Tlp_TLP_GREEN:
		return green
	case phxv1.Tlp_TLP_AMBER, phxv1.Tlp_TLP_AMBER_STRICT:
		return yellow
	case phxv1.Tlp_TLP_RED:
		return red
	}
	return ""
}

// audienceText is the TLP label with the named orgs, if any.
func audienceText(a *phxv1.Audience) string {
	s := tlpLabel(a)
	if len(a.GetOrgs()) > 0 {
		s += " (" + strings.Join(a.GetOrgs(), ", ") + ")"
	}
	if a.GetPseudonymous() {
		s += " pseudonymous"
	}
	return s
}

func strict(a *phxv1.Audience) bool { return a.GetTlp() == phxv1.Tlp_TLP_AMBER_STRICT }

func severityColor(s phxv1.Severity) string {
	switch s {
	case phxv1.Severity_SEVERITY_CRITICAL:
		return red
	case phxv1.Severity_SEVERITY_HIGH:
		return magenta
	case phxv1.Severity_SEVERITY_MEDIUM:
		return yellow
	}
	return ""
}

func stateColor(s phxv1.RolloutState) string {
	switch s {
	case phxv1.RolloutState_ROLLOUT_ACTIVE:
		return green
	case phxv1.RolloutState_ROLLOUT_PAUSED:
		return yellow
	case phxv1.RolloutState_ROLLOUT_ROLLED_BACK:
		return red
	}
	return ""
}

func statusColor(s phxv1.Status) string {
	switch s {
	case phxv1.Status_STATUS_INVESTIGATING, phxv1.Status_STATUS_IDENTIFIED:
		return red
	case phxv1.Status_STATUS_MITIGATING, phxv1.Status_STATUS_MONITORING:
		return yellow
	case phxv1.Status_STATUS_RESOLVED:
		return green
	}
	return ""
}

func outcomeColor(o phxv1.SignalOutcome) string {
	switch o {
	case phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED:
		return green
	case phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE:
		return yellow
	case phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED:
		return red
	}
	return ""
}

// timeText formats a timestamp in UTC to the second, or "-" when unset.
func timeText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// newTable returns a tabwriter for aligned columns separated by two spaces.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// row writes one tab-separated line of cells.
func row(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// percent formats n/d as a percentage, or "" when d is 0.
func percent(n, d uint32) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f%%", 100*float64(n)/float64(d))
}
