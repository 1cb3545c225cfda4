// Package redistest runs a private redis-server for tests: on a unix
// socket in a temporary directory, with persistence off, stopped when the
// test ends. It can be stopped and started again on the same socket, to
// play an outage.
//
// Where redis-server (Debian package redis-server) is missing, Start
// skips the test, naming the package; with CI=true it fails instead, so
// that a CI machine without Redis cannot pass by skipping.
package redistest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process, restartable on the same socket.
type Server struct {
	t      testing.TB
	bin    string
	dir    string
	socket string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  *bytes.Buffer // its output, for failure messages
}

// Start starts redis-server and arranges for it to be stopped and its
// directory removed when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found: install the Debian package redis-server"
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %s", msg)
		}
		t.Skip(msg)
	}
	// Not t.TempDir: a unix socket path must stay under 108 bytes, and
	// test names make those directories long.
	dir, err := os.MkdirTemp("", "redistest")
	if err != nil {
		t.Fatal(err)
	}
	// The client library would print a line to stderr for each command
	// that finds the server down, which outage tests do on purpose.
	redis.SetLogger(quiet{})
	s := &Server{t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "redis.sock")}
	t.Cleanup(func() {
		s.Stop()
		os.RemoveAll(dir)
	})
	s.Restart()
	return s
}

// URL is the address for action.OpenRedis and accounts.redis_url.
func (s *Server) URL() string { return "unix://" + s.socket }

// Socket is the path of the server's unix socket.
func (s *Server) Socket() string { return s.socket }

// Restart starts the server when it is stopped and waits until it
// answers PING. The data set starts empty: nothing is persisted.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(s.bin,
		"--port", "0", // no TCP listener at all
		"--unixsocket", s.socket, "--unixsocketperm", "700",
		"--dir", s.dir, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--loglevel", "warning")
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done, s.out = cmd, done, out

	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.socket); err == nil {
			return
		}
		select {
		case <-done:
			s.cmd = nil
			s.t.Fatalf("redistest: redis-server exited at start:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: redis-server does not answer on %s:\n%s", s.socket, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Pause stops the server with SIGSTOP: it keeps its socket and accepts
// connections but answers nothing, as a hung or unreachable Redis would,
// until Resume.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume lets a paused server go on.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}

// Stop kills the server and waits until it has exited and its socket is
// gone, so that clients see connection errors at once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill() // SIGKILL ends a paused process too
	<-s.done
	s.cmd = nil
	os.Remove(s.socket) // SIGKILL leaves it behind
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func ping(socket string) error {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(buf[:n], []byte("+PONG")) {
		return errors.New("unexpected reply " + string(buf[:n]))
	}
	return nil
}
