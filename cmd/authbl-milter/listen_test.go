package main

import (
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/authbl-milter/authbl-milter/config"
)

func TestUnixSocketModeAndGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "milter.sock")
	m := config.Milter{Listen: "unix:" + path, SocketMode: "0640"}
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skipf("no group entry for gid %d: %v", os.Getgid(), err)
	}
	m.SocketGroup = g.Name

	ln, err := listen(m)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want a socket with 0640", fi.Mode())
	}
	if gid := fi.Sys().(*syscall.Stat_t).Gid; strconv.Itoa(int(gid)) != g.Gid {
		t.Fatalf("gid %d, want %s", gid, g.Gid)
	}

	// A second milter on the same live socket is refused...
	if _, err := listen(m); err == nil {
		t.Fatal("listened on a socket another listener serves")
	}
	// ...but a stale socket left by a dead process is replaced.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := listen(m)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
}

func TestUnixSocketUnknownGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "milter.sock")
	_, err := listen(config.Milter{Listen: "unix:" + path, SocketMode: "0660",
		SocketGroup: "no-such-group-authbl"})
	if err == nil {
		t.Fatal("no error for an unknown group")
	}
	if _, statErr := os.Stat(path); statErr == nil {
		t.Fatal("the socket was left behind")
	}
}
