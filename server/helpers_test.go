package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/servertest"
)

// waitFor bounds every wait of these tests: nothing is asserted on timing,
// but nothing may hang either.
const waitFor = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// dialTLS opens a client connection with an arbitrary TLS configuration.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// hubRoots is a pool holding the hub's CA, so clients verify the hub.
func hubRoots(t *testing.T, h *servertest.Hub) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(h.PKI.CACert())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate in", h.PKI.CACert())
	}
	return pool
}

// clients bundles the generated clients of one org.
type clients struct {
	cc       *grpc.ClientConn
	identity phxv1.IdentityServiceClient
	health   phxv1.HealthServiceClient
	rollouts phxv1.RolloutServiceClient
	incident phxv1.IncidentServiceClient
	feed     phxv1.FeedServiceClient
	token    phxv1.TokenServiceClient
}

func newClients(cc *grpc.ClientConn) *clients {
	return &clients{
		cc:       cc,
		identity: phxv1.NewIdentityServiceClient(cc),
		health:   phxv1.NewHealthServiceClient(cc),
		rollouts: phxv1.NewRolloutServiceClient(cc),
		incident: phxv1.NewIncidentServiceClient(cc),
		feed:     phxv1.NewFeedServiceClient(cc),
		token:    phxv1.NewTokenServiceClient(cc),
	}
}

// as dials the hub with org's dev certificate.
func as(t *testing.T, h *servertest.Hub, org string) *clients {
	t.Helper()
	return newClients(dial(t, h, org))
}

// wantStatus checks err's gRPC code and, when field is not empty, that the
// status carries exactly one BadRequest field violation for that field.
func wantStatus(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code {
		t.Fatalf("code = %s (%q), want %s", st.Code(), st.Message(), code)
	}
	if field == "" {
		return
	}
	var got []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				got = append(got, v.Field)
			}
		}
	}
	if len(got) != 1 || got[0] != field {
		t.Fatalf("field violations = %q (%q), want [%q]", got, st.Message(), field)
	}
}

// wantItemError checks one result of a PublishSignals batch.
func wantItemError(t *testing.T, r *phxv1.SignalResult, code codes.Code, field string) {
	t.Helper()
	if r.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED {
		t.Fatalf("item %d (%s): outcome %s, want REJECTED", r.Index, r.SignalId, r.Outcome)
	}
	if r.Error == nil {
		t.Fatalf("item %d: rejected without an error", r.Index)
	}
	if codes.Code(r.Error.Code) != code || r.Error.Field != field {
		t.Fatalf("item %d: error {code %s, field %q, %q}, want {code %s, field %q}",
			r.Index, codes.Code(r.Error.Code), r.Error.Field, r.Error.Message, code, field)
	}
	if r.Error.Message == "" {
		t.Fatalf("item %d: error without a message", r.Index)
	}
	if r.Cursor != "" {
		t.Fatalf("item %d: rejected item has cursor %q", r.Index, r.Cursor)
	}
}

var seq atomic.Int64

// uniq returns a new id with the given prefix, unique within the test binary.
func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

// cell returns a valid health cell of product with a fresh signal id.
func cell(product string) *phxv1.HealthSignal {
	s := signal(uniq("sig"))
	s.Product = product
	return s
}

// publish publishes cells and fails unless every one is accepted.
func publish(t *testing.T, c *clients, cells ...*phxv1.HealthSignal) []*phxv1.SignalResult {
	t.Helper()
	res, err := c.health.PublishSignals(testCtx(t), &phxv1.PublishSignalsRequest{Signals: cells})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Results {
		if r.Outcome != phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED {
			t.Fatalf("item %d (%s): %s %v", r.Index, r.SignalId, r.Outcome, r.Error)
		}
	}
	return res.Results
}

func green() *phxv1.Audience { return &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN} }

// feed is a live subscription.
type feed struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[phxv1.Envelope]
	cancel context.CancelFunc
	// last is the cursor of the last envelope received.
	last string
}

// subscribe opens a subscription and returns it without reading.
func subscribe(t *testing.T, c *clients, req *phxv1.SubscribeRequest) *feed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	st, err := c.feed.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return &feed{t: t, stream: st, cancel: cancel}
}

// open subscribes and reads the first heartbeat, which the hub sends at once.
func open(t *testing.T, c *clients, req *phxv1.SubscribeRequest) *feed {
	t.Helper()
	f := subscribe(t, c, req)
	env := f.recv()
	if env.Kind != phxv1.Kind_KIND_HEARTBEAT {
		t.Fatalf("first envelope is %s, want a heartbeat", env.Kind)
	}
	return f
}

func (f *feed) recv() *phxv1.Envelope {
	f.t.Helper()
	env, err := f.stream.Recv()
	if err != nil {
		f.t.Fatalf("recv: %v", err)
	}
	if env.Cursor == "" {
		f.t.Fatalf("envelope %s without a cursor", env.Kind)
	}
	f.last = env.Cursor
	return env
}

// next returns the next item, skipping heartbeats.
func (f *feed) next() *phxv1.Envelope {
	f.t.Helper()
	for {
		if env := f.recv(); env.Kind != phxv1.Kind_KIND_HEARTBEAT {
			return env
		}
	}
}

// items reads n items.
func (f *feed) items(n int) []*phxv1.Envelope {
	f.t.Helper()
	out := make([]*phxv1.Envelope, 0, n)
	for range n {
		out = append(out, f.next())
	}
	return out
}

// until reads items up to and including the one whose id(env) is stop.
func (f *feed) until(id func(*phxv1.Envelope) string, stop string) []*phxv1.Envelope {
	f.t.Helper()
	var out []*phxv1.Envelope
	for {
		env := f.next()
		out = append(out, env)
		if id(env) == stop {
			return out
		}
	}
}

// close ends the subscription.
func (f *feed) close() { f.cancel() }

// recvErr reads until the stream fails and returns the error.
func (f *feed) recvErr() error {
	for {
		if _, err := f.stream.Recv(); err != nil {
			return err
		}
	}
}

func signalID(env *phxv1.Envelope) string { return env.GetHealthSignal().GetSignalId() }

func signalIDs(envs []*phxv1.Envelope) []string {
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = signalID(e)
	}
	return out
}

func ids(cells []*phxv1.HealthSignal) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = c.SignalId
	}
	return out
}

func cells(product string, n int) []*phxv1.HealthSignal {
	out := make([]*phxv1.HealthSignal, n)
	for i := range out {
		out[i] = cell(product)
	}
	return out
}

func wantIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

func rollout(id, product string, aud *phxv1.Audience) *phxv1.Rollout {
	return &phxv1.Rollout{
		RolloutId: id, Product: product, ContentChannel: "channel-291", ContentVersion: "291.2", PreviousVersion: "291.1",
		CurrentRing: phxv1.Ring_RING_CANARY, PercentDeployed: 1,
		Schedule: []*phxv1.RolloutStage{{Ring: phxv1.Ring_RING_CANARY, TargetPercent: 5}, {Ring: phxv1.Ring_RING_BROAD, TargetPercent: 100}},
		Audience: aud,
	}
}

func incident(title, product string, sev phxv1.Severity, aud *phxv1.Audience) *phxv1.Incident {
	return &phxv1.Incident{
		Title: title, Severity: sev, Classification: phxv1.Classification_CLASSIFICATION_INCIDENT,
		Affected: []*phxv1.Affected{{Product: product, ContentChannel: "channel-291", ContentVersion: "291.2"}},
		Impact:   "machines fail to boot", Audience: aud,
	}
}

// isCode reports whether err is a gRPC status with code c.
func isCode(err error, c codes.Code) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == c
}

// eventually polls cond until it returns nil or the bounded wait ends.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %s", what, err, waitFor)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
