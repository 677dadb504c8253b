package sdk

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestResumable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "hub is shutting down"), true},
		{status.Error(codes.Unavailable, "connection reset"), true},
		{io.EOF, true},
		{fmt.Errorf("recv: %w", io.EOF), true},
		{status.Error(codes.Canceled, "canceled by the hub"), true},
		{status.Error(codes.Aborted, "aborted"), true},
		{status.Error(codes.OutOfRange, "cursor older than retention"), false},
		{status.Error(codes.PermissionDenied, "no"), false},
		{status.Error(codes.InvalidArgument, "bad cursor"), false},
		{status.Error(codes.Unauthenticated, "who"), false},
		{status.Error(codes.Internal, "bug"), false},
	}
	s := &Subscription{ctx: context.Background()}
	for _, tt := range tests {
		if got := s.resumable(tt.err); got != tt.want {
			t.Errorf("resumable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	// A stalled stream (no heartbeat in time) is resumed whatever the error.
	s.stalled = new(atomic.Bool)
	s.stalled.Store(true)
	if !s.resumable(status.Error(codes.Internal, "x")) {
		t.Error("stalled stream not resumed")
	}
	// Once the subscription's own context ends, nothing is resumed.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s = &Subscription{ctx: ctx}
	if s.resumable(status.Error(codes.Unavailable, "x")) {
		t.Error("resumed after the context ended")
	}
}
