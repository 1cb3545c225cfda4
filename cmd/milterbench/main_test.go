package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func runBench(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

var resultLine = regexp.MustCompile(`(?m)^(authbl-milter|no-op go-milter|milter)\s+(\d+) tx/s` +
	`\s+p50\s+[\d.]+ms\s+p99\s+[\d.]+ms.*accept (\d+) reject (\d+) tempfail (\d+) errors (\d+)$`)

// counts returns accept, reject, tempfail and errors of a target's line.
func counts(t *testing.T, out, name string) [4]int {
	t.Helper()
	for _, m := range resultLine.FindAllStringSubmatch(out, -1) {
		if m[1] == name {
			var c [4]int
			for i := range c {
				c[i], _ = strconv.Atoi(m[3+i])
			}
			return c
		}
	}
	t.Fatalf("no result line for %s in:\n%s", name, out)
	return [4]int{}
}

func TestSelfWithBaseline(t *testing.T) {
	code, out, errOut := runBench(t, "-self", "-baseline", "-n", "300", "-c", "4",
		"-warmup", "50", "-listed", "0.1", "-rounds", "2")
	if code != 0 {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
	c := counts(t, out, "authbl-milter")
	if c[0]+c[1] != 300 || c[2] != 0 || c[3] != 0 || c[1] == 0 || c[1] > 100 {
		t.Fatalf("authbl-milter counts %v, want about 10%% of 300 rejected and no failure:\n%s", c, out)
	}
	if b := counts(t, out, "no-op go-milter"); b != [4]int{300, 0, 0, 0} {
		t.Fatalf("baseline counts %v, want 300 accepted", b)
	}
	if !strings.Contains(out, "ratio: ") || strings.Count(out, "  round ") != 4 {
		t.Fatalf("no ratio or not 2 rounds of 2 targets:\n%s", out)
	}
}

func TestEveryTransactionListed(t *testing.T) {
	for _, store := range []string{"sqlite", "memory"} {
		code, out, errOut := runBench(t, "-self", "-n", "40", "-c", "2", "-listed", "1",
			"-rcpts", "10", "-per-conn", "4", "-store", store)
		if code != 0 {
			t.Fatalf("%s: exit %d:\n%s%s", store, code, out, errOut)
		}
		if c := counts(t, out, "authbl-milter"); c != [4]int{0, 40, 0, 0} {
			t.Fatalf("%s: counts %v, want all 40 rejected", store, c)
		}
	}
}

// TestExternalAddress drives a milter that the tool did not start.
func TestExternalAddress(t *testing.T) {
	ln, err := startNoOp("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, out, errOut := runBench(t, "-addr", "inet:"+ln.Addr().String(), "-n", "100",
		"-c", "3", "-unique")
	if code != 0 {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
	if c := counts(t, out, "milter"); c != [4]int{100, 0, 0, 0} {
		t.Fatalf("counts %v", c)
	}

	// Nothing listening: an error, and a failing exit.
	addr := ln.Addr().String()
	ln.Close()
	if code, _, _ := runBench(t, "-addr", "inet:"+addr, "-n", "5", "-c", "1"); code != 1 {
		t.Fatalf("exit %d against a closed port, want 1", code)
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-self", "-addr", "inet:127.0.0.1:1"},
		{"-self", "-n", "0"},
		{"-self", "-listed", "2"},
		{"-addr", "tcp:127.0.0.1:1"},
		{"-self", "-store", "postgres", "-n", "1"},
		{"-self", "extra"},
	} {
		if code, _, _ := runBench(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}
