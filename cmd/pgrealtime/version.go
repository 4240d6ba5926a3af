package main

import (
	"fmt"
	"io"
	"runtime"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func runVersion(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return configErr(args[0], "unexpected argument: `pgrealtime version` takes none")
	}
	_, err := fmt.Fprintf(stdout, "pgrealtime %s (%s)\n", version, runtime.Version())
	return err
}
