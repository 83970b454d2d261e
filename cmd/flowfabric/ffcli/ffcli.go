// Package ffcli holds the flowfabric command's commands. Each command is a function of
// its own arguments that writes to the writer it is given, so tests read what a user
// would see and the commands move to cobra unchanged when the CLI grows.
package ffcli

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// Run runs the command line args (without the program name), writing to out. With no
// command it runs the demo; "bench" runs a benchmark.
func Run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "demo":
			return demoCommand(ctx, args[1:], out)
		case "bench":
			return benchCommand(ctx, args[1:], out)
		default:
			return fmt.Errorf("unknown command %q: want demo or bench (no command runs the demo)", args[0])
		}
	}
	return demoCommand(ctx, args, out)
}
