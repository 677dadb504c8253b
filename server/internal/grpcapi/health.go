package grpcapi

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/server/internal/audit"
	"github.com/phx-exchange/phx/server/internal/bus"
)

type healthSvc struct {
	phxv1.UnimplementedHealthServiceServer
	a *API
}

// healthSubject is where a publisher's cells for a product go.
func healthSubject(publisher, product string) string {
	return "phx.v1.health." + publisher + "." + product
}

func (s *healthSvc) PublishSignals(ctx context.Context, req *phxv1.PublishSignalsRequest) (resp *phxv1.PublishSignalsResponse, err error) {
	id := caller(ctx)
	n := len(req.GetSignals())
	// One audit record per call: counts and the range of cursors stored.
	var minSeq, maxSeq uint64
	defer func() {
		ev := audit.Event{Kind: audit.KindPublish, Count: uint64(n),
			Accepted: uint64(resp.GetAccepted()), Duplicates: uint64(resp.GetDuplicates()), Refused: uint64(resp.GetRejected())}
		if maxSeq > 0 {
			ev.FirstCursor, ev.LastCursor = bus.ItemCursor(bus.FeedHealth, minSeq), bus.ItemCursor(bus.FeedHealth, maxSeq)
		}
		s.a.record(ctx, withOutcome(ev, err))
	}()
	if n == 0 {
		return nil, invalid("signals", "at least one signal is required")
	}
	if n > MaxBatch {
		return nil, exhausted("signals", "%d signals in one call; at most %d (split the batch)", n, MaxBatch)
	}
	reg := s.a.cfg.Registry.Get()
	now := s.a.cfg.Now()
	published := s.a.now()
	resp = &phxv1.PublishSignalsResponse{Results: make([]*phxv1.SignalResult, n)}
	// Each cell is published as soon as it is checked: JetStream stores the
	// first while the rest are checked.
	batch := s.a.cfg.Bus.NewBatch(n)
	idx := make([]int, 0, n)
	// The same signal_id twice in one batch is published once; the repeats
	// share the first one's outcome and are answered as duplicates.
	firstOf := make(map[string]int, n)
	repeats := map[int]int{} // request index → request index of the first

	// why is the metrics' reason for each rejected item.
	why := make(map[int]string)
	reject := func(i int, err error) {
		resp.Results[i].Outcome = phxv1.SignalOutcome_SIGNAL_OUTCOME_REJECTED
		resp.Results[i].Error = itemError(err)
		why[i] = rejectReason(err)
	}
	for i, sig := range req.Signals {
		resp.Results[i] = &phxv1.SignalResult{Index: uint32(i), SignalId: sig.GetSignalId()}
		if err := validateSignal(sig, now, s.a.cfg.HealthMaxAge, reg); err != nil {
			reject(i, err)
			continue
		}
		if err := s.a.cfg.Privacy.checkCohort(sig); err != nil {
			reject(i, err)
			continue
		}
		if !reg.Owns(id.Org, sig.Product) {
			reject(i, denied("product", "%s does not own product %q", id.Org, sig.Product))
			continue
		}
		env := &phxv1.Envelope{
			MessageId:   id.Org + "/" + sig.SignalId,
			Kind:        phxv1.Kind_KIND_HEALTH_SIGNAL,
			Publisher:   id.Org,
			PublishedAt: published,
			Audience:    sig.Audience,
			Product:     sig.Product,
			Item:        &phxv1.Envelope_HealthSignal{HealthSignal: sig},
		}
		data, err := proto.Marshal(env)
		if err != nil {
			reject(i, fmt.Errorf("encode: %w", err))
			continue
		}
		if first, ok := firstOf[env.MessageId]; ok {
			repeats[i] = first
			continue
		}
		firstOf[env.MessageId] = i
		batch.Add(bus.Message{Subject: healthSubject(id.Org, sig.Product), MsgID: env.MessageId, Data: data})
		idx = append(idx, i)
	}
	for j, r := range batch.Wait(ctx) {
		i := idx[j]
		if r.Err == nil {
			if minSeq == 0 || r.Seq < minSeq {
				minSeq = r.Seq
			}
			maxSeq = max(maxSeq, r.Seq)
		}
		switch {
		case r.Err != nil:
			reject(i, r.Err)
		case r.Duplicate:
			resp.Results[i].Outcome = phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE
			resp.Results[i].Cursor = bus.ItemCursor(bus.FeedHealth, r.Seq)
		default:
			resp.Results[i].Outcome = phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED
			resp.Results[i].Cursor = bus.ItemCursor(bus.FeedHealth, r.Seq)
		}
	}
	for i, first := range repeats {
		fr := resp.Results[first]
		resp.Results[i].Outcome, resp.Results[i].Cursor, resp.Results[i].Error = fr.Outcome, fr.Cursor, fr.Error
		if r, ok := why[first]; ok {
			why[i] = r
		}
		if fr.Outcome == phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED {
			resp.Results[i].Outcome = phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE
		}
	}
	for _, r := range resp.Results {
		switch r.Outcome {
		case phxv1.SignalOutcome_SIGNAL_OUTCOME_ACCEPTED:
			resp.Accepted++
		case phxv1.SignalOutcome_SIGNAL_OUTCOME_DUPLICATE:
			resp.Duplicates++
		default:
			resp.Rejected++
		}
	}
	m := s.a.cfg.Metrics
	m.signals.WithLabelValues("accepted").Add(float64(resp.Accepted))
	m.signals.WithLabelValues("duplicate").Add(float64(resp.Duplicates))
	m.signals.WithLabelValues("rejected").Add(float64(resp.Rejected))
	kind := phxv1.Kind_KIND_HEALTH_SIGNAL.String()
	m.published.WithLabelValues(kind, "accepted").Add(float64(resp.Accepted))
	m.published.WithLabelValues(kind, "duplicate").Add(float64(resp.Duplicates))
	for i, reason := range why {
		m.rejected.WithLabelValues(kind, codes.Code(resp.Results[i].Error.GetCode()).String(), reason).Inc()
	}
	return resp, nil
}
