// Command phx is the command-line client of a phx hub: run "phx help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/phx-exchange/phx/client/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
