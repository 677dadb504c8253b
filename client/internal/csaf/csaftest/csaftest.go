// Package csaftest validates documents against the CSAF 2.1 JSON schema,
// which it carries (testdata/csaf-2.1) so that tests work offline. It is
// meant for tests only: the phx command does not link it.
package csaftest

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"sync"

	"github.com/dlclark/regexp2"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaURL is the $id of the CSAF 2.1 schema.
const SchemaURL = "https://docs.oasis-open.org/csaf/csaf/v2.1/schema/csaf.json"

//go:embed testdata/csaf-2.1
var files embed.FS

// schemaFiles maps the URLs the schema refers to onto its files, by host
// and path; query strings (the FIRST schemas carry a date) are ignored.
var schemaFiles = map[string]string{
	"docs.oasis-open.org/csaf/csaf/v2.1/schema/csaf.json":                  "csaf.json",
	"docs.oasis-open.org/csaf/csaf/v2.1/schema/meta.json":                  "meta.json",
	"docs.oasis-open.org/csaf/csaf/v2.1/schema/extension-content.json":     "extension-content.json",
	"docs.oasis-open.org/csaf/csaf/v2.1/schema/extension-metadata.json":    "extension-metadata.json",
	"docs.oasis-open.org/csaf/csaf/v2.1/schema/extension-metaschema.json":  "extension-metaschema.json",
	"www.first.org/cvss/meta.json":                                         "first/meta.json",
	"www.first.org/cvss/cvss-v2.0.json":                                    "first/cvss-v2.0.json",
	"www.first.org/cvss/cvss-v3.0.json":                                    "first/cvss-v3.0.json",
	"www.first.org/cvss/cvss-v3.1.json":                                    "first/cvss-v3.1.json",
	"www.first.org/cvss/cvss-v4.0.json":                                    "first/cvss-v4.0.json",
	"certcc.github.io/SSVC/data/schema/v2/SelectionList_2_0_0.schema.json": "certcc/SelectionList_2_0_0.schema.json",
}

// loader serves the schema's references from the embedded files and
// refuses every other URL: validation never touches the network.
type loader struct{}

// Load returns the embedded file behind u.
func (loader) Load(u string) (any, error) {
	p, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	name, ok := schemaFiles[p.Host+p.Path]
	if !ok {
		return nil, fmt.Errorf("csaftest: no local copy of %s", u)
	}
	b, err := files.ReadFile(path.Join("testdata/csaf-2.1", name))
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// ecmaRegexp is a pattern compiled as ECMA-262, the dialect JSON Schema
// prescribes: the schema's extension patterns use lookahead, which Go's
// regexp package lacks.
type ecmaRegexp regexp2.Regexp

// MatchString reports whether s contains a match.
func (re *ecmaRegexp) MatchString(s string) bool {
	ok, err := (*regexp2.Regexp)(re).MatchString(s)
	return err == nil && ok
}

// String returns the pattern.
func (re *ecmaRegexp) String() string { return (*regexp2.Regexp)(re).String() }

func compileECMA(s string) (jsonschema.Regexp, error) {
	re, err := regexp2.Compile(s, regexp2.ECMAScript)
	if err != nil {
		return nil, err
	}
	return (*ecmaRegexp)(re), nil
}

var (
	once      sync.Once
	schema    *jsonschema.Schema
	schemaErr error
)

// Schema returns the compiled CSAF 2.1 schema. Format assertions
// (date-time, uri, uuid) are on, as the schema's own metaschema asks.
func Schema() (*jsonschema.Schema, error) {
	once.Do(func() {
		c := jsonschema.NewCompiler()
		c.UseLoader(loader{})
		c.UseRegexpEngine(compileECMA)
		c.AssertFormat()
		schema, schemaErr = c.Compile(SchemaURL)
	})
	return schema, schemaErr
}

// Validate checks one JSON document against the CSAF 2.1 schema. It
// returns nil for a valid document and otherwise an error that lists every
// violation with its place in the document.
func Validate(doc []byte) error {
	sch, err := Schema()
	if err != nil {
		return fmt.Errorf("csaftest: compile the schema: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("csaftest: not JSON: %w", err)
	}
	return sch.Validate(v)
}

// Example returns one of the example advisories shipped with the schema
// (testdata/csaf-2.1/examples), by file name.
func Example(name string) ([]byte, error) {
	return fs.ReadFile(files, path.Join("testdata/csaf-2.1/examples", name))
}
