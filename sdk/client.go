package sdk

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/phx-exchange/phx/internal/tlsutil"
	"github.com/phx-exchange/phx/internal/version"
	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// MaxBatch is the most health signals the hub takes in one PublishSignals
// call. Client.PublishSignals splits larger slices into batches of this size.
const MaxBatch = 1000

// Client is a connection to a phx hub. It is safe for concurrent use.
// Every method takes a context first and returns errors of type *Error.
type Client struct {
	conn   *grpc.ClientConn
	target string
	retry  retryPolicy
	log    *slog.Logger

	// ob is the outbox (WithOutbox), nil without one; its sender runs
	// until obStop, and obDone is closed when it has returned.
	ob        *outbox
	obStop    context.CancelFunc
	obDone    chan struct{}
	closeOnce sync.Once
	closeErr  error

	// onRedact reports identifiers the hub removed from free text.
	onRedact func(method string, redactions []*phxv1.Redaction)

	identity phxv1.IdentityServiceClient
	health   phxv1.HealthServiceClient
	rollouts phxv1.RolloutServiceClient
	incident phxv1.IncidentServiceClient
	feed     phxv1.FeedServiceClient
	tokens   phxv1.TokenServiceClient
	audit    phxv1.AuditServiceClient
}

// New returns a client of the hub at target (host:port). An empty target
// means PHX_HUB when FromEnv is given, else DefaultHub. The connection is
// always TLS 1.3; without WithCertFiles, WithCAFile or WithTLSConfig the
// hub's certificate is verified against the system roots and no client
// certificate is presented. New does not wait for the connection: the first
// call connects.
//
// target may name several hub replicas separated by commas
// ("hub1.example:7443,hub2.example:7443"). The client then keeps one
// connection, to the first replica that answers in that order, and moves
// to the next when it breaks; each replica's certificate is verified
// against its own host name. Calls that fail while it moves are retried
// as usual (WithRetry).
//
// With WithOutbox, New opens the outbox directory, and a goroutine of the
// Client starts sending what an earlier run left there.
func New(target string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, fmt.Errorf("phx sdk: %w", err)
		}
	}
	if target == "" {
		target = o.hubFromEnv
	}
	if target == "" {
		target = DefaultHub
	}
	var cfg *tls.Config
	if o.tlsConfig != nil {
		cfg = o.tlsConfig
		cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS13)
	} else {
		var err error
		if cfg, err = tlsutil.ClientConfig(o.caFile, o.certFile, o.keyFile); err != nil {
			return nil, fmt.Errorf("phx sdk: %w", err)
		}
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithUserAgent("phx-sdk-go/" + version.String()),
		// Reconnect on the retry policy's schedule rather than gRPC's
		// default (up to two minutes), so a restarted hub is found again
		// within maxBackoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  o.retry.initial,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   o.retry.max,
			},
			MinConnectTimeout: 10 * time.Second,
		}),
	}
	if o.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(tokenCreds(o.token)))
	}
	dialTarget, hubOpts, err := hubsTarget(target)
	if err != nil {
		return nil, fmt.Errorf("phx sdk: %w", err)
	}
	dial = append(dial, hubOpts...)
	dial = append(dial, o.dialOptions...)
	conn, err := grpc.NewClient(dialTarget, dial...)
	if err != nil {
		return nil, fmt.Errorf("phx sdk: %w", err)
	}
	c := &Client{
		conn:     conn,
		target:   target,
		retry:    o.retry,
		log:      o.logger,
		onRedact: o.onRedact,
		identity: phxv1.NewIdentityServiceClient(conn),
		health:   phxv1.NewHealthServiceClient(conn),
		rollouts: phxv1.NewRolloutServiceClient(conn),
		incident: phxv1.NewIncidentServiceClient(conn),
		feed:     phxv1.NewFeedServiceClient(conn),
		tokens:   phxv1.NewTokenServiceClient(conn),
		audit:    phxv1.NewAuditServiceClient(conn),
	}
	if o.outbox != nil {
		ob, err := openOutbox(o.outbox, o.logger)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("phx sdk: outbox: %w", err)
		}
		for _, q := range ob.quarantined {
			o.logger.Warn("phx: damaged outbox file quarantined", "file", q)
		}
		ctx, stop := context.WithCancel(context.Background())
		c.ob, c.obStop, c.obDone = ob, stop, make(chan struct{})
		go func() {
			defer close(c.obDone)
			c.runOutbox(ctx)
		}()
	}
	return c, nil
}

// Target returns the address the client connects to, as given to New.
func (c *Client) Target() string { return c.target }

// Close closes the connection. Calls and subscriptions in progress fail.
// With WithOutbox it first stops sending: what is still spooled stays in
// the directory for the next Client that opens it (FlushOutbox waits for
// it to be sent first).
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		var obErr error
		if c.ob != nil {
			c.obStop()
			<-c.obDone
			obErr = c.ob.close()
		}
		c.closeErr = errors.Join(c.conn.Close(), obErr)
	})
	return c.closeErr
}

// newRequestID returns a fresh idempotency key for one logical mutation.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func mask(paths []string) (*fieldmaskpb.FieldMask, error) {
	if len(paths) == 0 {
		return nil, &Error{Code: CodeInvalidArgument, Field: "update_mask", Message: "name at least one field to change"}
	}
	return &fieldmaskpb.FieldMask{Paths: paths}, nil
}

// WhoAmI returns who the hub takes the caller to be: org, role, workload,
// products and credential expiry.
func (c *Client) WhoAmI(ctx context.Context) (*phxv1.WhoAmIResponse, error) {
	return invoke(ctx, c, "WhoAmI", func(ctx context.Context) (*phxv1.WhoAmIResponse, error) {
		return c.identity.WhoAmI(ctx, &phxv1.WhoAmIRequest{})
	})
}

// PublishSignals publishes health cells. Slices longer than MaxBatch are
// sent in consecutive batches; the returned response merges them as if they
// had been one call: Results[i].Index is the position in signals, and the
// counts are summed. Items are answered one by one: a rejected item (see
// ItemErr) does not fail the call. Each signal's signal_id is its
// idempotency key, so retries after Unavailable never store a cell twice.
//
// If a batch fails as a whole, PublishSignals returns the merged response of
// the batches before it together with the error; publishing the same slice
// again is safe.
//
// With WithOutbox every batch is spooled before it is sent. If the hub has
// not answered every batch when PublishSignals returns, the error matches
// ErrQueued and the response holds the batches answered so far; the others
// are sent later (see WithOutbox).
func (c *Client) PublishSignals(ctx context.Context, signals []*phxv1.HealthSignal) (*phxv1.PublishSignalsResponse, error) {
	if c.ob != nil {
		return c.publishSpooled(ctx, signals)
	}
	out := &phxv1.PublishSignalsResponse{Results: make([]*phxv1.SignalResult, 0, len(signals))}
	for off := 0; off < len(signals); off += MaxBatch {
		batch := signals[off:min(off+MaxBatch, len(signals))]
		resp, err := invoke(ctx, c, "PublishSignals", func(ctx context.Context) (*phxv1.PublishSignalsResponse, error) {
			return c.health.PublishSignals(ctx, &phxv1.PublishSignalsRequest{Signals: batch})
		})
		if err != nil {
			if e, ok := err.(*Error); ok && off > 0 {
				e.Message = fmt.Sprintf("%s (signals %d and after not published)", e.Message, off)
			}
			return out, err
		}
		mergeResults(out, resp, off)
	}
	return out, nil
}

// mergeResults appends the results of a batch that started at offset off.
func mergeResults(out, resp *phxv1.PublishSignalsResponse, off int) {
	for _, r := range resp.GetResults() {
		r.Index += uint32(off)
		out.Results = append(out.Results, r)
	}
	out.Accepted += resp.GetAccepted()
	out.Duplicates += resp.GetDuplicates()
	out.Rejected += resp.GetRejected()
}

// AnnounceRollout registers a new rollout and returns it as stored
// (revision 1). One request_id is generated per call and reused on retries.
// With WithOutbox the request is spooled first; if the hub has not answered
// when the call returns, it returns nil and an error matching ErrQueued.
func (c *Client) AnnounceRollout(ctx context.Context, r *phxv1.Rollout) (*phxv1.Rollout, error) {
	req := &phxv1.AnnounceRolloutRequest{Rollout: r, RequestId: newRequestID()}
	if c.ob != nil {
		resp, err := writeSpooled[*phxv1.AnnounceRolloutResponse](ctx, c, kindAnnounceRollout, req)
		return resp.GetRollout(), err
	}
	resp, err := invoke(ctx, c, "AnnounceRollout", func(ctx context.Context) (*phxv1.AnnounceRolloutResponse, error) {
		return c.rollouts.AnnounceRollout(ctx, req)
	})
	c.redacted("AnnounceRollout", resp.GetRedactions())
	return resp.GetRollout(), err
}

// UpdateRollout changes the fields of rollout rolloutID named by paths
// (e.g. "state", "current_ring", "percent_deployed", "reason",
// "incident_id") to their values in r, if the stored revision is still
// expectedRevision; otherwise it fails with ErrFailedPrecondition. It returns
// the rollout as stored. One request_id is generated per call and reused on
// retries. With WithOutbox the request is spooled first (see
// AnnounceRollout); a queued update whose revision is stale by the time it
// is sent is refused and reported to OutboxOnRefused.
func (c *Client) UpdateRollout(ctx context.Context, rolloutID string, expectedRevision uint64, r *phxv1.Rollout, paths ...string) (*phxv1.Rollout, error) {
	m, err := mask(paths)
	if err != nil {
		return nil, err
	}
	req := &phxv1.UpdateRolloutRequest{
		RolloutId:        rolloutID,
		ExpectedRevision: expectedRevision,
		Rollout:          r,
		UpdateMask:       m,
		RequestId:        newRequestID(),
	}
	if c.ob != nil {
		resp, err := writeSpooled[*phxv1.UpdateRolloutResponse](ctx, c, kindUpdateRollout, req)
		return resp.GetRollout(), err
	}
	resp, err := invoke(ctx, c, "UpdateRollout", func(ctx context.Context) (*phxv1.UpdateRolloutResponse, error) {
		return c.rollouts.UpdateRollout(ctx, req)
	})
	c.redacted("UpdateRollout", resp.GetRedactions())
	return resp.GetRollout(), err
}

// redacted passes the hub's redactions to the client's handler.
func (c *Client) redacted(method string, rs []*phxv1.Redaction) {
	if len(rs) > 0 && c.onRedact != nil {
		c.onRedact(method, rs)
	}
}

// GetRollout returns a rollout's current state.
func (c *Client) GetRollout(ctx context.Context, rolloutID string) (*phxv1.Rollout, error) {
	resp, err := invoke(ctx, c, "GetRollout", func(ctx context.Context) (*phxv1.GetRolloutResponse, error) {
		return c.rollouts.GetRollout(ctx, &phxv1.GetRolloutRequest{RolloutId: rolloutID})
	})
	return resp.GetRollout(), err
}

// ListRollouts returns one page of rollouts the caller may see. Pass the
// response's NextPageToken as req.PageToken for the next page.
func (c *Client) ListRollouts(ctx context.Context, req *phxv1.ListRolloutsRequest) (*phxv1.ListRolloutsResponse, error) {
	if req == nil {
		req = &phxv1.ListRolloutsRequest{}
	}
	return invoke(ctx, c, "ListRollouts", func(ctx context.Context) (*phxv1.ListRolloutsResponse, error) {
		return c.rollouts.ListRollouts(ctx, req)
	})
}

// ReportIncident opens an incident and returns it as stored, with the id the
// hub assigned and revision 1. One request_id is generated per call and
// reused on retries, so a retry never opens a second incident. With
// WithOutbox the request is spooled first (see AnnounceRollout).
func (c *Client) ReportIncident(ctx context.Context, inc *phxv1.Incident) (*phxv1.Incident, error) {
	req := &phxv1.ReportIncidentRequest{Incident: inc, RequestId: newRequestID()}
	if c.ob != nil {
		resp, err := writeSpooled[*phxv1.ReportIncidentResponse](ctx, c, kindReportIncident, req)
		return resp.GetIncident(), err
	}
	resp, err := invoke(ctx, c, "ReportIncident", func(ctx context.Context) (*phxv1.ReportIncidentResponse, error) {
		return c.incident.ReportIncident(ctx, req)
	})
	c.redacted("ReportIncident", resp.GetRedactions())
	return resp.GetIncident(), err
}

// UpdateIncident changes the fields of incident id named by paths (e.g.
// "status", "severity", "title", "impact", "audience") to their values in
// inc, if the stored revision is still expectedRevision; otherwise it fails
// with ErrFailedPrecondition. It returns the incident as stored. One
// request_id is generated per call and reused on retries. With WithOutbox
// the request is spooled first (see UpdateRollout).
func (c *Client) UpdateIncident(ctx context.Context, id string, expectedRevision uint64, inc *phxv1.Incident, paths ...string) (*phxv1.Incident, error) {
	m, err := mask(paths)
	if err != nil {
		return nil, err
	}
	req := &phxv1.UpdateIncidentRequest{
		Id:               id,
		ExpectedRevision: expectedRevision,
		Incident:         inc,
		UpdateMask:       m,
		RequestId:        newRequestID(),
	}
	if c.ob != nil {
		resp, err := writeSpooled[*phxv1.UpdateIncidentResponse](ctx, c, kindUpdateIncident, req)
		return resp.GetIncident(), err
	}
	resp, err := invoke(ctx, c, "UpdateIncident", func(ctx context.Context) (*phxv1.UpdateIncidentResponse, error) {
		return c.incident.UpdateIncident(ctx, req)
	})
	c.redacted("UpdateIncident", resp.GetRedactions())
	return resp.GetIncident(), err
}

// GetIncident returns an incident's current state.
func (c *Client) GetIncident(ctx context.Context, id string) (*phxv1.Incident, error) {
	resp, err := invoke(ctx, c, "GetIncident", func(ctx context.Context) (*phxv1.GetIncidentResponse, error) {
		return c.incident.GetIncident(ctx, &phxv1.GetIncidentRequest{Id: id})
	})
	return resp.GetIncident(), err
}

// GetIncidentRevision returns revision rev of an incident as it was then
// (the incident's current audience decides who may read it).
func (c *Client) GetIncidentRevision(ctx context.Context, id string, rev uint64) (*phxv1.Incident, error) {
	resp, err := invoke(ctx, c, "GetIncident", func(ctx context.Context) (*phxv1.GetIncidentResponse, error) {
		return c.incident.GetIncident(ctx, &phxv1.GetIncidentRequest{Id: id, Revision: rev})
	})
	return resp.GetIncident(), err
}

// ListIncidents returns one page of incidents the caller may see, newest
// first. Pass the response's NextPageToken as req.PageToken for the next page.
func (c *Client) ListIncidents(ctx context.Context, req *phxv1.ListIncidentsRequest) (*phxv1.ListIncidentsResponse, error) {
	if req == nil {
		req = &phxv1.ListIncidentsRequest{}
	}
	return invoke(ctx, c, "ListIncidents", func(ctx context.Context) (*phxv1.ListIncidentsResponse, error) {
		return c.incident.ListIncidents(ctx, req)
	})
}

// AddPost appends text to an incident's timeline, changing its status too
// unless status is STATUS_UNSPECIFIED, and returns the incident. A post has
// no idempotency key, so AddPost is never retried.
func (c *Client) AddPost(ctx context.Context, id, text string, status phxv1.Status) (*phxv1.Incident, error) {
	resp, err := c.incident.AddPost(ctx, &phxv1.AddPostRequest{Id: id, Text: text, Status: status})
	c.redacted("AddPost", resp.GetRedactions())
	return resp.GetIncident(), toError(err)
}

// Respond records the caller org's answer to an incident and returns the
// incident. Answering again replaces the answer, so it is retried.
func (c *Client) Respond(ctx context.Context, id string, kind phxv1.ResponseKind, statement string) (*phxv1.Incident, error) {
	req := &phxv1.RespondRequest{Id: id, Kind: kind, Statement: statement}
	resp, err := invoke(ctx, c, "Respond", func(ctx context.Context) (*phxv1.RespondResponse, error) {
		return c.incident.Respond(ctx, req)
	})
	c.redacted("Respond", resp.GetRedactions())
	return resp.GetIncident(), err
}

// Acknowledge records that someone in the caller's org has seen an incident
// and returns when the org first acknowledged it.
func (c *Client) Acknowledge(ctx context.Context, id string) (time.Time, error) {
	resp, err := invoke(ctx, c, "Acknowledge", func(ctx context.Context) (*phxv1.AcknowledgeResponse, error) {
		return c.incident.Acknowledge(ctx, &phxv1.AcknowledgeRequest{Id: id})
	})
	if err != nil {
		return time.Time{}, err
	}
	return resp.GetAcknowledgedAt().AsTime(), nil
}

// ListReceipts returns, per recipient org of an incident, when it was
// delivered and acknowledged.
func (c *Client) ListReceipts(ctx context.Context, id string) ([]*phxv1.Receipt, error) {
	resp, err := invoke(ctx, c, "ListReceipts", func(ctx context.Context) (*phxv1.ListReceiptsResponse, error) {
		return c.incident.ListReceipts(ctx, &phxv1.ListReceiptsRequest{Id: id})
	})
	return resp.GetReceipts(), err
}

// IssueToken asks the hub to sign a bearer token (operators only). It is
// never retried: a lost answer would leave an unknown token behind.
func (c *Client) IssueToken(ctx context.Context, req *phxv1.IssueTokenRequest) (*phxv1.IssueTokenResponse, error) {
	resp, err := c.tokens.IssueToken(ctx, req)
	return resp, toError(err)
}

// RevokeToken revokes a token by its jti (operators only). Every hub
// replica refuses the token at once and ends the streams held with it.
// Revoking twice is safe, so it is retried like a read.
func (c *Client) RevokeToken(ctx context.Context, jti string) (*phxv1.RevokeTokenResponse, error) {
	return invoke(ctx, c, "RevokeToken", func(ctx context.Context) (*phxv1.RevokeTokenResponse, error) {
		return c.tokens.RevokeToken(ctx, &phxv1.RevokeTokenRequest{Jti: jti})
	})
}

// TailAudit reads the hub's audit log (operators only): the newest
// req.Limit records (0: the hub's default of 20) in order, then, with
// req.Follow, each new record as it is stored, until ctx ends. fn is called
// with every record; an error from fn ends the stream and is returned as it
// is. Without Follow, TailAudit returns nil once the records are read.
// A stream that breaks is not resumed: call TailAudit again.
func (c *Client) TailAudit(ctx context.Context, req *phxv1.TailAuditRequest, fn func(*phxv1.AuditRecord) error) error {
	if req == nil {
		req = &phxv1.TailAuditRequest{}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.audit.TailAudit(ctx, req)
	if err != nil {
		return toError(err)
	}
	for {
		rec, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return toError(err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}

// VerifyAudit asks the hub to check its whole audit log (operators only):
// every record's hash, and its link to the record before it. progress, if
// not nil, is called with the hub's reports while it works. A broken chain
// is not an error: the result's Ok is false and FirstBroken names the first
// broken record. The check reads and changes nothing, so it is retried from
// the start on Unavailable.
func (c *Client) VerifyAudit(ctx context.Context, progress func(*phxv1.AuditProgress)) (*phxv1.AuditVerification, error) {
	return invoke(ctx, c, "VerifyAudit", func(ctx context.Context) (*phxv1.AuditVerification, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.audit.VerifyAudit(ctx, &phxv1.VerifyAuditRequest{})
		if err != nil {
			return nil, err
		}
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil, status.Error(codes.Unavailable, "the hub ended the verification without a result")
			}
			if err != nil {
				return nil, err
			}
			if r := resp.GetResult(); r != nil {
				return r, nil
			}
			if p := resp.GetProgress(); p != nil && progress != nil {
				progress(p)
			}
		}
	})
}
