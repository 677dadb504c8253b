package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/authz"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/policy"
)

// fieldError is a refusal tied to one field of the request.
type fieldError struct {
	code  codes.Code
	field string
	msg   string
	// rule names a hub setting that refused the request, e.g. "k_devices=50".
	rule string
}

func (e *fieldError) Error() string {
	if e.field == "" {
		return e.msg
	}
	return e.field + ": " + e.msg
}

func invalid(field, format string, args ...any) *fieldError {
	return &fieldError{code: codes.InvalidArgument, field: field, msg: fmt.Sprintf(format, args...)}
}

func denied(field, format string, args ...any) *fieldError {
	return &fieldError{code: codes.PermissionDenied, field: field, msg: fmt.Sprintf(format, args...)}
}

func precondition(field, format string, args ...any) *fieldError {
	return &fieldError{code: codes.FailedPrecondition, field: field, msg: fmt.Sprintf(format, args...)}
}

// cohort refuses a count under a minimum-cohort threshold.
func cohort(field, setting string, got, min uint32, what string) *fieldError {
	return &fieldError{code: codes.FailedPrecondition, field: field, rule: fmt.Sprintf("%s=%d", setting, min),
		msg: fmt.Sprintf("%d %s is under this hub's minimum cohort of %d (%s); roll the cell up to a wider region, window or OS version", got, what, min, setting)}
}

func exhausted(field, format string, args ...any) *fieldError {
	return &fieldError{code: codes.ResourceExhausted, field: field, msg: fmt.Sprintf(format, args...)}
}

// prefix returns a copy of err (if it is a fieldError) with its field under p.
func prefix(p string, err error) error {
	var fe *fieldError
	if errors.As(err, &fe) {
		f := p
		if fe.field != "" {
			f = p + "." + fe.field
		}
		return &fieldError{code: fe.code, field: f, msg: fe.msg, rule: fe.rule}
	}
	return err
}

var (
	errNotFound = errors.New("not found")
	errExists   = errors.New("already exists")
)

// toStatus turns a domain error into a gRPC status. It is the only place
// where errors become status codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var fe *fieldError
	if errors.As(err, &fe) {
		st := status.New(fe.code, fe.Error())
		if fe.field != "" {
			if d, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: fe.field, Description: fe.msg}}}); derr == nil {
				st = d
			}
		}
		if fe.rule != "" {
			if d, derr := st.WithDetails(&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{Type: "MIN_COHORT", Subject: fe.rule, Description: fe.msg}}}); derr == nil {
				st = d
			}
		}
		return st.Err()
	}
	var rl *errRateLimited
	if errors.As(err, &rl) {
		st := status.New(codes.ResourceExhausted, rl.Error())
		details := []protoadapt.MessageV1{&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject: "org:" + rl.org, Description: rl.Error(),
		}}}}
		if rl.retry > 0 {
			details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(rl.retry)})
		}
		if d, derr := st.WithDetails(details...); derr == nil {
			st = d
		}
		return st.Err()
	}
	var slow *errTooSlow
	if errors.As(err, &slow) {
		st := status.New(codes.Aborted, slow.Error())
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: "SUBSCRIBER_TOO_SLOW", Domain: "phx", Metadata: map[string]string{"cursor": slow.cursor}}); derr == nil {
			st = d
		}
		return st.Err()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, authn.ErrUnauthenticated):
		// The code says "unauthenticated" already.
		return status.Error(codes.Unauthenticated, strings.TrimPrefix(err.Error(), authn.ErrUnauthenticated.Error()+": "))
	case errors.Is(err, authn.ErrNotMember), errors.Is(err, authz.ErrDenied), errors.Is(err, policy.ErrWidened):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, errNotFound), errors.Is(err, bus.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, bus.ErrConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, bus.ErrOutOfRange):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, bus.ErrBadCursor):
		return toStatus(invalid("cursor", "%v", err))
	case errors.Is(err, errShuttingDown), errors.Is(err, bus.ErrDuplicateInProcess), errors.Is(err, errContended):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Unavailable, "hub storage unavailable: "+err.Error())
}

var errShuttingDown = errors.New("hub is shutting down; reconnect to resume")

// itemError converts a per-item error of a batch.
func itemError(err error) *phxv1.ItemError {
	var fe *fieldError
	if errors.As(err, &fe) {
		return &phxv1.ItemError{Code: int32(fe.code), Field: fe.field, Message: fe.msg, Rule: fe.rule}
	}
	st, _ := status.FromError(toStatus(err))
	return &phxv1.ItemError{Code: int32(st.Code()), Message: st.Message()}
}
