package milter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Limits on what one MTA connection may cost.
const (
	// maxFrame is the largest milter packet accepted. The milter asks for
	// no headers and no body, so packets carry only macros and addresses;
	// the library itself allocates up to 1 MiB for whatever a peer
	// declares.
	maxFrame = 256 << 10
	// frameTimeout bounds the wait for the rest of a packet once its
	// length has arrived.
	frameTimeout = time.Minute
	// idleTimeout bounds the wait for the next packet. An MTA keeps its
	// milter connection for the whole SMTP session, idle while its
	// client thinks; Postfix's smtpd_timeout is 300 s.
	idleTimeout = time.Hour
)

// errFrameTooLarge ends a connection whose peer declares a packet larger
// than maxFrame.
var errFrameTooLarge = errors.New("milter: packet too large")

// conn is one MTA connection. It gives the connection its own instance of
// the protocol library, whose handler factory always returns the same
// session: the library rebuilds its handler after any final answer, and
// this way the connection's state (its client address, its HELO name)
// survives that. Closing the connection, by the MTA or by shutdown, ends
// the session's transaction: go-milter itself reports no close.
type conn struct {
	net.Conn
	srv  *Server
	sess *session
	ln   *oneConnListener

	once sync.Once

	// in buffers what the MTA sends: the library reads each packet in two
	// unbuffered reads (its length, then the rest), and an MTA sends a
	// command's macros and the command itself back to back, so one read
	// from the socket usually carries what would otherwise take four.
	in *bufio.Reader

	// The packet framing as seen so far, to refuse oversized packets
	// before the library allocates them. Only the session's goroutine
	// reads.
	header  [4]byte
	have    int    // header bytes read of the current packet
	pending uint32 // payload bytes still to come
}

// serveConn starts serving one accepted connection.
func (s *Server) serveConn(nc net.Conn) {
	c := &conn{Conn: nc, srv: s}
	c.in = bufio.NewReaderSize(socketReader{c}, readBuffer)
	c.sess = newSession(s)
	c.ln = newOneConnListener(c)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()

	lib := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return c.sess },
		Actions:   gomilter.OptQuarantine | gomilter.OptSetSymList,
		Protocol:  gomilter.OptNoHeaders | gomilter.OptNoBody,
		SymList:   symList,
	}
	go lib.Serve(c.ln)
}

// readBuffer is the size of a connection's read buffer: a few ordinary
// packets, so that a larger one is read in a few calls.
const readBuffer = 4 << 10

// socketReader reads from the socket under the deadline that fits the
// framing seen so far: the rest of a packet must come within
// frameTimeout, the next packet within idleTimeout.
type socketReader struct{ c *conn }

func (r socketReader) Read(p []byte) (int, error) {
	c := r.c
	if c.pending > 0 || c.have > 0 {
		c.SetReadDeadline(time.Now().Add(frameTimeout))
	} else {
		c.SetReadDeadline(time.Now().Add(idleTimeout))
	}
	return c.Conn.Read(p)
}

// Read hands the library what the MTA sent, through the read buffer, and
// refuses a packet whose declared length exceeds maxFrame before the
// library sees it.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.in.Read(p)
	for _, b := range p[:n] {
		if c.pending > 0 {
			c.pending--
			continue
		}
		c.header[c.have] = b
		c.have++
		if c.have < len(c.header) {
			continue
		}
		c.have = 0
		c.pending = binary.BigEndian.Uint32(c.header[:])
		if c.pending > maxFrame {
			return 0, fmt.Errorf("%w: %d bytes declared", errFrameTooLarge, c.pending)
		}
	}
	return n, err
}

// Close closes the connection and ends its transaction; it may be called
// more than once, from any goroutine.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
		c.sess.connClosed()
		c.ln.Close()
	})
	return err
}

// oneConnListener hands out one connection, then blocks until closed, so
// that each connection gets a go-milter server of its own.
type oneConnListener struct {
	mu   sync.Mutex
	c    net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{c: c, done: make(chan struct{}), addr: c.LocalAddr()}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }
