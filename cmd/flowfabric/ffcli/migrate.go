package ffcli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/flowfabric/flowfabric/ffconnect"
)

func newMigrateCommand(out io.Writer) *cobra.Command {
	var store, schema string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Bring a store's schema up to this binary's version",
		Long: `Apply the store's migrations: on Postgres the versioned, forward-only SQL
migrations under an advisory lock (safe while other processes start); on Redis/Valkey the
versioned function library, loaded on every primary; on SQLite the file's migrations (also
applied whenever the file is opened). A store newer than this binary is refused.

On Postgres and Redis/Valkey migrate does not choose the shard count: the first server or
worker to open the store does (its URL's shards=, else the default). An SQLite file stores
its schema and its shard count together, so on SQLite migrate creates the store when the
file is new and fixes its shard count then: the URL's shards=, else 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if store == "" {
				return errors.New("migrate: --store (or FF_STORE) is required")
			}
			if err := ffconnect.Migrate(cmd.Context(), store, &ffconnect.MigrateOpts{Schema: schema}); err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			fmt.Fprintf(out, "%s is up to date\n", redact(store))
			return nil
		},
	}
	cmd.Flags().StringVar(&store, "store", "", "store URL")
	cmd.Flags().StringVar(&schema, "schema", "", `Postgres schema (default: the URL's "schema" parameter, else "flowfabric")`)
	envFlags(cmd, map[string]string{"store": "FF_STORE", "schema": "FF_POSTGRES_SCHEMA"})
	return cmd
}
