package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/milter"
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
	log, _, err := newLogger(cfg.Log, e.stderr)
	if err != nil {
		e.errorf("%v", err)
		return exitError
	}
	defer log.Sync()
	zap.RedirectStdLog(log.Named("go-milter"))

	checker, err := newChecker(cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return exitFail
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if !startupSelftest(ctx, checker, log) {
		return exitFail
	}
	go checker.RunHealth(ctx, cfg.DNS.HealthInterval.Duration)
	go checker.WatchFiles(ctx, filePoll)

	store, err := openStore(cfg)
	if err != nil {
		log.Error("cannot open the account store", zap.Error(err))
		return exitFail
	}
	defer store.Close()
	action.SetRedisLogger(log.Named("redis"))
	storeCheck(store, log)
	accounts := action.NewAccounts(store, action.AccountsOptions{
		TTL: cfg.Accounts.TTL.Duration, Log: log})
	// The notifier outlives the milter server: detections of the
	// transactions that finish during the shutdown are still notified.
	notifier := newNotifier(cfg, store, log)
	nctx, nstop := context.WithCancel(context.Background())
	notified := make(chan struct{})
	go func() {
		notifier.Run(nctx)
		close(notified)
	}()
	defer func() {
		nstop()
		<-notified
	}()

	ln, err := listen(cfg.Milter)
	if err != nil {
		log.Error("cannot listen", zap.String("listen", cfg.Milter.Listen), zap.Error(err))
		return exitFail
	}
	opts := milterOptions(cfg, checker, accounts, log)
	if notifier.Enabled() {
		opts.OnDetection = notifier.OnDetection
	}
	srv := milter.NewServer(opts)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	flushed := make(chan struct{})
	go func() {
		accounts.Run(ctx, 10*time.Second)
		close(flushed)
	}()
	log.Info("listening", zap.String("listen", cfg.Milter.Listen),
		zap.String("version", versionString()), zap.Int("lists", len(checker.Lists())))

	select {
	case err := <-served:
		log.Error("milter server stopped", zap.Error(err))
		stop()
		<-flushed
		return exitFail
	case <-ctx.Done():
	}
	log.Info("shutting down", zap.Duration("grace", shutdownGrace))
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("transactions still open at the end of the grace period", zap.Error(err))
	}
	if err := <-served; err != nil && !errors.Is(err, milter.ErrServerClosed) {
		log.Warn("milter server", zap.Error(err))
	}
	<-flushed
	log.Info("stopped")
	return exitOK
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
