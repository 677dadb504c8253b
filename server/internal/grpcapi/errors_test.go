package grpcapi

import (
	"context"
	"errors"
	"fmt"
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
	code, field, msg := itemError(invalid("top_failures[2].devices", "must be at least 1"))
	if code != codes.InvalidArgument || field != "top_failures[2].devices" || msg != "must be at least 1" {
		t.Fatalf("itemError = %s %q %q", code, field, msg)
	}
	code, field, msg = itemError(fmt.Errorf("publish: %w", context.DeadlineExceeded))
	if code != codes.DeadlineExceeded || field != "" || msg == "" {
		t.Fatalf("itemError = %s %q %q", code, field, msg)
	}
}
