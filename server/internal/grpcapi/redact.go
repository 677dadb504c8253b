package grpcapi

import (
	"fmt"
	"strings"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/scrub"
)

// scrubFields removes identifiers from the named free-text fields in place
// and describes what it removed, field names under prefix.
func scrubFields(prefix string, fields map[string]*string) []*phxv1.Redaction {
	var out []*phxv1.Redaction
	for _, f := range scrub.ScrubFields(fields) {
		out = append(out, &phxv1.Redaction{Field: prefix + f.Field, Kind: string(f.Kind), Start: uint32(f.Start), End: uint32(f.End)})
	}
	return out
}

// scrubIncident removes identifiers from an incident's free text: title,
// impact and remediations' details and links. A link keeps working: only
// its user and password are removed, then the rest is scrubbed.
func scrubIncident(in *phxv1.Incident) []*phxv1.Redaction {
	fields := map[string]*string{"title": &in.Title, "impact": &in.Impact}
	var out []*phxv1.Redaction
	for i, r := range in.Remediations {
		fields[fmt.Sprintf("remediations[%d].details", i)] = &r.Details
		field := fmt.Sprintf("remediations[%d].url", i)
		if red := stripUserinfo(&r.Url); red != nil {
			red.Field = "incident." + field
			out = append(out, red)
		} else {
			fields[field] = &r.Url
		}
	}
	return append(out, scrubFields("incident.", fields)...)
}

// stripUserinfo removes "user:password@" from a URL in place and describes
// the removal; nil if it had none.
func stripUserinfo(raw *string) *phxv1.Redaction {
	scheme, rest, ok := strings.Cut(*raw, "://")
	if !ok {
		return nil
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return nil
	}
	start := len(scheme) + len("://")
	*raw = scheme + "://" + rest[at+1:]
	return &phxv1.Redaction{Kind: string(scrub.URLCredentials), Start: uint32(start), End: uint32(start + at + 1)}
}

// scrubRollout removes identifiers from a rollout's free text, its reason.
func scrubRollout(r *phxv1.Rollout) []*phxv1.Redaction {
	return scrubFields("rollout.", map[string]*string{"reason": &r.Reason})
}
