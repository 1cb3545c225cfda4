//go:build integration

package zonefile

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestAgainstRBLDNSD serves each testdata file with a real rbldnsd on
// loopback and checks that it answers every case as the cases say, which
// is what the unit tests check of Parse. It skips where rbldnsd is not
// installed (Debian: apt-get install rbldnsd), unless CI is set.
func TestAgainstRBLDNSD(t *testing.T) {
	bin, err := exec.LookPath("rbldnsd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("rbldnsd is not installed")
		}
		t.Skip("rbldnsd is not installed")
	}
	for _, fc := range fileCases {
		t.Run(fc.file, func(t *testing.T) {
			addr := startRBLDNSD(t, bin, fc.file, fc.format)
			for _, c := range fc.cases {
				got, err := queryA(addr, c.name+".test.zone.")
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if got != c.want {
					t.Errorf("rbldnsd answers %s with %q, want %q (%s)", c.name, got, c.want, c.why)
				}
			}
		})
	}
}

func startRBLDNSD(t *testing.T, bin, file string, f Format) string {
	t.Helper()
	// rbldnsd drops to its own user: the directory must be readable by it.
	dir, err := os.MkdirTemp("", "zonefile-rbldnsd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()

	var out bytes.Buffer
	cmd := exec.Command(bin, "-n", "-b", fmt.Sprintf("127.0.0.1/%d", port), "-w", dir,
		"-t", "60", fmt.Sprintf("test.zone:%s:%s", f, file))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Logf("rbldnsd output:\n%s", out.String())
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := new(dns.Msg)
		m.SetQuestion("test.zone.", dns.TypeSOA)
		c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
		if r, _, err := c.Exchange(m, addr); err == nil && r != nil {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("rbldnsd does not answer on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// queryA returns the sorted A records of name, "" for NXDOMAIN.
func queryA(addr, name string) (string, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return "", err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return "", fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	var a []string
	for _, rr := range r.Answer {
		if rec, ok := rr.(*dns.A); ok {
			a = append(a, rec.A.String())
		}
	}
	slices.Sort(a)
	return strings.Join(slices.Compact(a), ","), nil
}
