package notify

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// DefaultPath is the PATH of the report command when the milter has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maxOutput is how much of the command's output is kept for the log.
const maxOutput = 4 << 10

// waitDelay is how long, after the command exited or was killed, its
// output pipes may stay open (held by a process it left behind) before
// they are closed.
const waitDelay = 2 * time.Second

// commandRunner runs the report command for an event.
type commandRunner struct {
	argv    []string
	path    string
	timeout time.Duration
	log     *zap.Logger
}

// CommandResult is what one run of the report command gave.
type CommandResult struct {
	ExitCode int    // -1 when it did not exit by itself
	Output   string // stdout and stderr together, cut at 4 KiB
	TimedOut bool   // killed, with its process group, at the timeout
	Err      error  // it could not start, or did not exit 0
}

// run executes the command without a shell, in a process group of its
// own, with the event in its environment, stdin from /dev/null and the
// root directory as its working directory. At the timeout the whole
// process group is killed.
func (r *commandRunner) run(e Event) CommandResult {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, r.argv[0], r.argv[1:]...)
	cmd.Env = e.Environ(r.path)
	cmd.Dir = "/"
	out := &limitedBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The negative pid is the process group: the command and
		// whatever it started.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay

	err := cmd.Run()
	res := CommandResult{ExitCode: -1, Err: err}
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	res.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
	res.Output = strings.TrimSpace(out.String())
	return res
}

// runAndLog runs the command and logs how it went.
func (r *commandRunner) runAndLog(e Event) CommandResult {
	start := time.Now()
	res := r.run(e)
	fields := []zap.Field{
		zap.String("account", e.Account),
		zap.String("queue_id", e.QueueID),
		zap.Int("exit_status", res.ExitCode),
		zap.String("output", res.Output),
		zap.Duration("elapsed", time.Since(start)),
	}
	switch {
	case res.TimedOut:
		r.log.Error("report command timed out; its process group was killed",
			append(fields, zap.Duration("timeout", r.timeout))...)
	case res.Err != nil:
		r.log.Warn("report command failed", append(fields, zap.Error(res.Err))...)
	default:
		r.log.Info("report command done", fields...)
	}
	return res
}

// limitedBuffer keeps the first max bytes written to it and discards the
// rest, so that a chatty command cannot fill the memory.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
	cut bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room < len(p) {
		b.buf.Write(p[:max(room, 0)])
		b.cut = true
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if b.cut {
		s += " [...]"
	}
	return s
}
