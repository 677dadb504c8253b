// Package authz decides which roles may call which gRPC method: one table
// keyed by full method name (model: SPIRE's authpolicy). Per-item checks
// (product ownership, audiences) are made by the services.
package authz

import (
	"errors"
	"fmt"
	"slices"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

const (
	vendor    = members.RoleVendor
	platform  = members.RolePlatform
	cert      = members.RoleCERT
	responder = members.RoleResponder
	operator  = members.RoleOperator
)

var (
	everyone = []string{vendor, platform, cert, responder, operator}
	members_ = []string{vendor, platform, responder}
	writers  = []string{vendor, platform}
	readers  = []string{vendor, platform, cert, responder, operator}
)

// Table maps each full gRPC method name to the roles allowed to call it.
// A method missing from the table is denied to everyone.
var Table = map[string][]string{
	phxv1.IdentityService_WhoAmI_FullMethodName: everyone,

	phxv1.HealthService_PublishSignals_FullMethodName: writers,

	phxv1.RolloutService_AnnounceRollout_FullMethodName: writers,
	phxv1.RolloutService_UpdateRollout_FullMethodName:   writers,
	phxv1.RolloutService_GetRollout_FullMethodName:      readers,
	phxv1.RolloutService_ListRollouts_FullMethodName:    readers,

	phxv1.IncidentService_ReportIncident_FullMethodName: writers,
	phxv1.IncidentService_UpdateIncident_FullMethodName: writers,
	phxv1.IncidentService_AddPost_FullMethodName:        members_,
	phxv1.IncidentService_Respond_FullMethodName:        members_,
	phxv1.IncidentService_Acknowledge_FullMethodName:    members_,
	phxv1.IncidentService_GetIncident_FullMethodName:    readers,
	phxv1.IncidentService_ListIncidents_FullMethodName:  readers,
	phxv1.IncidentService_ListReceipts_FullMethodName:   writers,

	phxv1.FeedService_Subscribe_FullMethodName: readers,

	phxv1.TokenService_IssueToken_FullMethodName:  {operator},
	phxv1.TokenService_RevokeToken_FullMethodName: {operator},

	phxv1.AuditService_TailAudit_FullMethodName:   {operator},
	phxv1.AuditService_VerifyAudit_FullMethodName: {operator},
}

// Scope classes of methods: what a bearer token must carry to call one
// (certificates are limited by their role alone). Tokens carry only read
// and respond; write and admin methods need a certificate.
const (
	ScopeRead    = "read"
	ScopeRespond = "respond"
	ScopeWrite   = "write"
	ScopeAdmin   = "admin"
)

// Scopes maps each method of Table to its scope class.
var Scopes = map[string]string{
	phxv1.IdentityService_WhoAmI_FullMethodName: ScopeRead,

	phxv1.HealthService_PublishSignals_FullMethodName: ScopeWrite,

	phxv1.RolloutService_AnnounceRollout_FullMethodName: ScopeWrite,
	phxv1.RolloutService_UpdateRollout_FullMethodName:   ScopeWrite,
	phxv1.RolloutService_GetRollout_FullMethodName:      ScopeRead,
	phxv1.RolloutService_ListRollouts_FullMethodName:    ScopeRead,

	phxv1.IncidentService_ReportIncident_FullMethodName: ScopeWrite,
	phxv1.IncidentService_UpdateIncident_FullMethodName: ScopeWrite,
	phxv1.IncidentService_AddPost_FullMethodName:        ScopeRespond,
	phxv1.IncidentService_Respond_FullMethodName:        ScopeRespond,
	phxv1.IncidentService_Acknowledge_FullMethodName:    ScopeRespond,
	phxv1.IncidentService_GetIncident_FullMethodName:    ScopeRead,
	phxv1.IncidentService_ListIncidents_FullMethodName:  ScopeRead,
	phxv1.IncidentService_ListReceipts_FullMethodName:   ScopeRead,

	phxv1.FeedService_Subscribe_FullMethodName: ScopeRead,

	phxv1.TokenService_IssueToken_FullMethodName:  ScopeAdmin,
	phxv1.TokenService_RevokeToken_FullMethodName: ScopeAdmin,

	phxv1.AuditService_TailAudit_FullMethodName:   ScopeAdmin,
	phxv1.AuditService_VerifyAudit_FullMethodName: ScopeAdmin,
}

// AuthorizeScopes checks a bearer token's scopes for fullMethod.
func AuthorizeScopes(fullMethod string, scopes []string) (Decision, error) {
	need, ok := Scopes[fullMethod]
	if !ok || !slices.Contains(scopes, need) {
		return Decision{Rule: fmt.Sprintf("%s:scope=%s", fullMethod, need)},
			fmt.Errorf("%w: a token with scopes %v may not call %s (needs %q)", ErrDenied, scopes, fullMethod, need)
	}
	return Decision{Allowed: true, Rule: fmt.Sprintf("%s:scope=%s", fullMethod, need)}, nil
}

// Public methods need no credentials at all.
var Public = map[string]bool{
	"/grpc.health.v1.Health/Check":                                   true,
	"/grpc.health.v1.Health/Watch":                                   true,
	"/grpc.health.v1.Health/List":                                    true,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
}

// ErrDenied: the role may not call the method.
var ErrDenied = errors.New("permission denied")

// Decision is the outcome of an authorization check, for the audit trail.
type Decision struct {
	Allowed bool
	Rule    string
}

// Authorize checks role against the table for fullMethod.
func Authorize(fullMethod, role string) (Decision, error) {
	roles, ok := Table[fullMethod]
	if !ok {
		return Decision{Rule: "no-rule"}, fmt.Errorf("%w: %s is not open to any role", ErrDenied, fullMethod)
	}
	if !slices.Contains(roles, role) {
		return Decision{Rule: fmt.Sprintf("%s:%v", fullMethod, roles)},
			fmt.Errorf("%w: role %q may not call %s (allowed: %v)", ErrDenied, role, fullMethod, roles)
	}
	return Decision{Allowed: true, Rule: fmt.Sprintf("%s:%s", fullMethod, role)}, nil
}
