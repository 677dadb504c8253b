package sdk

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

func withViolations(t *testing.T, c codes.Code, msg string, fields ...string) error {
	t.Helper()
	st := status.New(c, msg)
	br := &errdetails.BadRequest{}
	for i := 0; i+1 < len(fields); i += 2 {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: fields[i], Description: fields[i+1]})
	}
	st, err := st.WithDetails(br)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestToError(t *testing.T) {
	tests := []struct {
		name      string
		in        func(t *testing.T) error
		code      Code
		field     string
		text      string
		is        error
		notIs     error
		nViolated int
	}{
		{
			name: "invalid argument with field violation",
			in: func(t *testing.T) error {
				return withViolations(t, codes.InvalidArgument, "must be ≤ devices_active",
					"signals[3].devices_exposed", "must be ≤ devices_active")
			},
			code:      CodeInvalidArgument,
			field:     "signals[3].devices_exposed",
			text:      "invalid argument: signals[3].devices_exposed: must be ≤ devices_active",
			is:        ErrInvalidArgument,
			notIs:     ErrNotFound,
			nViolated: 1,
		},
		{
			name: "message already names the field",
			in: func(t *testing.T) error {
				return withViolations(t, codes.PermissionDenied, "product: contoso is not the owner of fabrikam-edr",
					"product", "contoso is not the owner of fabrikam-edr")
			},
			code:      CodePermissionDenied,
			field:     "product",
			text:      "permission denied: product: contoso is not the owner of fabrikam-edr",
			is:        ErrPermissionDenied,
			notIs:     ErrUnauthenticated,
			nViolated: 1,
		},
		{
			name: "several violations, first wins",
			in: func(t *testing.T) error {
				return withViolations(t, codes.FailedPrecondition, "stale revision",
					"expected_revision", "stale revision", "other", "x")
			},
			code:      CodeFailedPrecondition,
			field:     "expected_revision",
			text:      "failed precondition: expected_revision: stale revision",
			is:        ErrFailedPrecondition,
			nViolated: 2,
		},
		{
			name: "resource exhausted without message",
			in: func(t *testing.T) error {
				return withViolations(t, codes.ResourceExhausted, "", "signals", "at most 1000 items")
			},
			code:      CodeResourceExhausted,
			field:     "signals",
			text:      "resource exhausted: signals: at most 1000 items",
			is:        ErrResourceExhausted,
			nViolated: 1,
		},
		{
			name:  "plain status",
			in:    func(*testing.T) error { return status.Error(codes.NotFound, "rollout r1 not found") },
			code:  CodeNotFound,
			text:  "not found: rollout r1 not found",
			is:    ErrNotFound,
			notIs: ErrAlreadyExists,
		},
		{
			name: "wrapped status",
			in: func(*testing.T) error {
				return fmt.Errorf("call: %w", status.Error(codes.OutOfRange, "cursor expired"))
			},
			code: CodeOutOfRange,
			text: "out of range: cursor expired",
			is:   ErrOutOfRange,
		},
		{
			name: "unavailable",
			in:   func(*testing.T) error { return status.Error(codes.Unavailable, "connection refused") },
			code: CodeUnavailable,
			text: "unavailable: connection refused",
			is:   ErrUnavailable,
		},
		{
			name: "canceled status matches context.Canceled",
			in:   func(*testing.T) error { return status.Error(codes.Canceled, "context canceled") },
			code: CodeCanceled,
			is:   context.Canceled,
		},
		{
			name: "context deadline",
			in:   func(*testing.T) error { return context.DeadlineExceeded },
			code: CodeDeadlineExceeded,
			is:   ErrDeadlineExceeded,
		},
		{
			name:  "context canceled",
			in:    func(*testing.T) error { return fmt.Errorf("waiting: %w", context.Canceled) },
			code:  CodeCanceled,
			is:    ErrCanceled,
			notIs: context.DeadlineExceeded,
		},
		{
			name: "unimplemented",
			in:   func(*testing.T) error { return status.Error(codes.Unimplemented, "method AddPost not implemented") },
			code: CodeUnimplemented,
			is:   ErrUnimplemented,
		},
		{
			name: "unauthenticated",
			in:   func(*testing.T) error { return status.Error(codes.Unauthenticated, "no client certificate") },
			code: CodeUnauthenticated,
			is:   ErrUnauthenticated,
		},
		{
			name:  "not a status",
			in:    func(*testing.T) error { return errors.New("boom") },
			code:  CodeUnknown,
			text:  "unknown: boom",
			notIs: ErrInternal,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := toError(tt.in(t))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("toError returned %T, want *Error", err)
			}
			if e.Code != tt.code {
				t.Errorf("code = %v, want %v", e.Code, tt.code)
			}
			if e.Field != tt.field {
				t.Errorf("field = %q, want %q", e.Field, tt.field)
			}
			if len(e.Violations) != tt.nViolated {
				t.Errorf("violations = %d, want %d", len(e.Violations), tt.nViolated)
			}
			if tt.text != "" && e.Error() != tt.text {
				t.Errorf("Error() = %q, want %q", e.Error(), tt.text)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if tt.notIs != nil && errors.Is(err, tt.notIs) {
				t.Errorf("errors.Is(%v, %v) = true", err, tt.notIs)
			}
			if got := status.Code(err); got != codes.Code(tt.code) {
				t.Errorf("status.Code = %v, want %v", got, tt.code)
			}
			if toError(err) != err {
				t.Error("toError of an *Error is not the identity")
			}
		})
	}
	if toError(nil) != nil {
		t.Error("toError(nil) != nil")
	}
}

func TestSentinelsDistinct(t *testing.T) {
	for code, s := range sentinels {
		err := &Error{Code: code, Message: "m"}
		for other, o := range sentinels {
			if got := errors.Is(err, o); got != (other == code) {
				t.Errorf("errors.Is(%v, sentinel of %v) = %v", code, other, got)
			}
		}
		if s.Error() != code.String() {
			t.Errorf("sentinel of %v prints %q", code, s.Error())
		}
		if codes.Code(code).String() == "" {
			t.Errorf("code %d unknown to gRPC", code)
		}
	}
	if len(sentinels) != 13 {
		t.Errorf("%d sentinels, want 13", len(sentinels))
	}
}

func TestCodeString(t *testing.T) {
	for c := CodeOK; c <= CodeUnauthenticated; c++ {
		if c.String() == "" || c.String()[0] == 'c' && c != CodeCanceled {
			t.Errorf("Code(%d).String() = %q", c, c.String())
		}
	}
	if got := Code(99).String(); got != "code 99" {
		t.Errorf("Code(99) = %q", got)
	}
}

func TestItemErr(t *testing.T) {
	if ItemErr(nil) != nil {
		t.Fatal("ItemErr(nil) != nil")
	}
	err := ItemErr(&phxv1.ItemError{Code: int32(codes.InvalidArgument), Field: "devices_exposed", Message: "must be ≤ devices_active"})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("errors.Is(%v, ErrInvalidArgument) = false", err)
	}
	if got, want := err.Error(), "invalid argument: devices_exposed: must be ≤ devices_active"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var e *Error
	if !errors.As(err, &e) || e.Field != "devices_exposed" {
		t.Errorf("field: %+v", e)
	}
	err = ItemErr(&phxv1.ItemError{Code: int32(codes.FailedPrecondition), Message: "fewer than 50 exposed devices"})
	if !errors.Is(err, ErrFailedPrecondition) || err.Error() != "failed precondition: fewer than 50 exposed devices" {
		t.Errorf("got %v", err)
	}
}
