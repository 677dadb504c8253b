package authz_test

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/phx-exchange/phx/internal/members"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/authz"
)

// registryMethods lists every method of every phx.v1 service from the
// protobuf registry: a service or method added to the contract shows up here
// without anyone listing it.
func registryMethods(t *testing.T) []string {
	t.Helper()
	var out []string
	protoregistry.GlobalFiles.RangeFilesByPackage("phx.v1", func(fd protoreflect.FileDescriptor) bool {
		svcs := fd.Services()
		for i := range svcs.Len() {
			sd := svcs.Get(i)
			ms := sd.Methods()
			for j := range ms.Len() {
				out = append(out, fmt.Sprintf("/%s/%s", sd.FullName(), ms.Get(j).Name()))
			}
		}
		return true
	})
	if len(out) == 0 {
		t.Fatal("no phx.v1 services in the protobuf registry")
	}
	sort.Strings(out)
	return out
}

// descMethods lists the methods of the generated service descriptors the hub
// registers.
func descMethods() []string {
	var out []string
	for _, sd := range []grpc.ServiceDesc{
		phxv1.IdentityService_ServiceDesc, phxv1.HealthService_ServiceDesc, phxv1.RolloutService_ServiceDesc,
		phxv1.IncidentService_ServiceDesc, phxv1.FeedService_ServiceDesc, phxv1.TokenService_ServiceDesc,
		phxv1.AuditService_ServiceDesc,
	} {
		for _, m := range sd.Methods {
			out = append(out, "/"+sd.ServiceName+"/"+m.MethodName)
		}
		for _, s := range sd.Streams {
			out = append(out, "/"+sd.ServiceName+"/"+s.StreamName)
		}
	}
	sort.Strings(out)
	return out
}

// reads are the methods that change nothing.
var reads = regexp.MustCompile(`/(WhoAmI|Get[A-Za-z]*|List[A-Za-z]*|Subscribe|TailAudit|VerifyAudit)$`)

func TestTableCoversEveryMethod(t *testing.T) {
	methods := registryMethods(t)
	if d := descMethods(); !slices.Equal(methods, d) {
		t.Fatalf("registry methods %v\nservice descriptors %v", methods, d)
	}
	for _, m := range methods {
		roles, ok := authz.Table[m]
		if !ok {
			t.Errorf("%s has no rule: it is denied to everyone", m)
			continue
		}
		if len(roles) == 0 {
			t.Errorf("%s is open to no role", m)
		}
		for _, r := range roles {
			if !slices.Contains(members.Roles, r) {
				t.Errorf("%s: %q is not a role", m, r)
			}
		}
		if authz.Public[m] {
			t.Errorf("%s is public: phx.v1 methods need a caller", m)
		}
	}
	for m := range authz.Table {
		if !slices.Contains(methods, m) {
			t.Errorf("the table has a rule for %s, which is not a phx.v1 method", m)
		}
	}
}

func TestEveryRoleEveryMethod(t *testing.T) {
	methods := registryMethods(t)
	for _, role := range append(slices.Clone(members.Roles), "", "admin") {
		for _, m := range methods {
			d, err := authz.Authorize(m, role)
			want := slices.Contains(authz.Table[m], role)
			if d.Allowed != want || (err == nil) != want {
				t.Errorf("Authorize(%s, %q) = %v, %v; want allowed %v", m, role, d, err, want)
			}
			if err != nil && !errors.Is(err, authz.ErrDenied) {
				t.Errorf("Authorize(%s, %q): %v is not ErrDenied", m, role, err)
			}
			if d.Rule == "" {
				t.Errorf("Authorize(%s, %q): no rule recorded for the audit trail", m, role)
			}
		}
	}
	if d, err := authz.Authorize("/phx.v1.Nope/Nope", members.RoleOperator); d.Allowed || !errors.Is(err, authz.ErrDenied) {
		t.Fatalf("unknown method: %v %v", d, err)
	}
}

func allowed(t *testing.T, role string) []string {
	t.Helper()
	var out []string
	for _, m := range registryMethods(t) {
		if d, _ := authz.Authorize(m, role); d.Allowed {
			out = append(out, m)
		}
	}
	return out
}

func TestCERTCallsNoWriteMethod(t *testing.T) {
	got := allowed(t, members.RoleCERT)
	for _, m := range got {
		if !reads.MatchString(m) {
			t.Errorf("the cert role may call %s, which writes", m)
		}
	}
	// It does read the feed and the shared state.
	for _, m := range []string{phxv1.FeedService_Subscribe_FullMethodName, phxv1.IdentityService_WhoAmI_FullMethodName,
		phxv1.RolloutService_GetRollout_FullMethodName, phxv1.IncidentService_ListIncidents_FullMethodName} {
		if !slices.Contains(got, m) {
			t.Errorf("the cert role may not call %s", m)
		}
	}
}

func TestRoleBoundaries(t *testing.T) {
	writes := func(role string) []string {
		var out []string
		for _, m := range allowed(t, role) {
			if !reads.MatchString(m) {
				out = append(out, m)
			}
		}
		return out
	}
	// The operator administers tokens and publishes nothing.
	if got, want := writes(members.RoleOperator), []string{phxv1.TokenService_IssueToken_FullMethodName, phxv1.TokenService_RevokeToken_FullMethodName}; !slices.Equal(got, want) {
		t.Errorf("operator writes %v, want %v", got, want)
	}
	// Nobody else touches tokens.
	for _, role := range members.Roles {
		if role == members.RoleOperator {
			continue
		}
		for _, m := range []string{phxv1.TokenService_IssueToken_FullMethodName, phxv1.TokenService_RevokeToken_FullMethodName} {
			if d, _ := authz.Authorize(m, role); d.Allowed {
				t.Errorf("%s may call %s", role, m)
			}
		}
	}
	// Only the operator reads the audit log.
	for _, role := range members.Roles {
		for _, m := range []string{phxv1.AuditService_TailAudit_FullMethodName, phxv1.AuditService_VerifyAudit_FullMethodName} {
			if d, _ := authz.Authorize(m, role); d.Allowed != (role == members.RoleOperator) {
				t.Errorf("Authorize(%s, %s) = %v", m, role, d.Allowed)
			}
		}
	}
	// Vendors and the platform publish; a responder does not publish
	// signals, rollouts or incidents.
	for _, m := range []string{phxv1.HealthService_PublishSignals_FullMethodName, phxv1.RolloutService_AnnounceRollout_FullMethodName,
		phxv1.RolloutService_UpdateRollout_FullMethodName, phxv1.IncidentService_ReportIncident_FullMethodName, phxv1.IncidentService_UpdateIncident_FullMethodName} {
		for _, role := range members.Roles {
			want := role == members.RoleVendor || role == members.RolePlatform
			if d, _ := authz.Authorize(m, role); d.Allowed != want {
				t.Errorf("Authorize(%s, %s) = %v, want %v", m, role, d.Allowed, want)
			}
		}
	}
	// Every role may ask who it is.
	for _, role := range members.Roles {
		if d, _ := authz.Authorize(phxv1.IdentityService_WhoAmI_FullMethodName, role); !d.Allowed {
			t.Errorf("%s may not call WhoAmI", role)
		}
	}
}

func TestPublicMethods(t *testing.T) {
	for m := range authz.Public {
		if !regexp.MustCompile(`^/grpc\.(health\.v1\.Health|reflection\.v1(alpha)?\.ServerReflection)/`).MatchString(m) {
			t.Errorf("%s is public but is not health or reflection", m)
		}
	}
}

func TestScopesCoverEveryMethod(t *testing.T) {
	for _, m := range registryMethods(t) {
		sc, ok := authz.Scopes[m]
		if !ok {
			t.Errorf("%s has no scope class", m)
			continue
		}
		operatorOnly := slices.Equal(authz.Table[m], []string{members.RoleOperator})
		if operatorOnly != (sc == authz.ScopeAdmin) {
			t.Errorf("%s: scope class %q, but the operator's methods (and only they) are %q", m, sc, authz.ScopeAdmin)
		}
		if !operatorOnly && reads.MatchString(m) != (sc == authz.ScopeRead) {
			t.Errorf("%s: scope class %q, but reads (and only reads) are %q", m, sc, authz.ScopeRead)
		}
	}
	for m := range authz.Scopes {
		if _, ok := authz.Table[m]; !ok {
			t.Errorf("scope class for %s, which has no rule", m)
		}
	}
}

func TestTokenScopes(t *testing.T) {
	tokenScopes := [][]string{nil, {authz.ScopeRead}, {authz.ScopeRead, authz.ScopeRespond}}
	for _, scopes := range tokenScopes {
		for _, m := range registryMethods(t) {
			d, err := authz.AuthorizeScopes(m, scopes)
			want := slices.Contains(scopes, authz.Scopes[m])
			if d.Allowed != want || (err == nil) != want || d.Rule == "" {
				t.Errorf("AuthorizeScopes(%s, %v) = %v, %v; want allowed %v", m, scopes, d, err, want)
			}
			if want && (!reads.MatchString(m) && authz.Scopes[m] != authz.ScopeRespond || authz.Scopes[m] == authz.ScopeAdmin) {
				t.Errorf("a token with %v may call %s, which writes", scopes, m)
			}
		}
	}
}
