// Package grpcapi implements the phx.v1 gRPC services: authentication and
// authorization interceptors, request validation, and the mapping of domain
// errors to status codes, which happens here and nowhere else.
package grpcapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phx-exchange/phx/internal/members"
	"github.com/phx-exchange/phx/internal/version"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/authn"
	"github.com/phx-exchange/phx/server/internal/authz"
	"github.com/phx-exchange/phx/server/internal/bus"
	"github.com/phx-exchange/phx/server/internal/noise"
	"github.com/phx-exchange/phx/server/internal/policy"
	"github.com/phx-exchange/phx/server/internal/token"
)

// Config wires the services to the hub's parts.
type Config struct {
	Bus           *bus.Bus
	Registry      *members.Store
	Authenticator *authn.Authenticator
	Pseudonyms    *policy.Pseudonymizer
	// Tokens signs bearer tokens; Ledger records and revokes them.
	Tokens *token.Service
	Ledger *token.Ledger
	// TokenMaxTTL caps the lifetime of issued tokens (default 30 days).
	TokenMaxTTL time.Duration
	Metrics     *Metrics
	Logger      *slog.Logger
	// Noise perturbs health counts for wide audiences (nil: exact counts
	// for everyone).
	Noise *noise.Noiser
	// Privacy sets the minimum cohorts (defaults: 50 devices, 5 tenants).
	Privacy Privacy
	// Audit, if set, records authentication failures, authorization
	// decisions, publishes, updates and deliveries.
	Audit *audit.Log
	// HealthMaxAge refuses cells older than the health stream keeps.
	HealthMaxAge time.Duration
	// Draining is closed when the hub starts shutting down; live streams end
	// with Unavailable so clients resume elsewhere.
	Draining <-chan struct{}
	// RateLimits are the per-org token buckets (zero: the defaults).
	RateLimits RateLimits
	// Feed bounds what each subscriber may leave unread (zero: defaults).
	Feed FeedLimits
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// API is the set of phx.v1 services.
type API struct {
	cfg Config
	log *slog.Logger
	// receipts caches the receipts this hub has recorded (subject → first
	// time), so a delivery costs a write only the first time.
	receipts sync.Map
	limits   *limiter
	// flight merges identical lookups made at once by the streams an item
	// is fanned out to.
	flight singleflight.Group
}

// New returns the services.
func New(cfg Config) *API {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	cfg.Privacy.defaults()
	if cfg.TokenMaxTTL <= 0 {
		cfg.TokenMaxTTL = DefaultTokenMaxTTL
	}
	if cfg.Audit != nil {
		cfg.Metrics.audit.Store(cfg.Audit)
	}
	cfg.Feed.defaults()
	return &API{cfg: cfg, log: cfg.Logger, limits: newLimiter(cfg.RateLimits, cfg.Now)}
}

// Register registers every phx.v1 service on s.
func (a *API) Register(s grpc.ServiceRegistrar) {
	phxv1.RegisterIdentityServiceServer(s, &identitySvc{a: a})
	phxv1.RegisterHealthServiceServer(s, &healthSvc{a: a})
	phxv1.RegisterRolloutServiceServer(s, &rolloutSvc{a: a})
	phxv1.RegisterIncidentServiceServer(s, &incidentSvc{a: a})
	phxv1.RegisterFeedServiceServer(s, &feedSvc{a: a})
	phxv1.RegisterTokenServiceServer(s, &tokenSvc{a: a})
	phxv1.RegisterAuditServiceServer(s, &auditSvc{a: a})
}

func (a *API) authenticate(ctx context.Context, method string) (context.Context, error) {
	if authz.Public[method] {
		return ctx, nil
	}
	id, err := a.cfg.Authenticator.Authenticate(ctx)
	if err != nil {
		a.cfg.Metrics.authFailures.WithLabelValues(method).Inc()
		a.log.Info("authentication failed", "method", method, "err", err)
		a.auditAuthn(ctx, method, err)
		return ctx, err
	}
	d, err := authz.Authorize(method, id.Role)
	if err == nil && id.Method == authn.MethodToken {
		// A token is limited by its scopes as well as its role.
		var sd authz.Decision
		sd, err = authz.AuthorizeScopes(method, id.Scopes)
		d = authz.Decision{Allowed: sd.Allowed, Rule: d.Rule + " " + sd.Rule}
	}
	a.auditAuthz(ctx, method, id, d, err)
	if err != nil {
		a.log.Info("authorization denied", "method", method, "org", id.Org, "role", id.Role, "token", id.TokenID, "err", err)
		return ctx, err
	}
	return authn.NewContext(ctx, id), nil
}

// limit spends n tokens of method's class from the caller's bucket.
func (a *API) limit(ctx context.Context, method string, n int) error {
	id, ok := authn.FromContext(ctx)
	if !ok {
		return nil // public methods
	}
	c := classOf(method)
	err := a.limits.allow(id, c, n)
	if err != nil {
		a.cfg.Metrics.rateLimited.WithLabelValues(classNames[c]).Inc()
	}
	return err
}

// UnaryInterceptor authenticates and authorizes every call, recovers
// panics, maps errors to status codes, and records metrics.
func (a *API) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		var raw error // before it becomes a status, for the metrics
		defer func() {
			if r := recover(); r != nil {
				a.log.Error("panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				resp, err, raw = nil, status.Error(codes.Internal, "internal error"), nil
			}
			a.cfg.Metrics.observe(info.FullMethod, status.Code(err), time.Since(start))
			a.cfg.Metrics.publishCall(info.FullMethod, raw, status.Code(err))
		}()
		ctx, raw = a.authenticate(ctx, info.FullMethod)
		if raw != nil {
			return nil, toStatus(raw)
		}
		if raw = a.limit(ctx, info.FullMethod, cost(classOf(info.FullMethod), req)); raw != nil {
			return nil, toStatus(raw)
		}
		resp, raw = handler(ctx, req)
		return resp, toStatus(raw)
	}
}

// StreamInterceptor is UnaryInterceptor for streams.
func (a *API) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				a.log.Error("panic in stream handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
			a.cfg.Metrics.observe(info.FullMethod, status.Code(err), time.Since(start))
		}()
		ctx, err := a.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return toStatus(err)
		}
		if err := a.limit(ctx, info.FullMethod, 1); err != nil {
			return toStatus(err)
		}
		ctx, stop := a.credentialBound(ctx)
		defer stop()
		err = handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
		if cause := context.Cause(ctx); errors.Is(cause, authn.ErrUnauthenticated) {
			err = cause // the credential ended the stream
		}
		return toStatus(err)
	}
}

// credentialBound ends a stream's context when the bearer token it was
// opened with is revoked (on any replica) or expires.
func (a *API) credentialBound(ctx context.Context) (context.Context, func()) {
	id, _ := authn.FromContext(ctx)
	if id == nil || id.Method != authn.MethodToken {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	expired := time.AfterFunc(time.Until(id.Expires), func() {
		cancel(fmt.Errorf("%w: token %s expired", authn.ErrUnauthenticated, id.TokenID))
	})
	stopWatch := func() {}
	if a.cfg.Ledger != nil {
		stopWatch = a.cfg.Ledger.OnRevoke(id.TokenID, func() {
			cancel(fmt.Errorf("%w: token %s has been revoked", authn.ErrUnauthenticated, id.TokenID))
		})
	}
	return ctx, func() {
		expired.Stop()
		stopWatch()
		cancel(nil)
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

func caller(ctx context.Context) *authn.Identity {
	id, ok := authn.FromContext(ctx)
	if !ok {
		panic("grpcapi: handler called without an authenticated caller")
	}
	return id
}

// roleOf returns an org's role in the current member registry.
func (a *API) roleOf(org string) string {
	m, _ := a.cfg.Registry.Get().Lookup(org)
	return m.Role
}

func recipient(id *authn.Identity) policy.Recipient {
	return policy.Recipient{Org: id.Org, OrgRole: id.Member.Role}
}

// present prepares a stored envelope (a copy of its own) for one
// recipient: it noises health counts for wide audiences and hides the
// publisher behind its pseudonym where the policy says so.
func (a *API) present(env *phxv1.Envelope, r policy.Recipient) *phxv1.Envelope {
	if hs := env.GetHealthSignal(); hs != nil && a.cfg.Noise != nil && policy.GetsNoisedCounts(r, env.Publisher) {
		// The message id ("<publisher>/<signal_id>") names the cell for good.
		env.Noise = a.cfg.Noise.Apply(env.MessageId, hs)
	}
	if in := env.GetIncident(); in != nil {
		a.completeResponses(in, env.Publisher)
	}
	if !env.GetAudience().GetPseudonymous() || policy.SeesRealPublisher(r, env.Publisher) {
		return env
	}
	real := env.Publisher
	p := a.cfg.Pseudonyms.Pseudonym(real)
	env.Publisher = p
	// Health cells' message ids are "<publisher>/<signal_id>".
	if rest, ok := strings.CutPrefix(env.MessageId, real+"/"); ok {
		env.MessageId = p + "/" + rest
	}
	switch it := env.Item.(type) {
	case *phxv1.Envelope_Rollout:
		it.Rollout.Publisher = p
	case *phxv1.Envelope_Incident:
		it.Incident.Reporter = p
		for _, post := range it.Incident.Posts {
			if post.Author == real {
				post.Author = p
			}
		}
		for _, h := range it.Incident.History {
			if h.Author == real {
				h.Author = p
			}
		}
	}
	return env
}

func decodeEnvelope(data []byte) (*phxv1.Envelope, error) {
	env := &phxv1.Envelope{}
	if err := proto.Unmarshal(data, env); err != nil {
		return nil, err
	}
	return env, nil
}

func (a *API) now() *timestamppb.Timestamp { return timestamppb.New(a.cfg.Now()) }

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

func newIncidentID() string {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = crockford[int(b[i])%len(crockford)]
	}
	return "INC-" + string(b)
}

type identitySvc struct {
	phxv1.UnimplementedIdentityServiceServer
	a *API
}

func (s *identitySvc) WhoAmI(ctx context.Context, _ *phxv1.WhoAmIRequest) (*phxv1.WhoAmIResponse, error) {
	id := caller(ctx)
	method := phxv1.AuthMethod_AUTH_METHOD_MTLS
	if id.Method == authn.MethodToken {
		method = phxv1.AuthMethod_AUTH_METHOD_TOKEN
	}
	return &phxv1.WhoAmIResponse{
		Org:                 id.Org,
		Role:                roleProto(id.Role),
		Workload:            id.Workload,
		DisplayName:         id.Member.DisplayName,
		Products:            id.Member.Products,
		AuthMethod:          method,
		CredentialExpiresAt: timestamppb.New(id.Expires),
		SpiffeId:            id.SPIFFEID,
		HubVersion:          version.String(),
		TokenId:             id.TokenID,
		TokenScopes:         id.Scopes,
		Privacy:             s.a.privacy(),
	}, nil
}

func (a *API) privacy() *phxv1.Privacy {
	p := &phxv1.Privacy{KDevices: a.cfg.Privacy.KDevices, KTenants: a.cfg.Privacy.KTenants}
	if a.cfg.Noise != nil {
		p.NoiseEpsilon, p.NoiseCellBudget = a.cfg.Noise.Epsilon(), a.cfg.Noise.CellBudget()
	}
	return p
}

func roleProto(r string) phxv1.Role {
	switch r {
	case members.RoleVendor:
		return phxv1.Role_ROLE_VENDOR
	case members.RolePlatform:
		return phxv1.Role_ROLE_PLATFORM
	case members.RoleCERT:
		return phxv1.Role_ROLE_CERT
	case members.RoleResponder:
		return phxv1.Role_ROLE_RESPONDER
	case members.RoleOperator:
		return phxv1.Role_ROLE_OPERATOR
	}
	return phxv1.Role_ROLE_UNSPECIFIED
}
