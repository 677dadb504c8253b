package sdk

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// Code is the kind of an error returned by the hub. Its values are the
// numeric gRPC status codes, so Code(c) converts a google.golang.org/grpc/codes
// value, but callers never need to import gRPC to use it.
type Code uint32

// Codes, numerically equal to the gRPC status codes of the same name.
const (
	CodeOK                 Code = 0  // not an error
	CodeCanceled           Code = 1  // the caller canceled the call
	CodeUnknown            Code = 2  // an error without a more specific code
	CodeInvalidArgument    Code = 3  // a request field is invalid; see Error.Field
	CodeDeadlineExceeded   Code = 4  // the call's deadline passed
	CodeNotFound           Code = 5  // no such item, or not visible to the caller
	CodeAlreadyExists      Code = 6  // an item with that id exists
	CodePermissionDenied   Code = 7  // role, product ownership or audience forbids it
	CodeResourceExhausted  Code = 8  // a rate or size limit was hit
	CodeFailedPrecondition Code = 9  // privacy threshold not met, or stale revision
	CodeAborted            Code = 10 // the operation was aborted
	CodeOutOfRange         Code = 11 // e.g. a cursor older than the hub retains
	CodeUnimplemented      Code = 12 // the hub does not implement the call
	CodeInternal           Code = 13 // a bug in the hub
	CodeUnavailable        Code = 14 // the hub cannot be reached right now
	CodeDataLoss           Code = 15 // unrecoverable data loss
	CodeUnauthenticated    Code = 16 // no or bad credentials
)

var codeNames = map[Code]string{
	CodeOK:                 "ok",
	CodeCanceled:           "canceled",
	CodeUnknown:            "unknown",
	CodeInvalidArgument:    "invalid argument",
	CodeDeadlineExceeded:   "deadline exceeded",
	CodeNotFound:           "not found",
	CodeAlreadyExists:      "already exists",
	CodePermissionDenied:   "permission denied",
	CodeResourceExhausted:  "resource exhausted",
	CodeFailedPrecondition: "failed precondition",
	CodeAborted:            "aborted",
	CodeOutOfRange:         "out of range",
	CodeUnimplemented:      "unimplemented",
	CodeInternal:           "internal",
	CodeUnavailable:        "unavailable",
	CodeDataLoss:           "data loss",
	CodeUnauthenticated:    "unauthenticated",
}

// String returns the code's name in lower case words, e.g. "invalid argument".
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return "code " + itoa(uint64(c))
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

// Sentinel errors, one per code a caller is expected to handle. Every error
// returned by a Client method is an *Error, and errors.Is(err, ErrNotFound)
// (and so on) reports whether its code matches.
var (
	ErrCanceled           = errors.New(CodeCanceled.String())
	ErrInvalidArgument    = errors.New(CodeInvalidArgument.String())
	ErrDeadlineExceeded   = errors.New(CodeDeadlineExceeded.String())
	ErrNotFound           = errors.New(CodeNotFound.String())
	ErrAlreadyExists      = errors.New(CodeAlreadyExists.String())
	ErrPermissionDenied   = errors.New(CodePermissionDenied.String())
	ErrResourceExhausted  = errors.New(CodeResourceExhausted.String())
	ErrFailedPrecondition = errors.New(CodeFailedPrecondition.String())
	ErrOutOfRange         = errors.New(CodeOutOfRange.String())
	ErrUnimplemented      = errors.New(CodeUnimplemented.String())
	ErrInternal           = errors.New(CodeInternal.String())
	ErrUnavailable        = errors.New(CodeUnavailable.String())
	ErrUnauthenticated    = errors.New(CodeUnauthenticated.String())
)

var sentinels = map[Code]error{
	CodeCanceled:           ErrCanceled,
	CodeInvalidArgument:    ErrInvalidArgument,
	CodeDeadlineExceeded:   ErrDeadlineExceeded,
	CodeNotFound:           ErrNotFound,
	CodeAlreadyExists:      ErrAlreadyExists,
	CodePermissionDenied:   ErrPermissionDenied,
	CodeResourceExhausted:  ErrResourceExhausted,
	CodeFailedPrecondition: ErrFailedPrecondition,
	CodeOutOfRange:         ErrOutOfRange,
	CodeUnimplemented:      ErrUnimplemented,
	CodeInternal:           ErrInternal,
	CodeUnavailable:        ErrUnavailable,
	CodeUnauthenticated:    ErrUnauthenticated,
}

// FieldViolation names one invalid field of a request and why.
type FieldViolation struct {
	// Field is the path of the field, e.g. "signals[3].devices_exposed".
	Field string
	// Description says what is wrong with it.
	Description string
}

// Error is the error type of every Client method.
type Error struct {
	// Code says what kind of error it is.
	Code Code
	// Message is the hub's (or the transport's) description.
	Message string
	// Field is the path of the offending request field, when the hub named
	// one, e.g. "signals[3].devices_exposed" or "product".
	Field string
	// Violations lists every field the hub named, Field being the first.
	Violations []FieldViolation

	st *status.Status
	// kind is a further sentinel the error matches besides its code's
	// (ErrQueued, ErrOutboxFull).
	kind error
}

// Error formats the error as "<code>: <field>: <message>", e.g.
// "invalid argument: signals[3].devices_exposed: must be ≤ devices_active".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Code.String())
	msg := e.Message
	if e.Field != "" && !strings.HasPrefix(msg, e.Field) {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	if msg != "" {
		b.WriteString(": ")
		b.WriteString(msg)
	}
	return b.String()
}

// Is reports whether target is the sentinel error of e's code (for example
// ErrNotFound), or, for CodeCanceled and CodeDeadlineExceeded, the matching
// context error. Errors of the outbox also match ErrQueued or ErrOutboxFull.
func (e *Error) Is(target error) bool {
	if s, ok := sentinels[e.Code]; ok && s == target {
		return true
	}
	if e.kind != nil && e.kind == target {
		return true
	}
	switch e.Code {
	case CodeCanceled:
		return target == context.Canceled
	case CodeDeadlineExceeded:
		return target == context.DeadlineExceeded
	}
	return false
}

// GRPCStatus returns the error as a gRPC status, for callers that use gRPC
// themselves (status.FromError understands it).
func (e *Error) GRPCStatus() *status.Status {
	if e.st != nil {
		return e.st
	}
	return status.New(codes.Code(e.Code), e.Message)
}

// ItemErr converts the error of one item of a PublishSignals response into
// an *Error, or returns nil when ie is nil.
func ItemErr(ie *phxv1.ItemError) error {
	if ie == nil {
		return nil
	}
	e := &Error{Code: Code(ie.GetCode()), Message: ie.GetMessage(), Field: ie.GetField()}
	if e.Field != "" {
		e.Violations = []FieldViolation{{Field: e.Field, Description: e.Message}}
	}
	return e
}

// toError converts any error of a gRPC call or of the SDK's own waiting
// into an *Error. It returns nil for nil.
func toError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		return fromStatus(gs.GRPCStatus())
	}
	switch {
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeCanceled, Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeDeadlineExceeded, Message: err.Error()}
	}
	return &Error{Code: CodeUnknown, Message: err.Error()}
}

func fromStatus(st *status.Status) *Error {
	e := &Error{Code: Code(st.Code()), Message: st.Message(), st: st}
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			e.Violations = append(e.Violations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
		}
	}
	if len(e.Violations) > 0 {
		e.Field = e.Violations[0].Field
		if e.Message == "" {
			e.Message = e.Violations[0].Description
		}
	}
	return e
}
