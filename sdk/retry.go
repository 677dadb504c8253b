package sdk

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// retryPolicy retries calls that failed with Unavailable, the one code that
// says the hub did not take the call (or lost the connection before it
// answered), and calls refused by a rate limit (ResourceExhausted with a
// RetryInfo detail: the hub did nothing and says when to come back). Every
// mutation carries an idempotency key (signal_id or request_id) fixed
// before the first attempt, so a retry of a call the hub did apply is
// answered from the stored result instead of applied twice. No other code
// is retried.
type retryPolicy struct {
	maxAttempts  int
	initial, max time.Duration
}

// backoff returns the wait before attempt n+1 (n ≥ 1 attempts made): an
// exponential ceiling min(max, initial·2^(n-1)), jittered uniformly over
// [ceiling/2, ceiling].
func (p retryPolicy) backoff(n int) time.Duration {
	d := p.initial
	for i := 1; i < n && d < p.max; i++ {
		d *= 2
	}
	d = min(d, p.max)
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func retryable(err error) bool {
	return status.Code(err) == codes.Unavailable
}

// retryDelay returns the delay the hub asked for when it refused a call
// with ResourceExhausted and a RetryInfo detail (a rate limit).
func retryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return max(ri.GetRetryDelay().AsDuration(), 0), true
		}
	}
	return 0, false
}

// rateWait is how long to wait before retrying a call refused by a rate
// limit that asked for delay: the delay and up to a tenth more, so that
// callers refused together do not all come back at once. It reports false
// when ctx would end before then: waiting is pointless.
func rateWait(ctx context.Context, delay time.Duration) (time.Duration, bool) {
	wait := delay + rand.N(delay/10+1)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		return 0, false
	}
	return wait, true
}

// invoke runs call until it succeeds, fails with a code other than
// Unavailable, runs out of attempts or ctx ends. Errors are *Error.
func invoke[T any](ctx context.Context, c *Client, method string, call func(context.Context) (T, error)) (T, error) {
	var zero T
	for attempt := 1; ; attempt++ {
		resp, err := call(ctx)
		if err == nil {
			return resp, nil
		}
		var wait time.Duration
		if delay, limited := retryDelay(err); limited {
			w, ok := rateWait(ctx, delay)
			if !ok || attempt >= c.retry.maxAttempts {
				return zero, toError(err)
			}
			wait = w
		} else if !retryable(err) || attempt >= c.retry.maxAttempts || ctx.Err() != nil {
			return zero, toError(err)
		} else {
			wait = c.retry.backoff(attempt)
		}
		c.log.DebugContext(ctx, "phx: retrying", "method", method, "attempt", attempt, "wait", wait, "err", err)
		if serr := sleep(ctx, wait); serr != nil {
			e := toError(serr).(*Error)
			e.Message += "; last error: " + toError(err).Error()
			return zero, e
		}
	}
}
