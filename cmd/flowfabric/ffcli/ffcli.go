// Package ffcli holds the flowfabric command's commands (cobra). Each writes to the writer
// it is given, so tests read what a user would see.
package ffcli

import (
	"context"
	"io"
)

// Run runs the command line args (without the program name), writing to out (and what
// goes wrong while a command runs on to stderr): dev, server, migrate, exec, worker,
// workers, demo and bench.
func Run(ctx context.Context, args []string, out io.Writer) error {
	root := NewRootCommand(out)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
