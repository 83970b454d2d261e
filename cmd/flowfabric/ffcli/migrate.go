package ffcli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flowfabric/flowfabric/ffconnect"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
)

func newMigrateCommand(out io.Writer) *cobra.Command {
	var store, schema string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Bring a store's schema up to this binary's version",
		Long: `Apply the store's migrations: on Postgres the versioned, forward-only SQL
migrations under an advisory lock (safe while other processes start); on SQLite the file's
migrations (also applied whenever the file is opened); on Redis/Valkey the versioned
function library. A store newer than this binary is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if store == "" {
				return errors.New("migrate: --store (or FF_STORE) is required")
			}
			scheme, _, _ := strings.Cut(store, ":")
			switch strings.ToLower(scheme) {
			case "postgres", "postgresql":
				if err := ffpostgres.MigrateURL(cmd.Context(), store, schema); err != nil {
					return err
				}
			default:
				if schema != "" {
					return errors.New("migrate: --schema (FF_POSTGRES_SCHEMA) is for Postgres stores only")
				}
				s, err := ffconnect.Open(cmd.Context(), store, nil)
				if err != nil {
					return err
				}
				if err := s.Close(); err != nil {
					return err
				}
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
