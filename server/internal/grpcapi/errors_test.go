package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/authz"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/policy"
)

func fieldOf(t *testing.T, err error) string {
	t.Helper()
	var fields []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				fields = append(fields, v.Field)
			}
		}
	}
	switch len(fields) {
	case 0:
		return ""
	case 1:
		return fields[0]
	}
	t.Fatalf("several field violations: %v", fields)
	return ""
}

func TestToStatus(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("context: %w", err) }
	cases := []struct {
		name  string
		err   error
		code  codes.Code
		field string
	}{
		{"nil", nil, codes.OK, ""},
		{"invalid field", invalid("devices_exposed", "too many"), codes.InvalidArgument, "devices_exposed"},
		{"prefixed field", prefix("rollout", invalid("audience.tlp", "x")), codes.InvalidArgument, "rollout.audience.tlp"},
		{"prefix of an unnamed field", prefix("incident", invalid("", "x")), codes.InvalidArgument, "incident"},
		{"denied field", denied("product", "not yours"), codes.PermissionDenied, "product"},
		{"precondition field", precondition("expected_revision", "stale"), codes.FailedPrecondition, "expected_revision"},
		{"exhausted field", exhausted("signals", "too many"), codes.ResourceExhausted, "signals"},
		{"a status passes through", status.Error(codes.Aborted, "x"), codes.Aborted, ""},
		{"canceled", wrap(context.Canceled), codes.Canceled, ""},
		{"deadline", wrap(context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{"unauthenticated", wrap(authn.ErrUnauthenticated), codes.Unauthenticated, ""},
		{"not a member", wrap(authn.ErrNotMember), codes.PermissionDenied, ""},
		{"role denied", wrap(authz.ErrDenied), codes.PermissionDenied, ""},
		{"widened", wrap(policy.ErrWidened), codes.PermissionDenied, ""},
		{"not found", wrap(errNotFound), codes.NotFound, ""},
		{"bus not found", wrap(bus.ErrNotFound), codes.NotFound, ""},
		{"exists", wrap(errExists), codes.AlreadyExists, ""},
		{"conflict", wrap(bus.ErrConflict), codes.FailedPrecondition, ""},
		{"out of range", wrap(bus.ErrOutOfRange), codes.OutOfRange, ""},
		{"bad cursor", wrap(bus.ErrBadCursor), codes.InvalidArgument, "cursor"},
		{"shutting down", errShuttingDown, codes.Unavailable, ""},
		{"write in progress", wrap(bus.ErrDuplicateInProcess), codes.Unavailable, ""},
		{"storage", errors.New("nats: timeout"), codes.Unavailable, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := toStatus(tc.err)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %s, want %s (%v)", got, tc.code, err)
			}
			if got := fieldOf(t, err); got != tc.field {
				t.Fatalf("field %q, want %q", got, tc.field)
			}
		})
	}
}

func TestItemError(t *testing.T) {
	e := itemError(invalid("top_failures[2].devices", "must be at least 1"))
	if codes.Code(e.Code) != codes.InvalidArgument || e.Field != "top_failures[2].devices" || e.Message != "must be at least 1" || e.Rule != "" {
		t.Fatalf("itemError = %v", e)
	}
	e = itemError(fmt.Errorf("publish: %w", context.DeadlineExceeded))
	if codes.Code(e.Code) != codes.DeadlineExceeded || e.Field != "" || e.Message == "" {
		t.Fatalf("itemError = %v", e)
	}
	e = itemError(cohort("devices_exposed", "k_devices", 49, 50, "exposed devices"))
	if codes.Code(e.Code) != codes.FailedPrecondition || e.Field != "devices_exposed" || e.Rule != "k_devices=50" || !strings.Contains(e.Message, "49") {
		t.Fatalf("itemError = %v", e)
	}
}

func TestCohortStatusDetail(t *testing.T) {
	st := status.Convert(toStatus(cohort("distinct_tenants", "k_tenants", 3, 5, "distinct tenants")))
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("code %s", st.Code())
	}
	var gotField, gotRule bool
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			gotField = len(d.FieldViolations) == 1 && d.FieldViolations[0].Field == "distinct_tenants"
		case *errdetails.PreconditionFailure:
			gotRule = len(d.Violations) == 1 && d.Violations[0].Type == "MIN_COHORT" && d.Violations[0].Subject == "k_tenants=5"
		}
	}
	if !gotField || !gotRule {
		t.Fatalf("details %v: want the field and the rule", st.Details())
	}
}
