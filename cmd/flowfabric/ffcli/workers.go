package ffcli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowfabric/flowfabric"
)

// newWorkersCommand lists the live workers registered with a server.
func newWorkersCommand(out io.Writer) *cobra.Command {
	r := &remote{}
	var p flowfabric.WorkerListParams
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "List the live workers registered with a server",
		Long: `List the live worker instances of a namespace registered with a server, in
instance-id order: instance id, worker id, namespace, lanes, capabilities and last
heartbeat. Workers built with the Go SDK register themselves, in process or over HTTP, and
so does "flowfabric worker"; a registration lapses when its heartbeats stop for two lease
TTLs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			page, err := c.ListWorkers(cmd.Context(), p)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(out, page)
			}
			if len(page.Workers) == 0 {
				ns := p.Namespace
				if ns == "" {
					ns = "default"
				}
				fmt.Fprintf(out, "no live workers in namespace %q\n", ns)
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "INSTANCE\tWORKER\tNAMESPACE\tLANES\tCAPABILITIES\tLAST HEARTBEAT")
			for _, w := range page.Workers {
				caps := strings.Join(w.Capabilities, ",")
				if caps == "" {
					caps = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.InstanceID, w.WorkerID, w.Namespace,
					strings.Join(w.Lanes, ","), caps, w.HeartbeatAt.Format(time.RFC3339))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Cursor != "" {
				fmt.Fprintf(out, "more: --cursor %s\n", page.Cursor)
			}
			return nil
		},
	}
	r.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&p.Namespace, "namespace", "", "namespace (default \"default\")")
	f.StringVar(&p.After, "cursor", "", "continue after this instance id (from a previous page)")
	f.IntVar(&p.Limit, "limit", 0, "page size, 1 to 10000 (default 1000)")
	f.BoolVar(&asJSON, "json", false, "print the page as JSON")
	return cmd
}
