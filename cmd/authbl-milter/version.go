package main

import (
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func versionString() string {
	v := version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" &&
			bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return "authbl-milter " + v + " (" + runtime.Version() + ")"
}
