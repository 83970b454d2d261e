// Command flowfabric runs FlowFabric from the command line.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/flowfabric/flowfabric/cmd/flowfabric/ffcli"
)

func main() {
	// The first signal starts a graceful stop; a second one ends the process at once.
	ctx, stop := ffcli.NotifyStop(context.Background(), func() {
		fmt.Fprintln(os.Stderr, "flowfabric: stopped at once by a second signal")
		os.Exit(1)
	})
	defer stop()
	if err := ffcli.Run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "flowfabric:", err)
		os.Exit(1)
	}
}
