package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

const benchLong = `Measures a hub, as the org of the credentials (a vendor or the platform: it publishes):

  ingest    health signals per second: --signals in batches of --batch from --callers
            concurrent callers on one connection
  latency   publish-to-delivery latency (p50, p99, p99.9) of health signals published at
            --rate items/s for --duration to --subscribers subscribers
  fanout    time until one incident reaches all of --fanout subscribers
  memory    the hub's memory per idle subscriber: its heap (go_memstats_heap_inuse_bytes)
            and RSS (process_resident_memory_bytes) read from --metrics before and after
            opening the --fanout subscribers, and its CPU at rest (process_cpu_seconds_total)
            over --idle without and with them; skipped without --metrics

Every item is TLP:RED for the org itself, so no other member receives it; its cells are
large enough for the hub's minimum cohort and show no failures. The incident of the
fan-out test stays on the hub (title "phx bench fan-out …"). Subscribers share one
connection per 100. Every phase is bounded in time; the run stops by itself. Progress
goes to stderr, a table (or with --json one object) to stdout.`

// benchTests are the phases of phx bench, in the order they run.
var benchTests = []string{"ingest", "latency", "fanout", "memory"}

type benchConfig struct {
	tests       []string
	signals     int
	batch       int
	callers     int
	subscribers int
	rate        int
	duration    time.Duration
	fanout      int
	metrics     string
	idle        time.Duration
}

func benchCmd() *command {
	return &command{
		name:    "bench",
		args:    "[--tests ingest,latency,fanout,memory] [flags]",
		summary: "measure a hub: ingest rate, delivery latency, fan-out time, memory per subscriber",
		long:    benchLong,
		setup: func(fs *flag.FlagSet) runFunc {
			var cfg benchConfig
			tests := listFlag{}
			fs.Var(&tests, "tests", "`list` of tests to run: "+strings.Join(benchTests, ", ")+" (default all)")
			fs.IntVar(&cfg.signals, "signals", 100_000, "ingest: health signals to publish")
			fs.IntVar(&cfg.batch, "batch", 1000, "ingest: signals per PublishSignals call (at most 1000)")
			fs.IntVar(&cfg.callers, "callers", 4, "ingest: concurrent callers")
			fs.IntVar(&cfg.subscribers, "subscribers", 100, "latency: subscribers")
			fs.IntVar(&cfg.rate, "rate", 1000, "latency: health signals published per second")
			fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "latency: how long to publish")
			fs.IntVar(&cfg.fanout, "fanout", 1000, "fanout and memory: subscribers")
			fs.StringVar(&cfg.metrics, "metrics", "", "memory: the hub's metrics `address` (host:port of --metrics-listen, or a URL)")
			fs.DurationVar(&cfg.idle, "idle", 5*time.Second, "memory: how long to measure the hub's CPU at rest, without and with the idle subscribers")
			return func(ctx context.Context, e *env, args []string) error {
				if err := noArgs(e, args); err != nil {
					return err
				}
				cfg.tests = tests
				if len(cfg.tests) == 0 {
					cfg.tests = benchTests
				}
				for _, t := range cfg.tests {
					if !slices.Contains(benchTests, t) {
						return e.usagef("--tests: unknown test %q (of: %s)", t, strings.Join(benchTests, ", "))
					}
				}
				for _, c := range []struct {
					name   string
					v, max int
				}{
					{"signals", cfg.signals, 100_000_000}, {"batch", cfg.batch, sdk.MaxBatch}, {"callers", cfg.callers, 256},
					{"subscribers", cfg.subscribers, 10_000}, {"rate", cfg.rate, 1_000_000}, {"fanout", cfg.fanout, 100_000},
				} {
					if c.v < 1 || c.v > c.max {
						return e.usagef("--%s: %d is not within 1..%d", c.name, c.v, c.max)
					}
				}
				if cfg.duration <= 0 || cfg.duration > time.Hour {
					return e.usagef("--duration: %v is not within 0..1h", cfg.duration)
				}
				if cfg.idle < 100*time.Millisecond || cfg.idle > 10*time.Minute {
					return e.usagef("--idle: %v is not within 100ms..10m", cfg.idle)
				}
				return e.bench(ctx, cfg)
			}
		},
	}
}

// benchResult is what phx bench prints with --json.
type benchResult struct {
	Hub     string         `json:"hub"`
	Org     string         `json:"org"`
	Product string         `json:"product"`
	Ingest  *ingestResult  `json:"ingest,omitempty"`
	Latency *latencyResult `json:"latency,omitempty"`
	Fanout  *fanoutResult  `json:"fanout,omitempty"`
	Memory  *memoryResult  `json:"memory,omitempty"`
}

type ingestResult struct {
	Signals   int     `json:"signals"`
	Batch     int     `json:"batch"`
	Callers   int     `json:"callers"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"signals_per_second"`
}

type latencyResult struct {
	Subscribers int     `json:"subscribers"`
	Rate        int     `json:"rate"`
	Seconds     float64 `json:"seconds"`
	Published   int     `json:"published"`
	Expected    int     `json:"expected_deliveries"`
	Delivered   int     `json:"delivered"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms"`
	MaxMs       float64 `json:"max_ms"`
}

type fanoutResult struct {
	Subscribers      int     `json:"subscribers"`
	Received         int     `json:"received"`
	AllMs            float64 `json:"all_ms"`
	P50Ms            float64 `json:"p50_ms"`
	SubscribeSeconds float64 `json:"subscribe_seconds"`
}

type memoryResult struct {
	Subscribers int    `json:"subscribers"`
	Skipped     string `json:"skipped,omitempty"`
	HeapBefore  uint64 `json:"heap_inuse_before,omitempty"`
	HeapAfter   uint64 `json:"heap_inuse_after,omitempty"`
	RSSBefore   uint64 `json:"rss_before,omitempty"`
	RSSAfter    uint64 `json:"rss_after,omitempty"`
	// HeapPerSubscriber and RSSPerSubscriber are in bytes.
	HeapPerSubscriber float64 `json:"heap_per_subscriber"`
	RSSPerSubscriber  float64 `json:"rss_per_subscriber"`
	// CPUBefore and CPUAfter are the hub's CPU use at rest, in cores
	// (CPU seconds per second, from process_cpu_seconds_total), without
	// the subscribers and with them open and idle (their heartbeats); -1
	// when the hub does not export its CPU time.
	CPUBefore   float64 `json:"cpu_cores_before"`
	CPUAfter    float64 `json:"cpu_cores_after"`
	IdleSeconds float64 `json:"idle_seconds"`
}

// bencher runs the tests against one hub.
type bencher struct {
	e       *env
	cfg     benchConfig
	org     string
	product string
	privacy *phxv1.Privacy
	run     string // distinguishes this run's ids
	seq     atomic.Uint64
}

func (e *env) bench(ctx context.Context, cfg benchConfig) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	wctx, cancel := e.callCtx(ctx)
	who, err := c.WhoAmI(wctx)
	cancel()
	if err != nil {
		return err
	}
	if len(who.GetProducts()) == 0 {
		return fmt.Errorf("bench publishes health signals and an incident: org %s owns no product (use a vendor or the platform)", who.GetOrg())
	}
	b := &bencher{e: e, cfg: cfg, org: who.GetOrg(), product: who.GetProducts()[0], privacy: who.GetPrivacy(),
		run: strconv.FormatInt(time.Now().UnixMilli(), 36)}
	res := benchResult{Hub: e.g.hub, Org: b.org, Product: b.product}
	for _, t := range benchTests {
		if !slices.Contains(cfg.tests, t) || (t == "memory" && slices.Contains(cfg.tests, "fanout")) {
			continue // memory runs with fanout when both are asked for
		}
		switch t {
		case "ingest":
			res.Ingest, err = b.ingest(ctx, c)
		case "latency":
			res.Latency, err = b.latency(ctx)
		case "fanout", "memory":
			res.Fanout, res.Memory, err = b.fanoutAndMemory(ctx, c, slices.Contains(cfg.tests, "fanout"), slices.Contains(cfg.tests, "memory"))
		}
		if err != nil {
			return fmt.Errorf("bench %s: %w", t, err)
		}
	}
	if e.g.json {
		return printPlainJSON(e, res)
	}
	b.render(res)
	return nil
}

func (b *bencher) progress(format string, args ...any) {
	fmt.Fprintf(b.e.stderr, "bench: "+format+"\n", args...)
}

// signal returns a valid health cell of the bench's product, visible to its
// own org only, with the id given.
func (b *bencher) signal(id string, window time.Time) *phxv1.HealthSignal {
	exposed := max(1000, b.privacy.GetKDevices())
	return &phxv1.HealthSignal{
		SignalId: id, Product: b.product, ProductVersion: "1.0.0",
		ContentChannel: "bench", ContentVersion: "1.0", Ring: phxv1.Ring_RING_BROAD,
		OsFamily: "windows", OsBuild: "10.0.22631.3880", Arch: "x64", Region: "global",
		WindowStart: timestamppb.New(window), WindowSeconds: 60,
		DevicesActive: exposed, DevicesExposed: exposed, DistinctTenants: max(40, b.privacy.GetKTenants()),
		Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{b.org}},
	}
}

func (b *bencher) window() time.Time { return time.Now().Add(-2 * time.Minute).Truncate(time.Minute) }

// ingest publishes cfg.signals signals from cfg.callers goroutines sharing c.
func (b *bencher) ingest(ctx context.Context, c *sdk.Client) (*ingestResult, error) {
	cfg := b.cfg
	b.progress("ingest: %d signals in batches of %d from %d callers", cfg.signals, cfg.batch, cfg.callers)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	fail := func(err error) {
		once.Do(func() { first = err })
		cancel()
	}
	w := b.window()
	start := time.Now()
	for range cfg.callers {
		wg.Go(func() {
			for {
				off := int(next.Add(int64(cfg.batch))) - cfg.batch
				if off >= cfg.signals || ctx.Err() != nil {
					return
				}
				batch := make([]*phxv1.HealthSignal, min(cfg.batch, cfg.signals-off))
				for i := range batch {
					batch[i] = b.signal(fmt.Sprintf("bench-%s-i%d", b.run, off+i), w)
				}
				res, err := c.PublishSignals(ctx, batch)
				if err == nil && int(res.GetAccepted()) != len(batch) {
					err = fmt.Errorf("%d of %d signals accepted; first result: %v", res.GetAccepted(), len(batch), res.GetResults()[0])
				}
				if err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return nil, first
	}
	r := &ingestResult{Signals: cfg.signals, Batch: cfg.batch, Callers: cfg.callers, Seconds: elapsed.Seconds(), PerSecond: float64(cfg.signals) / elapsed.Seconds()}
	b.progress("ingest: %.0f signals/s", r.PerSecond)
	return r, nil
}

// clients returns one client per 100 subscribers.
func (b *bencher) clients(subscribers int) ([]*sdk.Client, error) {
	var out []*sdk.Client
	for range (subscribers + 99) / 100 {
		c, err := b.e.connect()
		if err != nil {
			closeClients(out)
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func closeClients(cs []*sdk.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// subscribe opens n subscriptions of req over clients, 16 at a time.
func (b *bencher) subscribe(ctx context.Context, clients []*sdk.Client, n int, req *phxv1.SubscribeRequest) ([]*sdk.Subscription, error) {
	subs := make([]*sdk.Subscription, n)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				s, err := clients[i/100].Subscribe(ctx, req)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				subs[i] = s
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		closeSubs(subs)
		return nil, errs[0]
	}
	return subs, nil
}

func closeSubs(subs []*sdk.Subscription) {
	for _, s := range subs {
		if s != nil {
			s.Close()
		}
	}
}

// latency publishes at cfg.rate for cfg.duration and measures how long each
// signal takes from the start of its PublishSignals call to each
// subscriber.
func (b *bencher) latency(ctx context.Context) (*latencyResult, error) {
	cfg := b.cfg
	total := int(float64(cfg.rate) * cfg.duration.Seconds())
	if total < 1 {
		return nil, errors.New("--rate × --duration is less than one signal")
	}
	b.progress("latency: %d subscribers, %d signals/s for %v", cfg.subscribers, cfg.rate, cfg.duration)
	// Everything ends at the latest a while after publishing should have.
	ctx, cancel := context.WithTimeout(ctx, cfg.duration+time.Minute)
	defer cancel()
	clients, err := b.clients(cfg.subscribers + 100) // the last one publishes
	if err != nil {
		return nil, err
	}
	defer closeClients(clients)
	pub := clients[len(clients)-1]
	subs, err := b.subscribe(ctx, clients, cfg.subscribers, &phxv1.SubscribeRequest{
		Kinds: []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL}, Products: []string{b.product},
	})
	if err != nil {
		return nil, err
	}
	defer closeSubs(subs)

	prefix := fmt.Sprintf("bench-%s-l", b.run)
	sentAt := make([]atomic.Int64, total) // unix nanoseconds, by signal index
	lat := make([][]time.Duration, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Go(func() {
			got := make([]time.Duration, 0, total)
			defer func() { lat[i] = got }()
			for len(got) < total {
				env, err := s.Recv()
				if err != nil {
					return
				}
				now := time.Now().UnixNano()
				n, err := strconv.Atoi(strings.TrimPrefix(env.GetHealthSignal().GetSignalId(), prefix))
				if err != nil || n < 0 || n >= total {
					continue // not this run's
				}
				got = append(got, time.Duration(now-sentAt[n].Load()))
			}
		})
	}

	// Publish on a 10 ms clock, as many as are due.
	w := b.window()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	published := 0
	for published < total {
		select {
		case <-ctx.Done():
			tick.Stop()
			closeSubs(subs)
			wg.Wait()
			return nil, ctx.Err()
		case <-tick.C:
		}
		due := min(total, int(float64(cfg.rate)*time.Since(start).Seconds()))
		if due <= published {
			continue
		}
		batch := make([]*phxv1.HealthSignal, 0, min(due-published, sdk.MaxBatch))
		for i := published; i < due && len(batch) < sdk.MaxBatch; i++ {
			batch = append(batch, b.signal(fmt.Sprintf("%s%d", prefix, i), w))
		}
		now := time.Now().UnixNano()
		for i := range batch {
			sentAt[published+i].Store(now)
		}
		res, err := pub.PublishSignals(ctx, batch)
		if err == nil && int(res.GetAccepted()) != len(batch) {
			err = fmt.Errorf("%d of %d signals accepted", res.GetAccepted(), len(batch))
		}
		if err != nil {
			tick.Stop()
			closeSubs(subs)
			wg.Wait()
			return nil, err
		}
		published += len(batch)
	}
	tick.Stop()
	elapsed := time.Since(start)
	// Wait for the deliveries, at most 30 s more.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.progress("latency: not every subscriber received everything within 30 s")
		closeSubs(subs)
		<-done
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := &latencyResult{Subscribers: cfg.subscribers, Rate: cfg.rate, Seconds: elapsed.Seconds(), Published: published,
		Expected: published * cfg.subscribers, Delivered: len(all)}
	if len(all) > 0 {
		r.P50Ms, r.P99Ms, r.P999Ms = ms(quantile(all, 0.5)), ms(quantile(all, 0.99)), ms(quantile(all, 0.999))
		r.MaxMs = ms(all[len(all)-1])
	}
	b.progress("latency: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms; %d of %d delivered", r.P50Ms, r.P99Ms, r.P999Ms, r.Delivered, r.Expected)
	return r, nil
}

// quantile returns the q-quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fanoutAndMemory opens cfg.fanout idle subscribers, reading the hub's
// memory before and after (memory), then reports one incident and measures
// when each subscriber receives it (fanout).
func (b *bencher) fanoutAndMemory(ctx context.Context, c *sdk.Client, fanout, memory bool) (*fanoutResult, *memoryResult, error) {
	n := b.cfg.fanout
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var mem *memoryResult
	var before memSample
	if memory {
		mem = &memoryResult{Subscribers: n}
		if b.cfg.metrics == "" {
			mem.Skipped = "no --metrics address given"
			b.progress("memory: skipped (%s)", mem.Skipped)
			memory = false
		} else {
			var err error
			if before, err = b.memory(ctx); err != nil {
				return nil, nil, err
			}
			b.progress("memory: the hub's CPU at rest for %v", b.cfg.idle)
			if mem.CPUBefore, err = b.idleCPU(ctx); err != nil {
				return nil, nil, err
			}
			mem.IdleSeconds = b.cfg.idle.Seconds()
		}
	}
	b.progress("fanout: opening %d subscribers", n)
	clients, err := b.clients(n)
	if err != nil {
		return nil, nil, err
	}
	defer closeClients(clients)
	t0 := time.Now()
	subs, err := b.subscribe(ctx, clients, n, &phxv1.SubscribeRequest{})
	if err != nil {
		return nil, nil, err
	}
	defer closeSubs(subs)
	subscribing := time.Since(t0)
	if memory {
		// Let the hub settle: consumers created, first heartbeats sent.
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return nil, nil, err
		}
		after, err := b.memory(ctx)
		if err != nil {
			return nil, nil, err
		}
		mem.HeapBefore, mem.HeapAfter, mem.RSSBefore, mem.RSSAfter = before.heap, after.heap, before.rss, after.rss
		mem.HeapPerSubscriber = (float64(after.heap) - float64(before.heap)) / float64(n)
		mem.RSSPerSubscriber = (float64(after.rss) - float64(before.rss)) / float64(n)
		b.progress("memory: %.1f KiB heap, %.1f KiB RSS per idle subscriber; the hub's CPU at rest with them for %v", mem.HeapPerSubscriber/1024, mem.RSSPerSubscriber/1024, b.cfg.idle)
		if mem.CPUAfter, err = b.idleCPU(ctx); err != nil {
			return nil, nil, err
		}
	}
	if !fanout {
		return nil, mem, nil
	}

	title := "phx bench fan-out " + b.run
	got := make([]time.Duration, n)
	var wg sync.WaitGroup
	var start atomic.Int64
	for i, s := range subs {
		wg.Go(func() {
			for {
				env, err := s.Recv()
				if err != nil {
					got[i] = -1
					return
				}
				if env.GetIncident().GetTitle() == title {
					got[i] = time.Duration(time.Now().UnixNano() - start.Load())
					return
				}
			}
		})
	}
	b.progress("fanout: reporting one incident to %d subscribers", n)
	start.Store(time.Now().UnixNano())
	_, err = c.ReportIncident(ctx, &phxv1.Incident{
		Title: title, Severity: phxv1.Severity_SEVERITY_LOW, Classification: phxv1.Classification_CLASSIFICATION_ADVISORY,
		Affected: []*phxv1.Affected{{Product: b.product, ContentChannel: "bench", ContentVersion: "1.0"}},
		Impact:   "none: a load test of the hub", Audience: &phxv1.Audience{Tlp: phxv1.Tlp_TLP_RED, Orgs: []string{b.org}},
	})
	if err != nil {
		closeSubs(subs)
		wg.Wait()
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.progress("fanout: not every subscriber received the incident within a minute")
		closeSubs(subs)
		<-done
	}
	var recv []time.Duration
	for _, d := range got {
		if d > 0 {
			recv = append(recv, d)
		}
	}
	slices.Sort(recv)
	r := &fanoutResult{Subscribers: n, Received: len(recv), SubscribeSeconds: subscribing.Seconds()}
	if len(recv) > 0 {
		r.AllMs, r.P50Ms = ms(recv[len(recv)-1]), ms(quantile(recv, 0.5))
	}
	b.progress("fanout: %d of %d received it; the last after %.1f ms", r.Received, n, r.AllMs)
	return r, mem, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type memSample struct {
	heap, rss uint64
	cpu       float64 // process_cpu_seconds_total, -1 when the hub has none
}

// idleCPU measures the hub's CPU use over cfg.idle, in cores (-1: the hub
// does not export its CPU time).
func (b *bencher) idleCPU(ctx context.Context) (float64, error) {
	url := b.metricsURL()
	s0, err := scrapeMemory(ctx, url)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, b.cfg.idle); err != nil {
		return 0, err
	}
	s1, err := scrapeMemory(ctx, url)
	if err != nil {
		return 0, err
	}
	if s0.cpu < 0 || s1.cpu < 0 {
		return -1, nil
	}
	return max(0, s1.cpu-s0.cpu) / time.Since(t0).Seconds(), nil
}

// metricsURL is the hub's /metrics address from --metrics.
func (b *bencher) metricsURL() string {
	url := b.cfg.metrics
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	if !strings.HasSuffix(url, "/metrics") {
		url = strings.TrimSuffix(url, "/") + "/metrics"
	}
	return url
}

// memory reads the hub's heap in use and RSS three times, half a second
// apart, and keeps the median of each.
func (b *bencher) memory(ctx context.Context) (memSample, error) {
	url := b.metricsURL()
	var heaps, rsss []uint64
	for i := range 3 {
		if i > 0 {
			if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
				return memSample{}, err
			}
		}
		s, err := scrapeMemory(ctx, url)
		if err != nil {
			return memSample{}, err
		}
		heaps, rsss = append(heaps, s.heap), append(rsss, s.rss)
	}
	slices.Sort(heaps)
	slices.Sort(rsss)
	return memSample{heap: heaps[1], rss: rsss[1]}, nil
}

func scrapeMemory(ctx context.Context, url string) (memSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return memSample{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return memSample{}, fmt.Errorf("hub metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return memSample{}, fmt.Errorf("hub metrics: %s: %s", url, resp.Status)
	}
	s := memSample{cpu: -1}
	var haveHeap bool
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			v, err := strconv.ParseFloat(val, 64)
			if err == nil {
				s.heap, haveHeap = uint64(v), true
			}
		case "process_resident_memory_bytes":
			if v, err := strconv.ParseFloat(val, 64); err == nil {
				s.rss = uint64(v)
			}
		case "process_cpu_seconds_total":
			if v, err := strconv.ParseFloat(val, 64); err == nil {
				s.cpu = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return memSample{}, fmt.Errorf("hub metrics: %w", err)
	}
	if !haveHeap {
		return memSample{}, fmt.Errorf("hub metrics: %s has no go_memstats_heap_inuse_bytes", url)
	}
	return s, nil
}

// render prints the results as a table.
func (b *bencher) render(r benchResult) {
	w := tabwriter.NewWriter(b.e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "hub %s, as %s (product %s)\n\n", r.Hub, r.Org, r.Product)
	fmt.Fprintln(w, "TEST\tSETUP\tRESULT")
	if x := r.Ingest; x != nil {
		fmt.Fprintf(w, "ingest\t%d signals, batches of %d, %d callers\t%.0f signals/s (%.2f s)\n", x.Signals, x.Batch, x.Callers, x.PerSecond, x.Seconds)
	}
	if x := r.Latency; x != nil {
		fmt.Fprintf(w, "latency\t%d subscribers, %d signals/s for %.0f s\tp50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms; %d of %d delivered\n",
			x.Subscribers, x.Rate, x.Seconds, x.P50Ms, x.P99Ms, x.P999Ms, x.MaxMs, x.Delivered, x.Expected)
	}
	if x := r.Fanout; x != nil {
		fmt.Fprintf(w, "fanout\t%d subscribers, 1 incident\t%d received it, the last after %.1f ms (p50 %.1f ms); subscribing took %.1f s\n",
			x.Subscribers, x.Received, x.AllMs, x.P50Ms, x.SubscribeSeconds)
	}
	if x := r.Memory; x != nil {
		if x.Skipped != "" {
			fmt.Fprintf(w, "memory\t%d idle subscribers\tskipped: %s\n", x.Subscribers, x.Skipped)
		} else {
			cpu := "hub CPU time not exported"
			if x.CPUBefore >= 0 && x.CPUAfter >= 0 {
				cpu = fmt.Sprintf("hub CPU at rest %.1f %% of a core without them, %.1f %% with them", 100*x.CPUBefore, 100*x.CPUAfter)
			}
			fmt.Fprintf(w, "memory\t%d idle subscribers\t%.1f KiB heap, %.1f KiB RSS per subscriber; %s\n",
				x.Subscribers, x.HeapPerSubscriber/1024, x.RSSPerSubscriber/1024, cpu)
		}
	}
	w.Flush()
}
