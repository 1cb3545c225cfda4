// Command milterbench drives a milter with authenticated transactions
// through the milter protocol, as an MTA would, and reports transactions
// per second and latency percentiles.
//
//	milterbench -addr inet:127.0.0.1:8899 -n 20000 -c 8 -rcpts 3
//	milterbench -self -baseline -n 20000 -c 8
//	milterbench -self -delay 20ms -cache 0 -rcpts 10 -unique
//
// -addr aims at a running milter (Postfix notation: inet:HOST:PORT,
// unix:/path). -self starts authbl-milter in this process instead, with a
// DNS zone server of its own on loopback, so that the tool needs nothing
// else. -baseline runs the same load against go-milter's NoOpMilter in the
// same run, which measures what the milter protocol itself costs here,
// and prints the ratio.
//
// Each transaction opens a connection, as Postfix opens one per SMTP
// session (see -per-conn), authenticates with {auth_authen}, and sends
// MAIL FROM, the recipients, end of headers and end of message unless the
// milter answered before. A share of them (-listed) comes from a listed
// client address; their accounts are kept apart from the clean ones, so
// that a flag does not spread to the clean load. Latency is the time from
// MAIL FROM to the final answer.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	addr     string
	self     bool
	baseline bool
	n        int
	c        int
	warmup   int
	rounds   int
	rcpts    int
	listed   float64
	listedIP string
	ips      int
	rcptPool int
	accounts int
	perConn  int
	unique   bool
	timeout  time.Duration

	// -self only
	delay    time.Duration
	cache    int
	logTo    string
	mtimeout time.Duration
	store    string

	cpuProfile string
	pid        int

	noopListen   string // serve a no-op milter here, and do nothing else
	baselineAddr string
	baselinePID  int
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("milterbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "", "milter to drive: inet:HOST:PORT or unix:/path")
	fs.BoolVar(&o.self, "self", false, "start authbl-milter and a zone server in this process")
	fs.BoolVar(&o.baseline, "baseline", false, "also drive a no-op go-milter and print the ratio")
	fs.IntVar(&o.n, "n", 20000, "transactions measured per run")
	fs.IntVar(&o.c, "c", 8, "concurrent connections")
	fs.IntVar(&o.warmup, "warmup", -1,
		"transactions before measuring (-1: enough to fill the caches)")
	fs.IntVar(&o.rounds, "rounds", 1, "runs of each target, alternated; the median is reported")
	fs.IntVar(&o.rcpts, "rcpts", 3, "recipients per transaction")
	fs.Float64Var(&o.listed, "listed", 0.01, "share of transactions from a listed client address")
	fs.StringVar(&o.listedIP, "listed-ip", "127.0.0.2",
		"a listed client address (authbl's test point)")
	fs.IntVar(&o.ips, "ips", 1000, "distinct clean client addresses")
	fs.IntVar(&o.rcptPool, "rcpt-pool", 5000, "distinct recipients")
	fs.IntVar(&o.accounts, "accounts", 1000, "distinct logins")
	fs.IntVar(&o.perConn, "per-conn", 1, "transactions per connection")
	fs.BoolVar(&o.unique, "unique", false,
		"a new client address and new recipients for every transaction (cold caches)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second,
		"read and write timeout of the client, like Postfix's milter_command_timeout")
	fs.DurationVar(&o.delay, "delay", 0, "-self: delay the zone server adds to each answer")
	fs.IntVar(&o.cache, "cache", 10000, "-self: DNS cache entries, 0 for none")
	fs.StringVar(&o.logTo, "log", "discard", "-self: the milter's JSON log: discard, stderr or a file")
	fs.DurationVar(&o.mtimeout, "milter-timeout", 5*time.Second, "-self: milter.timeout")
	fs.StringVar(&o.store, "store", "sqlite",
		"-self: the account store: sqlite (the default), or memory to leave its cost out")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.IntVar(&o.pid, "pid", 0, "-addr: the milter's process id, to report its CPU time per transaction")
	fs.StringVar(&o.noopListen, "noop", "",
		"serve go-milter's NoOpMilter on this address until stopped (a baseline in a process of its own)")
	fs.StringVar(&o.baselineAddr, "baseline-addr", "",
		"-baseline: drive the no-op milter at this address (see -noop) instead of one in this process")
	fs.IntVar(&o.baselinePID, "baseline-pid", 0, "-baseline-addr: its process id")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.noopListen != "":
		return o, nil
	case o.self == (o.addr != ""):
		return nil, errors.New("give either -addr or -self")
	case o.n < 1 || o.c < 1 || o.rcpts < 0 || o.perConn < 1 || o.rounds < 1:
		return nil, errors.New("-n, -c, -per-conn and -rounds must be at least 1, -rcpts at least 0")
	case o.listed < 0 || o.listed > 1:
		return nil, errors.New("-listed is a share, from 0 to 1")
	case o.ips < 1 || o.rcptPool < 1 || o.accounts < 1:
		return nil, errors.New("-ips, -rcpt-pool and -accounts must be at least 1")
	case o.store != "sqlite" && o.store != "memory":
		return nil, fmt.Errorf("-store %q: want sqlite or memory", o.store)
	}
	if o.warmup < 0 {
		o.warmup = o.ips + o.rcptPool/max(o.rcpts, 1)
		if o.unique {
			o.warmup = 0
		}
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "milterbench:", err)
		}
		return 2
	}
	if o.noopListen != "" {
		return serveNoOp(o.noopListen, stdout, stderr)
	}

	subject := target{name: "milter", pid: o.pid}
	if o.self {
		s, err := startSelf(o)
		if err != nil {
			fmt.Fprintln(stderr, "milterbench:", err)
			return 1
		}
		defer s.close()
		subject.network, subject.address = "tcp", s.addr
		subject.name = "authbl-milter"
		fmt.Fprintf(stdout, "target: authbl-milter in this process (zone server delay %v,"+
			" cache %d, milter.timeout %v, %s store)\n", o.delay, o.cache, o.mtimeout, o.store)
	} else {
		subject.network, subject.address, err = config.ParseListen(o.addr)
		if err != nil {
			fmt.Fprintln(stderr, "milterbench:", err)
			return 2
		}
		fmt.Fprintf(stdout, "target: %s\n", o.addr)
	}
	targets := []target{subject}
	switch {
	case o.baseline && o.baselineAddr != "":
		b := target{name: "no-op go-milter", pid: o.baselinePID}
		if b.network, b.address, err = config.ParseListen(o.baselineAddr); err != nil {
			fmt.Fprintln(stderr, "milterbench:", err)
			return 2
		}
		targets = append(targets, b)
	case o.baseline:
		b, err := startNoOp("127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(stderr, "milterbench:", err)
			return 1
		}
		defer b.Close()
		targets = append(targets, target{name: "no-op go-milter", network: "tcp",
			address: b.Addr().String()})
	}
	fmt.Fprintf(stdout, "load: %d transactions x %d rounds, %d connections, %d recipients,"+
		" %.1f%% listed, %d per connection, warm-up %d%s\n",
		o.n, o.rounds, o.c, o.rcpts, 100*o.listed, o.perConn, o.warmup,
		map[bool]string{true: ", every address new", false: ""}[o.unique])

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "milterbench:", err)
			return 1
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	results := make([][]result, len(targets))
	seq := &sequence{}
	for round := range o.rounds {
		for i, t := range targets {
			if o.warmup > 0 {
				if _, err := drive(t, o, o.warmup, seq, stderr); err != nil {
					fmt.Fprintf(stderr, "milterbench: %s: warm-up: %v\n", t.name, err)
					return 1
				}
			}
			r, err := drive(t, o, o.n, seq, stderr)
			if err != nil {
				fmt.Fprintf(stderr, "milterbench: %s: %v\n", t.name, err)
				return 1
			}
			results[i] = append(results[i], r)
			if o.rounds > 1 {
				fmt.Fprintf(stdout, "  round %d %-16s %s\n", round+1, t.name, r)
			}
		}
	}
	medians := make([]result, len(targets))
	for i, t := range targets {
		medians[i] = median(results[i])
		fmt.Fprintf(stdout, "%-16s %s\n", t.name, medians[i])
	}
	if o.baseline {
		// Each round's ratio compares two runs made one after the other,
		// under the same conditions; their median resists a noisy machine.
		ratios := make([]float64, o.rounds)
		for r := range ratios {
			ratios[r] = results[0][r].tps / results[1][r].tps
		}
		slices.Sort(ratios)
		fmt.Fprintf(stdout, "ratio: %.2f of the no-op milter's throughput (median of %d rounds,"+
			" %.2f to %.2f); p50 %+.2fms, p99 %+.2fms\n",
			ratios[len(ratios)/2], o.rounds, ratios[0], ratios[len(ratios)-1],
			ms(medians[0].p50-medians[1].p50), ms(medians[0].p99-medians[1].p99))
		// CPU per transaction barely depends on what else the machine
		// runs; on a machine the load saturates, throughput is its
		// inverse. It counts the client's share too, on both sides.
		var cpu [2]time.Duration
		for i := range cpu {
			var sum time.Duration
			for _, r := range results[i] {
				sum += r.cpu + r.serverCPU
			}
			cpu[i] = sum / time.Duration(o.rounds)
		}
		fmt.Fprintf(stdout, "cpu: %.0fus per transaction against %.0fus for the no-op milter"+
			" (client included): a ratio of %.2f\n", us(cpu[0]), us(cpu[1]),
			float64(cpu[1])/float64(cpu[0]))
	}
	if medians[0].errors > 0 {
		return 1
	}
	return 0
}

type target struct {
	name             string
	network, address string
	pid              int // the milter's process, when not this one; 0: none known
}

// result is one run against one target.
type result struct {
	n                              int
	elapsed                        time.Duration
	tps                            float64
	p50, p99, max                  time.Duration
	accepted, rejected, tempfailed int
	quarantined, errors            int
	cpu                            time.Duration // this process's CPU time per transaction
	serverCPU                      time.Duration // the milter's, when it runs apart
}

func (r result) String() string {
	s := fmt.Sprintf("%7.0f tx/s  p50 %6.2fms  p99 %6.2fms  max %7.2fms  cpu/tx %4.0fus",
		r.tps, ms(r.p50), ms(r.p99), ms(r.max), us(r.cpu))
	if r.serverCPU > 0 {
		s += fmt.Sprintf(" (milter %4.0fus)", us(r.serverCPU))
	}
	return s + fmt.Sprintf("  accept %d reject %d tempfail %d errors %d",
		r.accepted, r.rejected, r.tempfailed, r.errors)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// median returns the run with the median throughput.
func median(rs []result) result {
	s := slices.Clone(rs)
	sort.Slice(s, func(i, j int) bool { return s[i].tps < s[j].tps })
	return s[len(s)/2]
}

// sequence numbers transactions across runs, so that -unique never
// repeats an address.
type sequence struct{ n atomic.Int64 }

// drive runs n transactions on o.c connections at once.
func drive(t target, o *options, n int, seq *sequence, stderr io.Writer) (result, error) {
	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, n)
		res       = result{n: n}
		firstErr  error
		wg        sync.WaitGroup
	)
	base := seq.n.Add(int64(n)) - int64(n)
	var serverStart time.Duration
	if t.pid > 0 {
		var err error
		if serverStart, err = procCPUTime(t.pid); err != nil {
			return res, err
		}
	}
	cpuStart := cpuTime()
	start := time.Now()
	for w := range o.c {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(base)))
			local := make([]time.Duration, 0, n/o.c+1)
			var tally result
			for {
				first := next.Add(int64(o.perConn)) - int64(o.perConn)
				if first >= int64(n) {
					break
				}
				count := min(int64(o.perConn), int64(n)-first)
				if err := session(t, o, rng, base+first, int(count), &local, &tally); err != nil {
					tally.errors += int(count)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			res.accepted += tally.accepted
			res.rejected += tally.rejected
			res.tempfailed += tally.tempfailed
			res.quarantined += tally.quarantined
			res.errors += tally.errors
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.cpu = (cpuTime() - cpuStart) / time.Duration(n)
	if t.pid > 0 {
		end, err := procCPUTime(t.pid)
		if err != nil {
			return res, err
		}
		res.serverCPU = (end - serverStart) / time.Duration(n)
	}
	if len(latencies) == 0 {
		return res, fmt.Errorf("no transaction completed: %v", firstErr)
	}
	slices.Sort(latencies)
	res.tps = float64(len(latencies)) / res.elapsed.Seconds()
	res.p50 = latencies[len(latencies)/2]
	res.p99 = latencies[min(len(latencies)-1, len(latencies)*99/100)]
	res.max = latencies[len(latencies)-1]
	if res.errors > 0 && firstErr != nil {
		fmt.Fprintf(stderr, "milterbench: %s: %d transactions failed, the first: %v\n",
			t.name, res.errors, firstErr)
	}
	return res, nil
}

// session runs count transactions, numbered from id, on one connection.
func session(t target, o *options, rng *rand.Rand, id int64, count int,
	latencies *[]time.Duration, tally *result) error {
	listed := rng.Float64() < o.listed
	client := o.listedIP
	if !listed {
		client = cleanIP(o, rng, id)
	}
	c, err := mtasim.Dial(t.network, t.address, mtasim.Options{ClientAddr: client,
		ClientName: "client.bench.test", Helo: "client.bench.test", Timeout: o.timeout})
	if err != nil {
		return err
	}
	defer c.Close()
	for i := range int64(count) {
		tx := transaction(o, rng, id+i, client, listed)
		start := time.Now()
		r, err := c.Send(tx)
		if err != nil {
			return err
		}
		*latencies = append(*latencies, time.Since(start))
		switch {
		case r.Quarantine != "":
			tally.quarantined++
			tally.accepted++
		case r.Rejected():
			tally.rejected++
		case r.Tempfailed():
			tally.tempfailed++
		default:
			tally.accepted++
		}
	}
	return nil
}

func transaction(o *options, rng *rand.Rand, id int64, client string,
	listed bool) mtasim.Transaction {
	login := fmt.Sprintf("user%d@bench.test", rng.IntN(o.accounts))
	if listed {
		login = fmt.Sprintf("bad%d@bench.test", rng.IntN(o.accounts))
	}
	tx := mtasim.Transaction{Login: login, AuthType: "PLAIN", ClientAddr: client,
		From: login, QueueID: fmt.Sprintf("Q%X", id)}
	for j := range o.rcpts {
		k := rng.IntN(o.rcptPool)
		if o.unique {
			k = int(id)*o.rcpts + j
		}
		tx.Rcpts = append(tx.Rcpts, fmt.Sprintf("<rcpt%d@example.org>", k))
	}
	return tx
}

// cleanIP returns a client address from 10.0.0.0/8, which no test zone
// lists.
func cleanIP(o *options, rng *rand.Rand, id int64) string {
	k := uint32(rng.IntN(o.ips))
	if o.unique {
		k = uint32(id)
	}
	k++
	return fmt.Sprintf("10.%d.%d.%d", k>>16&255, k>>8&255, k&255)
}

// startNoOp starts go-milter's NoOpMilter on addr, negotiating what
// authbl-milter negotiates, with no macros asked for.
func startNoOp(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return gomilter.NoOpMilter{} },
		Actions:   gomilter.OptQuarantine,
		Protocol:  gomilter.OptNoHeaders | gomilter.OptNoBody,
	}
	go srv.Serve(ln)
	return ln, nil
}

// serveNoOp serves a no-op milter at spec (inet:HOST:PORT) until SIGINT
// or SIGTERM.
func serveNoOp(spec string, stdout, stderr io.Writer) int {
	network, addr, err := config.ParseListen(spec)
	if err != nil || network == "unix" {
		fmt.Fprintln(stderr, "milterbench: -noop: want inet:HOST:PORT")
		return 2
	}
	log.SetOutput(io.Discard) // go-milter's complaints about closed connections
	ln, err := startNoOp(addr)
	if err != nil {
		fmt.Fprintln(stderr, "milterbench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "no-op milter on %s\n", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	ln.Close()
	return 0
}
