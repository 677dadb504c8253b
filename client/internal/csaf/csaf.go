// Package csaf writes a phx incident as a CSAF 2.1 document (OASIS Common
// Security Advisory Framework), profile "Security Advisory".
//
// The mapping:
//
//   - document: category csaf_security_advisory; publisher the reporting
//     org, category vendor, namespace https://phx.invalid/org/<org> unless
//     Options.Namespace names another; distribution.tlp.label the
//     audience's TLP 2.0 label (named orgs and AMBER+STRICT's rule in
//     distribution.text); aggregate_severity the severity; notes the
//     classification, status and severity, the rollout action, the
//     requested responses and the timeline posts.
//   - tracking: id the incident id; version the incident's revision;
//     revision_history one entry per revision 1…version from the
//     incident's history (date, author and the changed fields); status
//     final for a resolved incident, interim otherwise.
//   - product_tree: per affected scope a branch product_name →
//     product_version (each listed version) or product_version_range (vers)
//     → patch_level (the content channel and version); OS builds are
//     products of their own, and the scope on each build a product path
//     "installed_on". Each org that responded is a vendor branch whose one
//     product stands for that org's products.
//   - vulnerabilities: one, titled and identified by the incident, with
//     product_status (the affected scopes and the orgs that answered
//     affected are known_affected, not_affected known_not_affected,
//     investigating under_investigation, no answer unknown), remediations
//     in their CSAF categories for the affected scopes, the impact as a
//     note and an impact threat, and the severity as a qualitative rating.
//
// Product ids are derived from what they name, so the same scope keeps its
// id from one revision of an incident to the next.
package csaf

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// CategorySecurityAdvisory is the document category (profile) of every
// document this package writes.
const CategorySecurityAdvisory = "csaf_security_advisory"

// DefaultNamespaceBase is where publisher namespaces point unless
// Options.Namespace says otherwise: a reserved, never resolving domain.
const DefaultNamespaceBase = "https://phx.invalid/org/"

// TLPURL is where the TLP 2.0 labels are defined.
const TLPURL = "https://www.first.org/tlp/"

// Options adjust a conversion.
type Options struct {
	// Namespace is the publisher's namespace, an absolute http(s) URL.
	// Empty: DefaultNamespaceBase followed by the reporting org.
	Namespace string
	// GeneratorVersion is the version of the program writing the
	// document, for tracking.generator.
	GeneratorVersion string
	// Now is when the document is written (tracking.generator.date);
	// zero leaves the date out, which keeps output reproducible.
	Now time.Time
}

// Convert returns the incident as a CSAF 2.1 security advisory. The
// incident is what the hub returns: it needs an id, a reporter, a TLP
// label, at least one affected product and a creation or update time.
func Convert(inc *phxv1.Incident, opts Options) (*Document, error) {
	if err := check(inc); err != nil {
		return nil, err
	}
	namespace := opts.Namespace
	if namespace == "" {
		namespace = DefaultNamespaceBase + url.PathEscape(inc.GetReporter())
	}
	if err := CheckNamespace(namespace); err != nil {
		return nil, err
	}
	title := strings.TrimSpace(inc.GetTitle())
	if title == "" {
		title = "Incident " + inc.GetId()
	}
	history, err := revisionHistory(inc)
	if err != nil {
		return nil, err
	}
	d := &Document{
		Schema: SchemaURL,
		Document: Meta{
			Category:     CategorySecurityAdvisory,
			CSAFVersion:  "2.1",
			Distribution: distribution(inc.GetAudience()),
			Lang:         "en",
			Notes:        documentNotes(inc),
			Publisher:    Publisher{Category: "vendor", Name: inc.GetReporter(), Namespace: namespace},
			Title:        title,
			Tracking: Tracking{
				ID:                 inc.GetId(),
				Version:            history[len(history)-1].Number,
				RevisionHistory:    history,
				InitialReleaseDate: history[0].Date,
				CurrentReleaseDate: history[len(history)-1].Date,
				Status:             "interim",
				Generator:          &Generator{Engine: Engine{Name: "phx", Version: opts.GeneratorVersion}},
			},
		},
	}
	if inc.GetStatus() == phxv1.Status_STATUS_RESOLVED {
		d.Document.Tracking.Status = "final"
	}
	if !opts.Now.IsZero() {
		d.Document.Tracking.Generator.Date = date(opts.Now)
	}
	if s := severityWord(inc.GetSeverity()); s != "" {
		d.Document.AggregateSeverity = &AggregateSeverity{Text: capitalize(s)}
	}
	tree := newTree()
	affected := tree.addAffected(inc.GetAffected())
	d.Vulnerabilities = []Vulnerability{vulnerability(inc, title, tree, affected)}
	d.ProductTree = tree.productTree()
	return d, nil
}

// Encode writes d as indented JSON. Unlike json.Marshal it leaves <, >
// and & as they are, which keeps version ranges readable.
func Encode(w io.Writer, d *Document) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}

func check(inc *phxv1.Incident) error {
	switch {
	case inc == nil:
		return errors.New("csaf: no incident")
	case inc.GetId() == "":
		return errors.New("csaf: the incident has no id")
	case inc.GetReporter() == "":
		return errors.New("csaf: the incident has no reporter")
	case tlpLabel(inc.GetAudience().GetTlp()) == "":
		return fmt.Errorf("csaf: the incident's audience has no TLP label (%v)", inc.GetAudience().GetTlp())
	}
	for _, a := range inc.GetAffected() {
		if a.GetProduct() != "" {
			return nil
		}
	}
	// The Security Advisory profile needs known_affected products; the hub
	// never stores an incident without one.
	return errors.New("csaf: the incident names no affected product")
}

// date formats a time as CSAF wants it: UTC, with milliseconds and Z.
func date(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func tsDate(ts *timestamppb.Timestamp) string { return date(ts.AsTime()) }

// uriChars are the characters RFC 3986 allows in a URI.
var uriChars = regexp.MustCompile(`^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$`)

// CheckNamespace returns an error unless s can be a publisher namespace:
// an absolute http or https URL.
func CheckNamespace(s string) error {
	if !isHTTPURL(s) {
		return fmt.Errorf("csaf: namespace %q is not an absolute http or https URL", s)
	}
	return nil
}

// isHTTPURL reports whether s is an absolute http or https URI that any
// validator accepts.
func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && uriChars.MatchString(s) && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

// word returns an enum value's name without its prefix, in lower case with
// spaces: STATUS_NOT_AFFECTED → "not affected".
func word(name, prefix string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", " ")
}

func severityWord(s phxv1.Severity) string {
	if s == phxv1.Severity_SEVERITY_UNSPECIFIED {
		return ""
	}
	if _, ok := phxv1.Severity_name[int32(s)]; !ok {
		return ""
	}
	return word(s.String(), "SEVERITY_")
}

// tlpLabel maps a TLP 2.0 label onto CSAF's spelling, or "" when there is
// none: a document is never shared wider than its incident.
func tlpLabel(t phxv1.Tlp) string {
	switch t {
	case phxv1.Tlp_TLP_CLEAR:
		return "CLEAR"
	case phxv1.Tlp_TLP_GREEN:
		return "GREEN"
	case phxv1.Tlp_TLP_AMBER:
		return "AMBER"
	case phxv1.Tlp_TLP_AMBER_STRICT:
		return "AMBER+STRICT"
	case phxv1.Tlp_TLP_RED:
		return "RED"
	}
	return ""
}

func distribution(a *phxv1.Audience) Distribution {
	d := Distribution{TLP: TLP{Label: tlpLabel(a.GetTlp()), URL: TLPURL}}
	var text []string
	if len(a.GetOrgs()) > 0 {
		text = append(text, "Limited to the organizations "+strings.Join(a.GetOrgs(), ", ")+".")
	}
	if a.GetTlp() == phxv1.Tlp_TLP_AMBER_STRICT {
		text = append(text, "Recipients may not share it outside their organization.")
	}
	d.Text = strings.Join(text, " ")
	return d
}

// revisionHistory lists revisions 1 to the incident's revision, without
// gaps, as CSAF wants. Revisions the history lacks (a hub that kept none)
// are dated with the next known time, an upper bound, and say so.
func revisionHistory(inc *phxv1.Incident) ([]Revision, error) {
	known := map[uint64]*phxv1.RevisionInfo{}
	last := inc.GetRevision()
	for _, h := range inc.GetHistory() {
		if h.GetRevision() == 0 || h.GetAt() == nil {
			continue
		}
		known[h.GetRevision()] = h
		last = max(last, h.GetRevision())
	}
	last = max(last, 1)
	// The first and last times: from the history, else the incident's own.
	created, updated := inc.GetCreatedAt(), inc.GetUpdatedAt()
	for n := uint64(1); n <= last; n++ {
		if h := known[n]; h != nil {
			if n == 1 || created == nil {
				created = h.GetAt()
			}
			if n == last || updated == nil {
				updated = h.GetAt()
			}
		}
	}
	if created == nil {
		created = updated
	}
	if updated == nil {
		updated = created
	}
	if created == nil {
		return nil, errors.New("csaf: the incident has no times (created_at, updated_at or history)")
	}
	out := make([]Revision, 0, last)
	for n := uint64(1); n <= last; n++ {
		r := Revision{Number: strconv.FormatUint(n, 10)}
		switch h := known[n]; {
		case h != nil:
			r.Date, r.Summary = tsDate(h.GetAt()), summary(h)
		case n == 1:
			r.Date, r.Summary = tsDate(created), "Reported by "+inc.GetReporter()
		default:
			at := updated
			for m := n + 1; m <= last; m++ {
				if h := known[m]; h != nil {
					at = h.GetAt()
					break
				}
			}
			r.Date = tsDate(at)
			r.Summary = "Revision " + r.Number + ": its changes and time are not recorded; it was made no later than this date"
		}
		out = append(out, r)
	}
	return out, nil
}

// summary says what one revision changed and who changed it.
func summary(h *phxv1.RevisionInfo) string {
	var parts, fields []string
	for _, c := range h.GetChanged() {
		switch c {
		case "reported":
			parts = append(parts, "reported")
		case "post":
			parts = append(parts, "post added")
		case "response":
			parts = append(parts, "response recorded")
		default:
			fields = append(fields, strings.ReplaceAll(c, "_", " "))
		}
	}
	if len(fields) > 0 {
		parts = append(parts, strings.Join(fields, ", ")+" changed")
	}
	s := "Revision " + strconv.FormatUint(h.GetRevision(), 10)
	if len(parts) > 0 {
		s = capitalize(strings.Join(parts, "; "))
	}
	if h.GetAuthor() != "" {
		s += " by " + h.GetAuthor()
	}
	return s
}

// documentNotes holds what the incident says beyond its products: its
// state, what it asks of a rollout and of other orgs, and its timeline.
func documentNotes(inc *phxv1.Incident) []Note {
	state := []string{
		"Classification: " + orUnknown(word(inc.GetClassification().String(), "CLASSIFICATION_")) + ".",
		"Status: " + orUnknown(word(inc.GetStatus().String(), "STATUS_")) + ".",
		"Severity: " + orUnknown(severityWord(inc.GetSeverity())) + ".",
		"Reported by " + inc.GetReporter() + ".",
	}
	if inc.GetResolvedAt() != nil && inc.GetStatus() == phxv1.Status_STATUS_RESOLVED {
		state = append(state, "Resolved at "+tsDate(inc.GetResolvedAt())+".")
	}
	notes := []Note{{Category: "general", Title: "Incident state", Text: strings.Join(state, " ")}}
	if ra := inc.GetRolloutAction(); ra.GetRolloutId() != "" {
		what := "act on"
		switch ra.GetAction() {
		case phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_PAUSE:
			what = "pause"
		case phxv1.RolloutActionKind_ROLLOUT_ACTION_KIND_ROLLBACK:
			what = "roll back"
		}
		notes = append(notes, Note{Category: "details", Title: "Rollout action",
			Text: "The reporter asks to " + what + " rollout " + ra.GetRolloutId() + "."})
	}
	if ask := askedText(inc); ask != "" {
		notes = append(notes, Note{Category: "details", Title: "Responses requested", Text: ask})
	}
	for _, p := range inc.GetPosts() {
		text := strings.TrimSpace(p.GetText())
		if p.GetStatus() != phxv1.Status_STATUS_UNSPECIFIED {
			text = strings.TrimSpace(text + " (Status set to " + word(p.GetStatus().String(), "STATUS_") + ".)")
		}
		if text == "" {
			continue
		}
		title := fmt.Sprintf("Timeline post %d", p.GetSeq())
		var by []string
		if p.GetAuthor() != "" {
			by = append(by, p.GetAuthor())
		}
		if p.GetPostedAt() != nil {
			by = append(by, tsDate(p.GetPostedAt()))
		}
		if len(by) > 0 {
			title += " (" + strings.Join(by, ", ") + ")"
		}
		notes = append(notes, Note{Category: "details", Title: title, Text: text})
	}
	return notes
}

func orUnknown(s string) string {
	if s == "" || s == "unspecified" {
		return "unknown"
	}
	return s
}

func askedText(inc *phxv1.Incident) string {
	var who []string
	if len(inc.GetAskedOrgs()) > 0 {
		who = append(who, "the organizations "+strings.Join(inc.GetAskedOrgs(), ", "))
	}
	if inc.GetAskAllVendors() {
		who = append(who, "every vendor in the audience")
	}
	if len(who) == 0 && inc.GetRespondBy() == nil {
		return ""
	}
	s := "Responses are requested"
	if len(who) > 0 {
		s += " from " + strings.Join(who, " and ")
	}
	if inc.GetRespondBy() != nil {
		s += " by " + tsDate(inc.GetRespondBy())
	}
	return s + "."
}

// productID makes an id from what it names: the same scope gets the same
// id in every revision of an incident.
func productID(prefix string, parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "PHX-" + prefix + "-" + hex.EncodeToString(h[:6])
}

// tree collects the product tree.
type tree struct {
	root  node
	paths []ProductPath
	ids   map[string]bool // every product id defined
}

// node is one branch while the tree is built.
type node struct {
	category, name string
	product        *FullProductName
	children       []*node
}

func newTree() *tree { return &tree{ids: map[string]bool{}} }

// child returns n's child of that category and name, adding it if needed.
func (n *node) child(category, name string) *node {
	for _, c := range n.children {
		if c.category == category && c.name == name {
			return c
		}
	}
	c := &node{category: category, name: name}
	n.children = append(n.children, c)
	return c
}

// define gives node n the product, unless it has one.
func (t *tree) define(n *node, name, id string) string {
	if n.product == nil {
		n.product = &FullProductName{Name: name, ProductID: id}
		t.ids[id] = true
	}
	return n.product.ProductID
}

// addAffected adds the incident's affected scopes and returns the ids of
// the products they amount to, in order, without repeats.
func (t *tree) addAffected(as []*phxv1.Affected) []string {
	var out []string
	add := func(id string) {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	for _, a := range as {
		if a.GetProduct() == "" {
			continue
		}
		steps := versionSteps(a.GetVersionRange())
		if len(steps) == 0 {
			steps = []versionStep{{}}
		}
		content := contentText(a)
		for _, s := range steps {
			n := t.root.child("product_name", a.GetProduct())
			key := []string{a.GetProduct()}
			name := a.GetProduct()
			if s.category != "" {
				n = n.child(s.category, s.name)
				key = append(key, s.category, s.name)
				name += " " + s.text
			}
			if content != "" {
				n = n.child("patch_level", content)
				key = append(key, "patch_level", content)
				name += " with " + content
			}
			id := t.define(n, name, productID(a.GetProduct(), key...))
			if len(a.GetOsBuilds()) == 0 {
				add(id)
				continue
			}
			for _, b := range a.GetOsBuilds() {
				os := t.define(t.root.child("product_name", "Operating system").child("product_version", b),
					"Operating system build "+b, "PHX-OS-"+b)
				pid := productID(a.GetProduct(), append(key, "installed_on", b)...)
				if !t.ids[pid] {
					t.ids[pid] = true
					t.paths = append(t.paths, ProductPath{
						BeginningProductReference: id,
						Subpaths:                  []Subpath{{Category: "installed_on", NextProductReference: os}},
						FullProductName:           FullProductName{Name: name + " on OS build " + b, ProductID: pid},
					})
				}
				add(pid)
			}
		}
	}
	return out
}

// contentText names an affected scope's content, e.g. "content
// channel-291 291.1", or "" when the fault is not in content.
func contentText(a *phxv1.Affected) string {
	switch ch, v := a.GetContentChannel(), a.GetContentVersion(); {
	case ch != "" && v != "":
		return "content " + ch + " " + v
	case ch != "":
		return "content channel " + ch
	case v != "":
		return "content " + v
	}
	return ""
}

// org returns the product that stands for all products of an org, for
// the org's response.
func (t *tree) org(org string) string {
	return t.define(t.root.child("vendor", org), "Products of "+org, "PHX-ORG-"+org)
}

// productTree returns the tree in CSAF's form. A branch that defines a
// product and also has children (an affected product with and without
// narrower scopes) cannot hold both: its product moves to
// full_product_names.
func (t *tree) productTree() *ProductTree {
	pt := &ProductTree{ProductPaths: t.paths}
	var conv func(n *node) Branch
	conv = func(n *node) Branch {
		b := Branch{Category: n.category, Name: n.name}
		if len(n.children) == 0 {
			b.Product = n.product
			return b
		}
		if n.product != nil {
			pt.FullProductNames = append(pt.FullProductNames, *n.product)
		}
		for _, c := range n.children {
			b.Branches = append(b.Branches, conv(c))
		}
		return b
	}
	for _, c := range t.root.children {
		pt.Branches = append(pt.Branches, conv(c))
	}
	return pt
}

// remediationCategory maps onto CSAF's remediation categories.
var remediationCategory = map[phxv1.RemediationCategory]string{
	phxv1.RemediationCategory_REMEDIATION_CATEGORY_WORKAROUND:     "workaround",
	phxv1.RemediationCategory_REMEDIATION_CATEGORY_MITIGATION:     "mitigation",
	phxv1.RemediationCategory_REMEDIATION_CATEGORY_VENDOR_FIX:     "vendor_fix",
	phxv1.RemediationCategory_REMEDIATION_CATEGORY_NONE_AVAILABLE: "none_available",
	phxv1.RemediationCategory_REMEDIATION_CATEGORY_NO_FIX_PLANNED: "no_fix_planned",
}

// remediationPriority orders CSAF's categories for one product, from the
// CSAF 2.1 rules on contradicting remediations.
var remediationPriority = []string{"vendor_fix", "mitigation", "workaround", "fix_planned", "no_fix_planned", "optional_patch", "none_available"}

// contradicts lists the categories that may not apply to the same product
// as the key (CSAF 2.1, mandatory test "Contradicting Remediations").
var contradicts = map[string][]string{
	"workaround":     {"optional_patch", "none_available"},
	"mitigation":     {"optional_patch", "none_available"},
	"vendor_fix":     {"optional_patch", "none_available", "fix_planned", "no_fix_planned"},
	"optional_patch": {"workaround", "mitigation", "vendor_fix", "none_available", "fix_planned", "no_fix_planned"},
	"none_available": {"workaround", "mitigation", "vendor_fix", "optional_patch", "fix_planned", "no_fix_planned"},
	"fix_planned":    {"vendor_fix", "optional_patch", "none_available", "no_fix_planned"},
	"no_fix_planned": {"vendor_fix", "optional_patch", "none_available", "fix_planned"},
}

// keptCategories picks, highest priority first, the categories that do not
// contradict one already kept, and says which kept category displaced each
// of the others.
func keptCategories(present map[string]bool) (kept map[string]bool, displacedBy map[string]string) {
	kept, displacedBy = map[string]bool{}, map[string]string{}
	for _, c := range remediationPriority {
		if !present[c] {
			continue
		}
		kept[c] = true
		for _, k := range remediationPriority {
			if k != c && kept[k] && slices.Contains(contradicts[c], k) {
				kept[c], displacedBy[c] = false, k
				break
			}
		}
	}
	return kept, displacedBy
}

// defaultDetails stands in for a remediation without details.
var defaultDetails = map[string]string{
	"workaround":     "A workaround exists.",
	"mitigation":     "A mitigation exists.",
	"vendor_fix":     "A fix is available from the vendor.",
	"none_available": "No remediation is available.",
	"no_fix_planned": "No fix is planned.",
}

// vulnerability builds the one vulnerability of the document.
func vulnerability(inc *phxv1.Incident, title string, t *tree, affected []string) Vulnerability {
	v := Vulnerability{
		Title: title,
		IDs:   []VulnerabilityID{{SystemName: "phx incident", Text: inc.GetId()}},
	}
	if impact := strings.TrimSpace(inc.GetImpact()); impact != "" {
		v.Notes = append(v.Notes, Note{Category: "description", Title: "Impact", Text: impact})
		v.Threats = append(v.Threats, Threat{Category: "impact", Details: impact, ProductIDs: affected})
	} else {
		v.Notes = append(v.Notes, Note{Category: "summary", Title: "Summary", Text: title})
	}
	if s := severityWord(inc.GetSeverity()); s != "" {
		v.Metrics = []Metric{{Content: MetricContent{QualitativeSeverityRating: s}, Products: affected}}
	}

	status := &ProductStatus{KnownAffected: slices.Clone(affected)}
	for _, r := range latestResponses(inc.GetResponses()) {
		id := t.org(r.GetOrg())
		kind := word(r.GetKind().String(), "RESPONSE_KIND_")
		switch r.GetKind() {
		case phxv1.ResponseKind_RESPONSE_KIND_AFFECTED:
			status.KnownAffected = append(status.KnownAffected, id)
		case phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED:
			status.KnownNotAffected = append(status.KnownNotAffected, id)
		case phxv1.ResponseKind_RESPONSE_KIND_INVESTIGATING:
			status.UnderInvestigation = append(status.UnderInvestigation, id)
		case phxv1.ResponseKind_RESPONSE_KIND_NO_RESPONSE:
			kind = "no response"
			status.Unknown = append(status.Unknown, id)
		}
		statement := strings.TrimSpace(r.GetStatement())
		if statement == "" {
			statement = r.GetOrg() + " answered: " + kind + "."
		} else if r.GetKind() == phxv1.ResponseKind_RESPONSE_KIND_NOT_AFFECTED {
			v.Threats = append(v.Threats, Threat{Category: "impact", Details: statement, ProductIDs: []string{id}})
		}
		title := "Response of " + r.GetOrg() + ": " + kind
		if r.GetRespondedAt() != nil {
			title += " (" + tsDate(r.GetRespondedAt()) + ")"
		}
		v.Notes = append(v.Notes, Note{Category: "details", Title: title, Text: statement, ProductIDs: []string{id}})
	}
	v.ProductStatus = status

	present := map[string]bool{}
	for _, r := range inc.GetRemediations() {
		present[remediationCategory[r.GetCategory()]] = true
	}
	kept, displacedBy := keptCategories(present)
	for _, r := range inc.GetRemediations() {
		cat := remediationCategory[r.GetCategory()]
		if cat == "" {
			continue
		}
		details := strings.TrimSpace(r.GetDetails())
		if details == "" {
			details = defaultDetails[cat]
		}
		link := strings.TrimSpace(r.GetUrl())
		if !kept[cat] {
			// CSAF forbids contradicting categories for one product, and an
			// incident's remediations all apply to the same products: the
			// displaced one is kept as a note.
			if link != "" {
				details += " (" + link + ")"
			}
			v.Notes = append(v.Notes, Note{Category: "other", Title: "Remediation " + cat + ", superseded by " + displacedBy[cat], Text: details})
			continue
		}
		rem := Remediation{Category: cat, Details: details, ProductIDs: affected}
		switch {
		case isHTTPURL(link):
			rem.URL = link
		case link != "":
			rem.Details += " (" + link + ")"
		}
		if r.GetRestartRequired() {
			rem.RestartRequired = &RestartRequired{Category: "machine"}
		}
		v.Remediations = append(v.Remediations, rem)
	}
	return v
}

// latestResponses keeps each org's latest answer, in the order the orgs
// first answered.
func latestResponses(rs []*phxv1.Response) []*phxv1.Response {
	var out []*phxv1.Response
	at := map[string]int{}
	for _, r := range rs {
		if r.GetOrg() == "" || r.GetKind() == phxv1.ResponseKind_RESPONSE_KIND_UNSPECIFIED {
			continue
		}
		if _, ok := phxv1.ResponseKind_name[int32(r.GetKind())]; !ok {
			continue
		}
		i, ok := at[r.GetOrg()]
		if !ok {
			at[r.GetOrg()] = len(out)
			out = append(out, r)
			continue
		}
		if !r.GetRespondedAt().AsTime().Before(out[i].GetRespondedAt().AsTime()) {
			out[i] = r
		}
	}
	return out
}
