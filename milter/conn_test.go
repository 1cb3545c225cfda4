package milter_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// TestPacketsHoweverTheyArrive: the milter reads the MTA's bytes through
// a buffer, so a command's macros and the command itself often arrive in
// one read. A transaction must be understood whether its packets come
// back to back in one write, a byte at a time, or all at once.
func TestPacketsHoweverTheyArrive(t *testing.T) {
	r := newRig(t, rigOptions{})
	// stages are the writes of a transaction to a dropbox, each a
	// command with its macros; every one but the last is answered
	// continue, the last (end of headers) with the reject.
	stages := func(login string) [][]byte {
		return [][]byte{
			append(packet(cmdMacro, macroData(cmdMail, "i", "4BUF", "{auth_type}", "PLAIN",
				"{auth_authen}", login, "{client_addr}", "198.51.100.20")),
				packet(cmdMail, cstrs("<sender@example.com>"))...),
			append(packet(cmdMacro, macroData(cmdRcpt, "i", "4BUF", "{rcpt_addr}", "a@example.org")),
				packet(cmdRcpt, cstrs("<a@example.org>"))...),
			append(packet(cmdMacro, macroData(cmdRcpt, "i", "4BUF", "{rcpt_addr}", dropbox)),
				packet(cmdRcpt, cstrs("<"+dropbox+">"))...),
			append(packet(cmdMacro, macroData(cmdEOH, "i", "4BUF")), packet(cmdEOH, nil)...),
		}
	}
	byteAtATime := func(c *rawConn, b []byte) error {
		for i := range b {
			if err := c.write(b[i : i+1]); err != nil {
				return err
			}
		}
		return nil
	}
	// wantAnswer reads one answer: continue, or the reject when last.
	wantAnswer := func(t *testing.T, c *rawConn, last bool) {
		t.Helper()
		code, d, err := c.read(5 * time.Second)
		switch {
		case err != nil:
			t.Fatal(err)
		case last:
			wantRawReject(t, code, string(bytes.TrimRight(d, "\x00")))
		case code != respContinue:
			t.Fatalf("answer %q %q, want continue", code, d)
		}
	}

	for i, tt := range []struct {
		name string
		run  func(t *testing.T, c *rawConn, stages [][]byte)
	}{
		{"macros and command in one write", func(t *testing.T, c *rawConn, stages [][]byte) {
			for i, s := range stages {
				if err := c.write(s); err != nil {
					t.Fatal(err)
				}
				wantAnswer(t, c, i == len(stages)-1)
			}
		}},
		{"a byte at a time", func(t *testing.T, c *rawConn, stages [][]byte) {
			for i, s := range stages {
				if err := byteAtATime(c, s); err != nil {
					t.Fatal(err)
				}
				wantAnswer(t, c, i == len(stages)-1)
			}
		}},
		{"the whole envelope in one write", func(t *testing.T, c *rawConn, stages [][]byte) {
			if err := c.write(bytes.Join(stages, nil)); err != nil {
				t.Fatal(err)
			}
			for i := range stages {
				wantAnswer(t, c, i == len(stages)-1)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			login := fmt.Sprintf("buffered%d@example.com", i)
			c := dialRaw(t, r.addr)
			c.hello("198.51.100.20")
			tt.run(t, c, stages(login))
			if f, ok := r.flagged(login); !ok || f.Recipient != dropbox {
				t.Fatalf("flag %+v, %v; want the dropbox detection", f, ok)
			}
		})
	}
}

// TestOversizedPacketBehindAGoodOne: the packet size limit holds for a
// length that arrives in the same read as a good packet before it.
func TestOversizedPacketBehindAGoodOne(t *testing.T) {
	r := newRig(t, rigOptions{})
	c := dialRaw(t, r.addr)
	c.hello("198.51.100.21")
	b := packet(cmdMacro, macroData(cmdMail, "i", "4BIG"))
	b = append(b, 0x00, 0x10, 0x00, 0x01, cmdMail) // 1 MiB + 1 declared
	if err := c.write(b); err != nil {
		t.Fatal(err)
	}
	if err := c.waitClosed(5 * time.Second); err != nil {
		t.Fatalf("connection after an oversized packet: %v, want it closed", err)
	}
	r.stillServes()
}
