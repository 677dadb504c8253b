package csaf

import (
	"regexp"
	"slices"
	"strings"
)

// versionStep is the branch that narrows a product to some of its
// versions.
type versionStep struct {
	category string // product_version or product_version_range
	name     string // the branch name: a version, or a range in vers
	text     string // how the product's full name shows it
}

// constraint is one comparator and version of a range, e.g. ">=7.11".
var constraint = regexp.MustCompile(`^(>=|<=|=|>|<)?([0-9A-Za-z][0-9A-Za-z.+_~-]*)$`)

// isOperator reports whether s is a comparator on its own, as in ">= 7.11".
func isOperator(s string) bool {
	switch s {
	case ">=", "<=", "=", ">", "<":
		return true
	}
	return false
}

// versionSteps turns an incident's version_range into branches.
//
// A list of plain versions ("7.15.18" or "7.15.18, 7.15.19") becomes one
// product_version branch each: CSAF prefers enumerated versions. "*" is
// every version, "vers:all/*". Comparators (">=7.11 <7.16": space or comma
// separated, all of them must hold) become one product_version_range in
// canonical vers, "vers:generic/>=7.11|<7.16", constraints sorted by
// version. Anything else (e.g. "7.*") is kept as it was written.
func versionSteps(r string) []versionStep {
	r = strings.TrimSpace(r)
	switch r {
	case "":
		return nil
	case "*":
		return []versionStep{{"product_version_range", "vers:all/*", "all versions"}}
	}
	var tokens []string
	for _, f := range strings.Fields(strings.ReplaceAll(r, ",", " ")) {
		if n := len(tokens); n > 0 && isOperator(tokens[n-1]) {
			tokens[n-1] += f
			continue
		}
		tokens = append(tokens, f)
	}
	type cons struct{ op, version string }
	var cs []cons
	plain := true
	for _, t := range tokens {
		m := constraint.FindStringSubmatch(t)
		if m == nil {
			return []versionStep{{"product_version_range", r, r}}
		}
		op := m[1]
		if op == "=" {
			op = ""
		}
		plain = plain && op == ""
		c := cons{op, m[2]}
		if !slices.Contains(cs, c) {
			cs = append(cs, c)
		}
	}
	if plain {
		steps := make([]versionStep, len(cs))
		for i, c := range cs {
			steps[i] = versionStep{"product_version", c.version, c.version}
		}
		return steps
	}
	slices.SortStableFunc(cs, func(a, b cons) int { return compareVersions(a.version, b.version) })
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.op + c.version
	}
	return []versionStep{{"product_version_range", "vers:generic/" + strings.Join(parts, "|"), r}}
}

// compareVersions orders versions segment by segment (split at . - + _ ~):
// numeric segments by value, others as text; a version before one it is a
// prefix of.
func compareVersions(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(".-+_~", r) })
	}
	as, bs := split(a), split(b)
	for i := 0; i < len(as) && i < len(bs); i++ {
		if c := compareSegments(as[i], bs[i]); c != 0 {
			return c
		}
	}
	if c := len(as) - len(bs); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func compareSegments(a, b string) int {
	if isDigits(a) && isDigits(b) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			return len(a) - len(b)
		}
	}
	return strings.Compare(a, b)
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
