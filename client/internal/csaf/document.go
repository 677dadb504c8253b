package csaf

// The types below are the part of the CSAF 2.1 schema that an incident
// fills. Fields are in the schema's (alphabetical) order, so that documents
// read like the published examples; optional ones are omitted when empty.

// SchemaURL is the URL of the CSAF 2.1 JSON schema, the value of $schema.
const SchemaURL = "https://docs.oasis-open.org/csaf/csaf/v2.1/schema/csaf.json"

// Document is a CSAF 2.1 document.
type Document struct {
	// Schema is always SchemaURL.
	Schema string `json:"$schema"`
	// Document is the document-level metadata.
	Document Meta `json:"document"`
	// ProductTree lists every product the document refers to.
	ProductTree *ProductTree `json:"product_tree,omitempty"`
	// Vulnerabilities holds the one vulnerability an incident describes.
	Vulnerabilities []Vulnerability `json:"vulnerabilities,omitempty"`
}

// Meta is the document-level metadata (/document).
type Meta struct {
	// AggregateSeverity is the incident's severity as text.
	AggregateSeverity *AggregateSeverity `json:"aggregate_severity,omitempty"`
	// Category names the profile, CategorySecurityAdvisory.
	Category string `json:"category"`
	// CSAFVersion is always "2.1".
	CSAFVersion string `json:"csaf_version"`
	// Distribution holds the TLP label.
	Distribution Distribution `json:"distribution"`
	// Lang is the document's language, "en".
	Lang string `json:"lang,omitempty"`
	// Notes hold the incident's state, timeline and requests.
	Notes []Note `json:"notes,omitempty"`
	// Publisher is the reporting org.
	Publisher Publisher `json:"publisher"`
	// Title is the incident's title.
	Title string `json:"title"`
	// Tracking holds the id, version and revision history.
	Tracking Tracking `json:"tracking"`
}

// AggregateSeverity is a severity in words.
type AggregateSeverity struct {
	// Text is the severity, e.g. "Critical".
	Text string `json:"text"`
}

// Distribution says who may receive the document.
type Distribution struct {
	// Text adds to the label, e.g. the orgs the document is limited to.
	Text string `json:"text,omitempty"`
	// TLP is the Traffic Light Protocol label.
	TLP TLP `json:"tlp"`
}

// TLP is a Traffic Light Protocol 2.0 label.
type TLP struct {
	// Label is CLEAR, GREEN, AMBER, AMBER+STRICT or RED.
	Label string `json:"label"`
	// URL is where the labels are defined.
	URL string `json:"url,omitempty"`
}

// Note is a piece of text with a category (/$defs/notes_t).
type Note struct {
	// Category is description, details, faq, general, legal_disclaimer,
	// other or summary.
	Category string `json:"category"`
	// ProductIDs are the products the note concerns, if not all.
	ProductIDs []string `json:"product_ids,omitempty"`
	// Text is the note.
	Text string `json:"text"`
	// Title is a short heading.
	Title string `json:"title,omitempty"`
}

// Publisher is the party that issues the document.
type Publisher struct {
	// Category is e.g. "vendor".
	Category string `json:"category"`
	// Name is the publisher's name.
	Name string `json:"name"`
	// Namespace is a URL that identifies the publisher.
	Namespace string `json:"namespace"`
}

// Tracking identifies the document and its versions.
type Tracking struct {
	// CurrentReleaseDate is the date of the newest revision.
	CurrentReleaseDate string `json:"current_release_date"`
	// Generator names the program that wrote the document.
	Generator *Generator `json:"generator,omitempty"`
	// ID is the incident id.
	ID string `json:"id"`
	// InitialReleaseDate is the date of the first revision.
	InitialReleaseDate string `json:"initial_release_date"`
	// RevisionHistory lists the revisions, 1 to Version.
	RevisionHistory []Revision `json:"revision_history"`
	// Status is "final" for a resolved incident, "interim" otherwise.
	Status string `json:"status"`
	// Version is the incident's revision as an integer string.
	Version string `json:"version"`
}

// Generator names the program that wrote the document.
type Generator struct {
	// Date is when the document was written.
	Date string `json:"date,omitempty"`
	// Engine is the program.
	Engine Engine `json:"engine"`
}

// Engine is a program's name and version.
type Engine struct {
	// Name is "phx".
	Name string `json:"name"`
	// Version is the program's version.
	Version string `json:"version,omitempty"`
}

// Revision is one entry of the revision history.
type Revision struct {
	// Date is when the revision was made.
	Date string `json:"date"`
	// Number is the revision number as an integer string.
	Number string `json:"number"`
	// Summary says what changed and who changed it.
	Summary string `json:"summary"`
}

// ProductTree lists products as branches, standalone names and paths.
type ProductTree struct {
	// Branches is the hierarchy of products.
	Branches []Branch `json:"branches,omitempty"`
	// FullProductNames are products outside the hierarchy.
	FullProductNames []FullProductName `json:"full_product_names,omitempty"`
	// ProductPaths combine products, e.g. a product installed on an OS
	// build.
	ProductPaths []ProductPath `json:"product_paths,omitempty"`
}

// Branch is one level of the product hierarchy. It has either Branches or
// Product, never both.
type Branch struct {
	// Branches are the children.
	Branches []Branch `json:"branches,omitempty"`
	// Category is e.g. product_name, product_version or patch_level.
	Category string `json:"category"`
	// Name is the level's value, e.g. a product name or version.
	Name string `json:"name"`
	// Product is the product this branch defines.
	Product *FullProductName `json:"product,omitempty"`
}

// FullProductName names a product and gives it the id the rest of the
// document refers to.
type FullProductName struct {
	// Name is a human-readable name.
	Name string `json:"name"`
	// ProductID is the document-wide id.
	ProductID string `json:"product_id"`
}

// ProductPath defines a product as a chain of relationships.
type ProductPath struct {
	// BeginningProductReference is the first product of the chain.
	BeginningProductReference string `json:"beginning_product_reference"`
	// FullProductName names the combination.
	FullProductName FullProductName `json:"full_product_name"`
	// Subpaths are the relationships, in order.
	Subpaths []Subpath `json:"subpaths"`
}

// Subpath is one relationship of a product path.
type Subpath struct {
	// Category is e.g. "installed_on".
	Category string `json:"category"`
	// NextProductReference is the related product.
	NextProductReference string `json:"next_product_reference"`
}

// Vulnerability describes the fault, who is affected and the ways out.
type Vulnerability struct {
	// IDs hold the incident id.
	IDs []VulnerabilityID `json:"ids,omitempty"`
	// Metrics hold the severity.
	Metrics []Metric `json:"metrics,omitempty"`
	// Notes describe the fault and the answers of other orgs.
	Notes []Note `json:"notes,omitempty"`
	// ProductStatus says which products are affected, not affected or
	// under investigation.
	ProductStatus *ProductStatus `json:"product_status,omitempty"`
	// Remediations are the ways out.
	Remediations []Remediation `json:"remediations,omitempty"`
	// Threats hold impact statements.
	Threats []Threat `json:"threats,omitempty"`
	// Title is the incident's title.
	Title string `json:"title,omitempty"`
}

// VulnerabilityID is an identifier of a vulnerability outside CVE.
type VulnerabilityID struct {
	// SystemName names the system that issued the id.
	SystemName string `json:"system_name"`
	// Text is the id.
	Text string `json:"text"`
}

// Metric scores the vulnerability for some products.
type Metric struct {
	// Content holds the score.
	Content MetricContent `json:"content"`
	// Products are the products scored.
	Products []string `json:"products"`
}

// MetricContent holds one kind of score.
type MetricContent struct {
	// QualitativeSeverityRating is critical, high, medium, low or none.
	QualitativeSeverityRating string `json:"qualitative_severity_rating"`
}

// ProductStatus groups product ids by their status.
type ProductStatus struct {
	// KnownAffected products are affected.
	KnownAffected []string `json:"known_affected,omitempty"`
	// KnownNotAffected products are not affected.
	KnownNotAffected []string `json:"known_not_affected,omitempty"`
	// UnderInvestigation products are being looked into.
	UnderInvestigation []string `json:"under_investigation,omitempty"`
	// Unknown products have an unknown status.
	Unknown []string `json:"unknown,omitempty"`
}

// Remediation is one way out.
type Remediation struct {
	// Category is workaround, mitigation, vendor_fix, none_available or
	// no_fix_planned (CSAF also has fix_planned and optional_patch).
	Category string `json:"category"`
	// Details says what to do.
	Details string `json:"details"`
	// ProductIDs are the products it applies to.
	ProductIDs []string `json:"product_ids,omitempty"`
	// RestartRequired says what must be restarted.
	RestartRequired *RestartRequired `json:"restart_required,omitempty"`
	// URL is where to read more.
	URL string `json:"url,omitempty"`
}

// RestartRequired says what must be restarted to apply a remediation.
type RestartRequired struct {
	// Category is e.g. "machine".
	Category string `json:"category"`
}

// Threat is a statement about a threat, e.g. the impact.
type Threat struct {
	// Category is exploit_status, impact or target_set.
	Category string `json:"category"`
	// Details is the statement.
	Details string `json:"details"`
	// ProductIDs are the products it concerns.
	ProductIDs []string `json:"product_ids,omitempty"`
}
