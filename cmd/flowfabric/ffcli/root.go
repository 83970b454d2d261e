package ffcli

import (
	"context"
	"errors"
	"flag"
	"io"

	"github.com/spf13/cobra"
)

// NewRootCommand returns the flowfabric command with every subcommand, writing to out;
// what goes wrong while a command runs on (a worker's calls that failed, its log) goes to
// the command's error writer, stderr unless SetErr sets another.
func NewRootCommand(out io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "flowfabric",
		Short:         "A durable execution engine: run, serve, work and measure",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Not runnable: with no command at all it prints its help, which lists the commands.
	}
	root.SetOut(out)
	root.AddCommand(
		newDevCommand(out),
		newServerCommand(out),
		newMigrateCommand(out),
		newExecCommand(out),
		newWorkerCommand(out),
		newWorkersCommand(out),
		passthrough("demo", "Create, claim, fail-and-retry and complete a few executions on an SQLite file", out, demoCommand),
		passthrough("bench", "Run a benchmark scenario (flowfabric bench -h for its flags)", out, benchCommand),
	)
	return root
}

// passthrough wraps a command that parses its own flags with a flag.FlagSet. The
// flag.ErrHelp such a command returns after printing its usage for -h is a success.
func passthrough(use, short string, out io.Writer, run func(ctx context.Context, args []string, out io.Writer) error) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := run(cmd.Context(), args, out)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		},
	}
}
