// Command tessera-loadgen drives Tessera's /track endpoint with HTTP/1.1
// keep-alive POST requests and prints one JSON summary on stdout.
//
// Two modes:
//
//   - closed loop (-rate 0): every worker sends its next request as soon as the
//     previous answer arrived; this measures the maximum throughput.
//   - open loop (-rate N): request i is scheduled at start + i/N whatever the
//     server does, and its latency is measured from that scheduled time, so a
//     stalled server shows up in the percentiles instead of silently slowing
//     the generator down (coordinated omission).
//
// Only the standard library is used so the benchmark builds offline.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// lateThreshold is how far behind its schedule an open-loop request may start
// before it is counted as a late send (a sign that the workers or the
// generator itself could not keep up with the target rate).
const lateThreshold = time.Millisecond

// timerSlack is how early an open-loop worker asks to be woken. Go timers on
// Linux often fire up to ~1 ms late (the poller waits in whole milliseconds),
// which would otherwise add that much to every open-loop latency.
const timerSlack = time.Millisecond

// watchdogGrace bounds how long after -duration the process may live even if
// some goroutine were stuck; the request contexts should end everything well
// before that.
const watchdogGrace = 15 * time.Second

type config struct {
	baseURL     string
	source      string
	duration    time.Duration
	maxRequests int64
	connections int
	rate        float64
	events      int
	knownPath   string
	knownRatio  float64
	identify    float64
	emails      int
	warmup      time.Duration
	seed        uint64
	timeout     time.Duration
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("tessera-loadgen", flag.ContinueOnError)
	fs.StringVar(&c.baseURL, "url", "http://127.0.0.1:8686", "base URL of the Tessera server")
	fs.StringVar(&c.source, "source", "bench-source", "event source id sent in every request")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "hard upper bound on run time (warmup included)")
	fs.Int64Var(&c.maxRequests, "max-requests", 200000, "hard upper bound on the number of requests sent")
	fs.IntVar(&c.connections, "connections", 32, "concurrent keep-alive connections (one worker each)")
	fs.Float64Var(&c.rate, "rate", 0, "0 = closed loop; >0 = open loop at this many requests/s")
	fs.IntVar(&c.events, "events", 1, "events per request")
	fs.StringVar(&c.knownPath, "known", "", "file of known visitors, one 'profile_id<TAB>session_id' a line")
	fs.Float64Var(&c.knownRatio, "known-ratio", 0.5, "fraction of requests that reuse a known visitor")
	fs.Float64Var(&c.identify, "identify", 0, "fraction of new visitors that send an identify event with an e-mail from the pool (merges once the e-mail is taken)")
	fs.IntVar(&c.emails, "emails", 1000, "size of the e-mail pool used by -identify")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "initial period excluded from the statistics")
	fs.Uint64Var(&c.seed, "seed", 0, "random seed (0 = derive one from the clock)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "per-request timeout")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, c.validate()
}

func (c *config) validate() error {
	u, err := url.Parse(c.baseURL)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		return fmt.Errorf("-url %q: want an absolute http(s) URL", c.baseURL)
	case c.source == "":
		return errors.New("-source must not be empty")
	case c.duration <= 0:
		return errors.New("-duration must be positive")
	case c.warmup < 0 || c.warmup >= c.duration:
		return errors.New("-warmup must be >= 0 and shorter than -duration")
	case c.maxRequests <= 0:
		return errors.New("-max-requests must be positive")
	case c.connections < 1 || c.connections > 4096:
		return errors.New("-connections must be within 1..4096")
	case c.rate < 0 || math.IsNaN(c.rate) || math.IsInf(c.rate, 0):
		return errors.New("-rate must be a finite number >= 0")
	case c.events < 1 || c.events > 1000:
		return errors.New("-events must be within 1..1000")
	case c.knownRatio < 0 || c.knownRatio > 1:
		return errors.New("-known-ratio must be within 0..1")
	case c.identify < 0 || c.identify > 1:
		return errors.New("-identify must be within 0..1")
	case c.emails < 1 || c.emails > 1_000_000:
		return errors.New("-emails must be within 1..1000000")
	case c.timeout <= 0:
		return errors.New("-timeout must be positive")
	}
	return nil
}

// ---------------------------------------------------------------- visitors

type visitor struct{ profile, session string }

func loadKnown(path string) ([]visitor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []visitor
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" || strings.HasPrefix(text, "#") {
			continue
		}
		profile, session, ok := strings.Cut(text, "\t")
		if !ok || profile == "" || session == "" {
			return nil, fmt.Errorf("%s:%d: want 'profile_id<TAB>session_id'", path, line)
		}
		out = append(out, visitor{profile, session})
	}
	return out, sc.Err()
}

// ------------------------------------------------------------------ bodies

type eventProps struct {
	Price    float64 `json:"price"`
	SKU      string  `json:"sku"`
	Category string  `json:"category"`
	Quantity int     `json:"quantity,omitempty"`
	Currency string  `json:"currency,omitempty"`
	OrderID  string  `json:"order_id,omitempty"`
}

type trackEvent struct {
	Type       string     `json:"type"`
	Properties eventProps `json:"properties"`
}

type pageInfo struct {
	URL   string `json:"url"`
	Title string `json:"title"`
}

type trackTail struct {
	Context struct {
		Page pageInfo `json:"page"`
	} `json:"context"`
	Events []trackEvent `json:"events"`
}

var categories = []string{"shoes", "shirts", "bags", "hats", "socks", "jackets", "watches"}

// pickType draws an event type with a funnel-like mix: many views, fewer carts,
// few purchases.
func pickType(rng *rand.Rand) string {
	switch x := rng.IntN(100); {
	case x < 40:
		return "page-view"
	case x < 70:
		return "product-view"
	case x < 90:
		return "add-to-cart"
	default:
		return "purchase"
	}
}

func makeTail(rng *rand.Rand, events int) []byte {
	var t trackTail
	product := 1 + rng.IntN(5000)
	t.Context.Page = pageInfo{
		URL:   "https://shop.example.com/p/" + strconv.Itoa(product),
		Title: "Product " + strconv.Itoa(product),
	}
	t.Events = make([]trackEvent, events)
	for i := range t.Events {
		typ := pickType(rng)
		p := eventProps{
			Price:    float64(99+rng.IntN(30000)) / 100,
			SKU:      "sku-" + strconv.Itoa(1+rng.IntN(2000)),
			Category: categories[rng.IntN(len(categories))],
		}
		switch typ {
		case "add-to-cart":
			p.Quantity = 1 + rng.IntN(3)
		case "purchase":
			p.Quantity = 1 + rng.IntN(3)
			p.Currency = "EUR"
			p.OrderID = "ord-" + strconv.FormatUint(rng.Uint64()>>16, 36)
		}
		t.Events[i] = trackEvent{Type: typ, Properties: p}
	}
	b, err := json.Marshal(&t)
	if err != nil {
		panic(err) // plain structs of strings and numbers always marshal
	}
	// Drop the leading '{': the tail is appended after the head's fields.
	return b[1:]
}

// bodyPool holds pre-built fragments so that a request body costs one
// allocation and a few copies: a head (source, session, profile) and a tail
// (context and events). New visitors get a fresh random session id spliced
// into a fixed prefix, so they are really new on every request.
type bodyPool struct {
	knownHeads [][]byte
	newPrefix  []byte
	tails      [][]byte
	knownRatio float64
	// identify tails, one per e-mail of the pool: new visitors that identify with an
	// address another profile already holds are merged into it.
	identifyTails [][]byte
	identify      float64
}

const newSuffix = `"},`

func quote(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // strings always marshal
	}
	return string(b)
}

func newBodyPool(c config, known []visitor, rng *rand.Rand) *bodyPool {
	src := `{"source":{"id":` + quote(c.source) + `},`
	p := &bodyPool{
		newPrefix:  []byte(src + `"session":{"id":"`),
		knownRatio: c.knownRatio,
	}
	for _, v := range known {
		head := src + `"session":{"id":` + quote(v.session) + `},"profile":{"id":` + quote(v.profile) + `},`
		p.knownHeads = append(p.knownHeads, []byte(head))
	}
	if len(known) == 0 {
		p.knownRatio = 0
	}
	// Enough variety that consecutive requests differ, but bounded in memory
	// (at most ~256 tails of up to 1000 events).
	n := 256
	if c.events > 100 {
		n = 64
	}
	p.tails = make([][]byte, n)
	for i := range p.tails {
		p.tails[i] = makeTail(rng, c.events)
	}
	if c.identify > 0 {
		p.identify = c.identify
		p.identifyTails = make([][]byte, c.emails)
		for i := range p.identifyTails {
			email := "shopper-" + strconv.Itoa(i) + "@bench.example.com"
			p.identifyTails[i] = []byte(`"context":{"page":{"url":"https://shop.example.com/login"}},` +
				`"events":[{"type":"identify","properties":{"email":` + quote(email) +
				`,"traits":{"newsletter":true}}}]}`)
		}
	}
	return p
}

// build returns a fresh slice: net/http may still read a request body after
// Do returns, so bodies are never reused.
func (p *bodyPool) build(rng *rand.Rand) []byte {
	tail := p.tails[rng.IntN(len(p.tails))]
	if p.knownRatio > 0 && rng.Float64() < p.knownRatio {
		head := p.knownHeads[rng.IntN(len(p.knownHeads))]
		b := make([]byte, 0, len(head)+len(tail))
		return append(append(b, head...), tail...)
	}
	if p.identify > 0 && rng.Float64() < p.identify {
		tail = p.identifyTails[rng.IntN(len(p.identifyTails))]
	}
	b := make([]byte, 0, len(p.newPrefix)+36+len(newSuffix)+len(tail))
	b = append(b, p.newPrefix...)
	b = appendUUID(b, rng)
	b = append(b, newSuffix...)
	return append(b, tail...)
}

const hexDigits = "0123456789abcdef"

// appendUUID appends a random version-4 UUID in its canonical text form.
func appendUUID(b []byte, rng *rand.Rand) []byte {
	var u [16]byte
	binary.LittleEndian.PutUint64(u[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rng.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return b
}

// splitmix64 spreads nearby seeds (seed, seed+1, ...) over the whole state
// space so that runs seeded one apart share no random streams.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newRand(seed uint64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(splitmix64(seed), splitmix64(seed^(stream+1)*0x2545f4914f6cdd1d)))
}

// ------------------------------------------------------------------ worker

type workerStats struct {
	latencies []time.Duration // only requests that got an HTTP answer after warmup
	sent      int64           // all requests sent, warmup included
	requests  int64           // completed (answer or transport error) after warmup
	ok        int64
	errors    map[string]int64
	cutAtEnd  int64 // in flight when the run ended; neither success nor error
	late      int64
	maxLag    time.Duration
}

type runner struct {
	cfg       config
	target    string
	client    *http.Client
	pool      *bodyPool
	start     time.Time
	warmupEnd time.Time
	deadline  time.Time
	issued    atomic.Int64
}

func newClient(c config) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               nil, // never route benchmark traffic through an environment proxy
		DialContext:         dialer.DialContext,
		MaxIdleConns:        c.connections,
		MaxIdleConnsPerHost: c.connections,
		MaxConnsPerHost:     c.connections,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	// HTTP/1.1 only, even for https URLs: the goal is keep-alive HTTP/1.1 as
	// trackers in browsers mostly produce it against a single host.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	tr.Protocols = &protocols
	return &http.Client{Transport: tr, Timeout: c.timeout}
}

// send posts one body and reports the outcome: "" for status 200, the status
// code for any other answer, or an error kind when no answer came back.
func (r *runner) send(ctx context.Context, body []byte) (outcome string, answered bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.target, bytes.NewReader(body))
	if err != nil {
		return "bad_request", false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return classify(err), false
	}
	// Reading the body to EOF lets the transport put the connection back in
	// the idle pool; otherwise every request would open a new one.
	_, readErr := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if readErr != nil {
		return "read_" + classify(readErr), false
	}
	if resp.StatusCode != http.StatusOK {
		return strconv.Itoa(resp.StatusCode), true
	}
	return "", true
}

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection_reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	default:
		return "transport"
	}
}

func (r *runner) record(ctx context.Context, w *workerStats, from time.Time, outcome string, answered bool) {
	done := time.Now()
	if !answered && ctx.Err() != nil {
		w.cutAtEnd++ // the run ended (deadline or Ctrl-C) while this request was in flight
		return
	}
	if done.Before(r.warmupEnd) {
		return
	}
	w.requests++
	if answered {
		w.latencies = append(w.latencies, done.Sub(from))
	}
	if outcome == "" {
		w.ok++
	} else {
		w.errors[outcome]++
	}
}

// closedLoop sends back to back until the deadline or the request budget.
func (r *runner) closedLoop(ctx context.Context, w *workerStats, rng *rand.Rand) {
	for ctx.Err() == nil && r.issued.Add(1) <= r.cfg.maxRequests {
		body := r.pool.build(rng)
		from := time.Now()
		w.sent++
		outcome, answered := r.send(ctx, body)
		r.record(ctx, w, from, outcome, answered)
	}
}

// openLoop takes the next slot of a global schedule (start + i/rate), waits
// for it, and measures latency from the scheduled time. When every worker is
// busy the backlog shows up as latency, as a real user would see it.
func (r *runner) openLoop(ctx context.Context, w *workerStats, rng *rand.Rand) {
	interval := float64(time.Second) / r.cfg.rate
	for ctx.Err() == nil {
		i := r.issued.Add(1) - 1
		if i >= r.cfg.maxRequests {
			return
		}
		scheduled := r.start.Add(time.Duration(float64(i) * interval))
		if !scheduled.Before(r.deadline) {
			return
		}
		body := r.pool.build(rng)
		if wait := time.Until(scheduled) - timerSlack; wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		sent := time.Now()
		if lag := sent.Sub(scheduled); lag > lateThreshold && !scheduled.Before(r.warmupEnd) {
			w.late++
			w.maxLag = max(w.maxLag, lag)
		}
		// Latency counts from the scheduled time when the send was late (the
		// queueing a real client would have suffered) and from the actual send
		// when the timer woke a little early.
		from := scheduled
		if sent.Before(scheduled) {
			from = sent
		}
		w.sent++
		outcome, answered := r.send(ctx, body)
		r.record(ctx, w, from, outcome, answered)
	}
}

// ------------------------------------------------------------------ report

type latencySummary struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type result struct {
	Requests         int64            `json:"requests"`
	Events           int64            `json:"events"`
	OK               int64            `json:"ok"`
	Errors           map[string]int64 `json:"errors"`
	Seconds          float64          `json:"seconds"`
	RequestsPerS     float64          `json:"requests_per_s"`
	EventsPerS       float64          `json:"events_per_s"`
	OKRequestsPerS   float64          `json:"ok_requests_per_s"`
	OKEventsPerS     float64          `json:"ok_events_per_s"`
	Latency          latencySummary   `json:"latency_ms"`
	LatencySamples   int              `json:"latency_samples"`
	Connections      int              `json:"connections"`
	RateTarget       float64          `json:"rate_target"`
	EventsPerRequest int              `json:"events_per_request"`
	KnownRatio       float64          `json:"known_ratio"`
	KnownVisitors    int              `json:"known_visitors"`
	WarmupS          float64          `json:"warmup_s"`
	TotalSent        int64            `json:"total_sent"`
	CutAtEnd         int64            `json:"cut_at_end"`
	LateSends        int64            `json:"late_sends"`
	MaxSendLagMs     float64          `json:"max_send_lag_ms"`
	StoppedBy        string           `json:"stopped_by"`
	Seed             uint64           `json:"seed"`
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3 // milliseconds with microsecond resolution
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// percentile uses the nearest-rank definition on sorted samples: the smallest
// sample such that at least p of all samples are <= it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func summarize(lat []time.Duration) latencySummary {
	if len(lat) == 0 {
		return latencySummary{}
	}
	slices.Sort(lat)
	var sum float64
	for _, d := range lat {
		sum += float64(d)
	}
	return latencySummary{
		P50:  ms(percentile(lat, 0.50)),
		P90:  ms(percentile(lat, 0.90)),
		P99:  ms(percentile(lat, 0.99)),
		P999: ms(percentile(lat, 0.999)),
		Max:  ms(lat[len(lat)-1]),
		Mean: ms(time.Duration(sum / float64(len(lat)))),
	}
}

func (r *runner) report(stats []*workerStats, end time.Time, stoppedBy string, knownVisitors int) result {
	res := result{
		Errors:           map[string]int64{},
		Connections:      r.cfg.connections,
		RateTarget:       r.cfg.rate,
		EventsPerRequest: r.cfg.events,
		KnownRatio:       r.pool.knownRatio,
		KnownVisitors:    knownVisitors,
		WarmupS:          r.cfg.warmup.Seconds(),
		StoppedBy:        stoppedBy,
		Seed:             r.cfg.seed,
	}
	var all []time.Duration
	var maxLag time.Duration
	for _, w := range stats {
		res.Requests += w.requests
		res.OK += w.ok
		res.CutAtEnd += w.cutAtEnd
		res.TotalSent += w.sent
		res.LateSends += w.late
		maxLag = max(maxLag, w.maxLag)
		for k, n := range w.errors {
			res.Errors[k] += n
		}
		all = append(all, w.latencies...)
	}
	res.Events = res.Requests * int64(r.cfg.events)
	res.MaxSendLagMs = ms(maxLag)
	res.Latency = summarize(all)
	res.LatencySamples = len(all)
	if secs := end.Sub(r.warmupEnd).Seconds(); secs > 0 {
		res.Seconds = round3(secs)
		res.RequestsPerS = round3(float64(res.Requests) / secs)
		res.EventsPerS = round3(float64(res.Events) / secs)
		res.OKRequestsPerS = round3(float64(res.OK) / secs)
		res.OKEventsPerS = round3(float64(res.OK*int64(r.cfg.events)) / secs)
	}
	return res
}

// -------------------------------------------------------------------- main

func run(c config) (result, error) {
	var known []visitor
	if c.knownPath != "" {
		var err error
		if known, err = loadKnown(c.knownPath); err != nil {
			return result{}, fmt.Errorf("reading -known: %w", err)
		}
	}
	if c.knownRatio > 0 && len(known) == 0 {
		fmt.Fprintln(os.Stderr, "tessera-loadgen: no known visitors given; every request is a new visitor")
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	r := &runner{
		cfg:    c,
		target: strings.TrimRight(c.baseURL, "/") + "/track",
		client: newClient(c),
		pool:   newBodyPool(c, known, newRand(c.seed, 1<<32)),
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	r.start = time.Now()
	r.warmupEnd = r.start.Add(c.warmup)
	r.deadline = r.start.Add(c.duration)
	ctx, cancel := context.WithDeadline(sigCtx, r.deadline)
	defer cancel()
	watchdog := time.AfterFunc(c.duration+watchdogGrace, func() {
		fmt.Fprintln(os.Stderr, "tessera-loadgen: watchdog: workers did not stop in time; aborting")
		os.Exit(3)
	})
	defer watchdog.Stop()

	stats := make([]*workerStats, c.connections)
	var wg sync.WaitGroup
	for i := range stats {
		w := &workerStats{errors: map[string]int64{}}
		stats[i] = w
		rng := newRand(c.seed, uint64(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.rate > 0 {
				r.openLoop(ctx, w, rng)
			} else {
				r.closedLoop(ctx, w, rng)
			}
		}()
	}
	wg.Wait()
	end := time.Now()

	stoppedBy := "duration"
	switch {
	case sigCtx.Err() != nil:
		stoppedBy = "interrupt"
	case r.issued.Load() >= c.maxRequests && end.Before(r.deadline):
		stoppedBy = "max_requests"
	}
	if !end.After(r.warmupEnd) {
		fmt.Fprintln(os.Stderr, "tessera-loadgen: the run ended before the warmup did; nothing was measured")
	}
	return r.report(stats, end, stoppedBy, len(known)), nil
}

func main() {
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tessera-loadgen:", err)
		os.Exit(2)
	}
	res, err := run(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tessera-loadgen:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "tessera-loadgen:", err)
		os.Exit(1)
	}
}
