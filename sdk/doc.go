// Package sdk is the Go client of a phx hub (the Product Health eXchange).
//
// Members use it to publish anonymized health signals, announce and update
// rollouts, report and update incidents, and receive what peers share,
// live or from a cursor. It speaks gRPC over TLS 1.3 with a client
// certificate (mTLS) or a bearer token, retries calls the hub did not take
// (Unavailable) with the same idempotency keys, and resumes subscriptions
// after broken connections and hub restarts without losing or repeating an
// item.
//
// A vendor backend connects with its member certificate:
//
//	c, err := sdk.New("hub.example:7443",
//		sdk.WithCertFiles("ca.crt", "contoso.crt", "contoso.key"))
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//
//	resp, err := c.PublishSignals(ctx, cells)
//	if err != nil {
//		return err
//	}
//	for _, r := range resp.GetResults() {
//		if err := sdk.ItemErr(r.GetError()); err != nil {
//			log.Printf("cell %d (%s): %v", r.GetIndex(), r.GetSignalId(), err)
//		}
//	}
//
// and follows incidents as they are shared:
//
//	sub, err := c.Subscribe(ctx, &phxv1.SubscribeRequest{
//		Kinds: []phxv1.Kind{phxv1.Kind_KIND_INCIDENT, phxv1.Kind_KIND_ADVISORY},
//	})
//	if err != nil {
//		return err
//	}
//	defer sub.Close()
//	for {
//		env, err := sub.Recv()
//		if err != nil {
//			return err // sub.Cursor() is where to resume
//		}
//		handle(env)
//	}
//
// sdk.New("", sdk.FromEnv()) reads the hub address and credentials from
// PHX_HUB, PHX_CA, PHX_CERT, PHX_KEY and PHX_TOKEN. A target may list
// several hub replicas separated by commas; the client fails over between
// them.
//
// With WithOutbox, signals, rollouts and incidents are written durably to a
// local directory before they are sent and removed only once the hub has
// answered, so nothing is lost while the hub is away or when the process
// dies: a call that could not be acknowledged returns an error matching
// ErrQueued, and the Client sends the request later with the same
// idempotency key.
//
// Every method returns errors of type *Error; test them with errors.Is
// against ErrNotFound, ErrPermissionDenied, ErrFailedPrecondition and the
// other sentinels, and read (*Error).Field for the offending field path.
package sdk
