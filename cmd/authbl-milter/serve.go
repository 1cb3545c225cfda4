package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"os/user"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/metrics"
	"github.com/authbl-milter/authbl-milter/milter"
	"github.com/authbl-milter/authbl-milter/notify"
)

// shutdownGrace is how long transactions in flight may take to get their
// answers once SIGTERM or SIGINT arrived.
const shutdownGrace = 10 * time.Second

// filePoll is how often the files of lists served from files are checked
// for changes.
const filePoll = 5 * time.Second

func cmdServe(e *env) int {
	if len(e.args) > 0 {
		e.errorf("serve takes no arguments")
		return exitError
	}
	cfg, ok := e.loadConfig()
	if !ok {
		return exitError
	}
	log, level, err := newLogger(cfg.Log, e.stderr)
	if err != nil {
		e.errorf("%v", err)
		return exitError
	}
	defer log.Sync()
	zap.RedirectStdLog(log.Named("go-milter"))

	d := &daemon{path: e.configPath, cfg: cfg, log: log, level: level, metrics: metrics.New()}
	return d.run()
}

// daemon is a running serve command: what a reload replaces and what it
// keeps.
type daemon struct {
	path    string
	cfg     *config.Config // the configuration in force
	log     *zap.Logger
	level   zap.AtomicLevel
	metrics *metrics.Metrics

	lists     atomic.Pointer[listSet]
	accounts  *action.Accounts
	notifier  *notify.Notifier
	srv       *milter.Server
	listening atomic.Bool
}

// listSet is a generation of lists: the checker and its background work
// (health checks, file reloads), which a reload replaces whole.
type listSet struct {
	checker *lookup.Checker
	stop    context.CancelFunc
}

func (d *daemon) run() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	ls, err := d.startLists(ctx, d.cfg)
	if err != nil {
		d.log.Error("cannot start", zap.Error(err))
		return exitFail
	}
	d.lists.Store(ls)
	defer func() { d.lists.Load().stop() }()

	store, err := openStore(d.cfg, forDaemon)
	if err != nil {
		d.log.Error("cannot open the account store", zap.Error(err))
		return exitFail
	}
	defer store.Close()
	action.SetRedisLogger(d.log.Named("redis"))
	storeCheck(store, d.log)
	d.accounts = action.NewAccounts(store, action.AccountsOptions{
		TTL: d.cfg.Accounts.TTL.Duration, Log: d.log})
	// The notifier outlives the milter server: detections of the
	// transactions that finish during the shutdown are still notified.
	d.notifier = newNotifier(d.cfg, store, d.log)
	nctx, nstop := context.WithCancel(context.Background())
	notified := make(chan struct{})
	go func() {
		d.notifier.Run(nctx)
		close(notified)
	}()
	defer func() {
		nstop()
		<-notified
	}()

	ln, err := listen(d.cfg.Milter)
	if err != nil {
		d.log.Error("cannot listen", zap.String("listen", d.cfg.Milter.Listen), zap.Error(err))
		return exitFail
	}
	d.srv = milter.NewServer(d.options(d.cfg, ls.checker))
	d.registerMetrics()
	if hs := d.startHTTP(); hs != nil {
		defer hs.Shutdown(context.Background())
	}
	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(ln) }()
	d.listening.Store(true)
	flushed := make(chan struct{})
	go func() {
		d.accounts.Run(ctx, 10*time.Second)
		close(flushed)
	}()
	d.log.Info("listening", zap.String("listen", d.cfg.Milter.Listen),
		zap.String("version", versionString()), zap.Int("lists", len(ls.checker.Lists())))

	for {
		select {
		case err := <-served:
			d.listening.Store(false)
			d.log.Error("milter server stopped", zap.Error(err))
			stop()
			<-flushed
			return exitFail
		case <-hup:
			d.reload(ctx)
			continue
		case <-ctx.Done():
		}
		break
	}
	d.log.Info("shutting down", zap.Duration("grace", shutdownGrace))
	d.listening.Store(false)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := d.srv.Shutdown(sctx); err != nil {
		d.log.Warn("transactions still open at the end of the grace period", zap.Error(err))
	}
	if err := <-served; err != nil && !errors.Is(err, milter.ErrServerClosed) {
		d.log.Warn("milter server", zap.Error(err))
	}
	<-flushed
	d.log.Info("stopped")
	return exitOK
}

// startLists builds the lists of cfg, runs their self-test, and starts
// their health checks and file reloads.
func (d *daemon) startLists(ctx context.Context, cfg *config.Config) (*listSet, error) {
	checker, err := newChecker(cfg, d.log)
	if err != nil {
		return nil, err
	}
	checker.SetObserver(func(list string, r lookup.Result, took time.Duration) {
		d.metrics.Lookup(list, r.String(), took)
	})
	if !startupSelftest(ctx, checker, d.log) {
		return nil, errors.New("a list failed its self-test")
	}
	lctx, stop := context.WithCancel(ctx)
	go checker.RunHealth(lctx, cfg.DNS.HealthInterval.Duration)
	go checker.WatchFiles(lctx, filePoll)
	return &listSet{checker: checker, stop: stop}, nil
}

// options builds the milter's options from cfg and the current lists.
func (d *daemon) options(cfg *config.Config, checker *lookup.Checker) milter.Options {
	o := milterOptions(cfg, checker, d.accounts, d.log)
	o.Observer = d.metrics
	if d.notifier.Enabled() {
		o.OnDetection = d.notifier.OnDetection
	}
	return o
}

// reload reads the configuration again on SIGHUP. Lists, DNS, the action,
// on_error and the timeout, allowed accounts, exemptions and the log
// level take effect for transactions that start from then on. A file with
// errors, or lists that fail their self-test, are refused and the running
// configuration kept. Keys that only a restart can change are reported.
func (d *daemon) reload(ctx context.Context) {
	d.log.Info("reloading the configuration", zap.String("config", d.path))
	cfg, err := config.Load(d.path)
	if err != nil {
		d.log.Error("reload refused: the configuration has errors; the running one is kept",
			zap.Error(err))
		return
	}
	ls, err := d.startLists(ctx, cfg)
	if err != nil {
		d.log.Error("reload refused; the running configuration is kept", zap.Error(err))
		return
	}
	for _, key := range keepUntilRestart(d.cfg, cfg) {
		d.log.Warn("changed setting needs a restart to take effect", zap.String("key", key))
	}
	if lvl, err := zap.ParseAtomicLevel(cfg.Log.Level); err == nil {
		d.level.SetLevel(lvl.Level())
	}

	d.srv.SetOptions(d.options(cfg, ls.checker))
	d.lists.Swap(ls).stop()
	d.cfg = cfg
	d.log.Info("configuration reloaded", zap.Int("lists", len(ls.checker.Lists())))
}

// keepUntilRestart returns the keys whose new values only a restart
// applies, and sets them in next back to the running values, so that the
// configuration in force stays true to what runs.
func keepUntilRestart(running, next *config.Config) []string {
	var changed []string
	keep := func(key string, differ bool, restore func()) {
		if differ {
			changed = append(changed, key)
			restore()
		}
	}
	keep("milter.listen", running.Milter.Listen != next.Milter.Listen,
		func() { next.Milter.Listen = running.Milter.Listen })
	keep("milter.socket_mode", running.Milter.SocketMode != next.Milter.SocketMode,
		func() { next.Milter.SocketMode = running.Milter.SocketMode })
	keep("milter.socket_group", running.Milter.SocketGroup != next.Milter.SocketGroup,
		func() { next.Milter.SocketGroup = running.Milter.SocketGroup })
	keep("accounts", !reflect.DeepEqual(storeKeys(running), storeKeys(next)),
		func() { restoreStoreKeys(running, next) })
	keep("log.format", running.Log.Format != next.Log.Format,
		func() { next.Log.Format = running.Log.Format })
	keep("notify", !reflect.DeepEqual(running.Notify, next.Notify),
		func() { next.Notify = running.Notify })
	keep("http.listen", running.HTTP.Listen != next.HTTP.Listen,
		func() { next.HTTP.Listen = running.HTTP.Listen })
	return changed
}

// storeKeys are the [accounts] keys fixed at start: all but allow.
func storeKeys(c *config.Config) config.Accounts {
	a := c.Accounts
	a.Allow = nil
	return a
}

func restoreStoreKeys(running, next *config.Config) {
	allow := next.Accounts.Allow
	next.Accounts = running.Accounts
	next.Accounts.Allow = allow
}

// registerMetrics registers the metrics read at scrape time from their
// owners.
func (d *daemon) registerMetrics() {
	m := d.metrics
	cache := func(f func(lookup.CacheStats) uint64) func() float64 {
		return func() float64 {
			st, _ := d.lists.Load().checker.CacheStats()
			return float64(f(st))
		}
	}
	// The cache counters restart from zero when a reload replaces the
	// cache; Prometheus' rate() treats that as a counter reset.
	m.CounterFunc("cache_hits_total", "Lookups answered from the cache.",
		cache(func(s lookup.CacheStats) uint64 { return s.Hits }))
	m.CounterFunc("cache_misses_total", "Lookups not in the cache, so asked.",
		cache(func(s lookup.CacheStats) uint64 { return s.Misses }))
	m.GaugeVecFunc("list_healthy", "1 while the list passes its self-test, else 0.",
		[]string{"list", "state"}, func() []metrics.Sample {
			var out []metrics.Sample
			for _, h := range d.lists.Load().checker.Health() {
				v := 0.0
				if h.State == lookup.HealthOK {
					v = 1
				}
				out = append(out, metrics.Sample{Labels: []string{h.List, h.State.String()}, Value: v})
			}
			return out
		})
	m.CounterVecFunc("notifications_total",
		"Notifications of new detections by channel and result.",
		[]string{"channel", "result"}, func() []metrics.Sample {
			st := d.notifier.Stats()
			return []metrics.Sample{
				{Labels: []string{"command", "ok"}, Value: float64(st.CommandsRun - st.CommandsFailed)},
				{Labels: []string{"command", "failed"}, Value: float64(st.CommandsFailed)},
				{Labels: []string{"command", "dropped"}, Value: float64(st.CommandsDropped)},
				{Labels: []string{"webhook", "delivered"}, Value: float64(st.WebhooksDelivered)},
				{Labels: []string{"webhook", "failed_attempt"}, Value: float64(st.WebhooksFailed)},
				{Labels: []string{"webhook", "abandoned"}, Value: float64(st.WebhooksAbandoned)},
			}
		})
	m.CounterFunc("store_errors_total", "Failed account store calls.",
		func() float64 { return float64(d.accounts.StoreErrors()) })
	m.GaugeFunc("pending_detections", "Detections waiting for the account store.",
		func() float64 { return float64(d.accounts.Pending()) })
}

// startHTTP serves /metrics, /healthz and /readyz on http.listen. A
// listener that cannot be opened is logged, not fatal: mail goes on.
func (d *daemon) startHTTP() *metrics.Server {
	if d.cfg.HTTP.Listen == "" {
		return nil
	}
	hs, err := metrics.Listen(d.cfg.HTTP.Listen, metrics.Handler(d.metrics, d.ready), d.log)
	if err != nil {
		d.log.Error("cannot listen for metrics and health; serving mail without them",
			zap.String("listen", d.cfg.HTTP.Listen), zap.Error(err))
		return nil
	}
	d.log.Info("metrics and health on http", zap.String("listen", hs.Addr()))
	return hs
}

// ready is the /readyz check: the milter listens and every list passed
// its latest self-test.
func (d *daemon) ready() error {
	if !d.listening.Load() {
		return errors.New("the milter is not listening")
	}
	var bad []string
	for _, h := range d.lists.Load().checker.Health() {
		if h.State != lookup.HealthOK {
			bad = append(bad, fmt.Sprintf("list %s: %s %s", h.List, h.State, h.Detail))
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// storeCheck reports an account store that does not answer at start.
// The milter starts all the same: it follows on_error until the store is
// back, and keeps its detections meanwhile.
func storeCheck(store action.Store, log *zap.Logger) {
	p, ok := store.(interface{ Ping(context.Context) error })
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Ping(ctx); err != nil {
		log.Warn("the account store does not answer; starting all the same,"+
			" following milter.on_error until it does", zap.Error(err))
	}
}

// startupSelftest runs every list's self-test. A wrong answer stops the
// start; a list that does not answer is reported, and the health check
// (dns.health_interval) tries it again.
func startupSelftest(ctx context.Context, checker *lookup.Checker, log *zap.Logger) bool {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ok := true
	for _, r := range checker.SelfTest(tctx) {
		switch r.Status {
		case lookup.TestFailed:
			log.Error("list self-test failed", zap.String("list", r.List),
				zap.String("problem", r.Detail))
			ok = false
		case lookup.TestUnreachable:
			log.Warn("list self-test got no answer; the health check tries it again",
				zap.String("list", r.List), zap.String("problem", r.Detail))
		default:
			log.Info("list self-test passed", zap.String("list", r.List))
		}
	}
	return ok
}

// listen opens the milter socket. A unix socket left behind by an earlier
// run, one that nothing answers on, is removed first; a new one gets the
// configured mode and group.
func listen(m config.Milter) (net.Listener, error) {
	network, addr, err := config.ParseListen(m.Listen)
	if err != nil {
		return nil, err
	}
	if network != "unix" {
		return net.Listen(network, addr)
	}
	if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return nil, errors.New("another process is serving " + addr)
		}
		os.Remove(addr)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	if err := socketAccess(addr, m); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// socketAccess gives a unix socket its mode and group.
func socketAccess(path string, m config.Milter) error {
	if m.SocketGroup != "" {
		g, err := user.LookupGroup(m.SocketGroup)
		if err != nil {
			return fmt.Errorf("milter.socket_group: %w", err)
		}
		gid, err := strconv.Atoi(g.Gid)
		if err != nil {
			return fmt.Errorf("milter.socket_group: gid %q: %w", g.Gid, err)
		}
		if err := os.Chown(path, -1, gid); err != nil {
			return fmt.Errorf("milter.socket_group: %w", err)
		}
	}
	if err := os.Chmod(path, m.FileMode()); err != nil {
		return fmt.Errorf("milter.socket_mode: %w", err)
	}
	return nil
}
