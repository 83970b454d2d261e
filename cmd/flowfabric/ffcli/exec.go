package ffcli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/fftype"
)

// remote holds the flags of commands that talk to a server.
type remote struct {
	server  string
	token   string
	timeout time.Duration
}

// flags adds --server, --token and --timeout to cmd and its subcommands. The token is read
// from FF_API_TOKEN when the command runs, not shown as a default in help.
func (r *remote) flags(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&r.server, "server", env("FF_SERVER", "http://127.0.0.1:8080"), "the server's URL (FF_SERVER)")
	pf.StringVar(&r.token, "token", "", "bearer token")
	pf.DurationVar(&r.timeout, "timeout", time.Minute,
		"how long a call may take to be sent and its answer to begin (a claim's wait for work comes on top)")
	envFlags(cmd, map[string]string{"token": "FF_API_TOKEN", "timeout": "FF_TIMEOUT"})
}

func (r *remote) client() (*ffclient.Client, error) {
	if r.timeout <= 0 {
		return nil, fmt.Errorf("--timeout %s: want more than 0", r.timeout)
	}
	return ffclient.New(r.server, &ffclient.Config{Token: r.token, Timeout: r.timeout})
}

// printJSON writes v as indented JSON.
func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func parseID(s string) (fftype.ExecutionID, error) { return fftype.ParseExecutionID(s) }

func newExecCommand(out io.Writer) *cobra.Command {
	r := &remote{}
	cmd := &cobra.Command{
		Use:   "exec",
		Short: "Submit and inspect executions on a server",
		// Runnable, so that an unknown subcommand fails (cobra only prints the help of a
		// command without RunE, and succeeds); alone it prints its help.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	r.flags(cmd)

	var sub struct {
		lane, kind, payload, payloadFile, namespace, idem string
		priority                                          int
		delay                                             time.Duration
		caps                                              []string
	}
	submit := &cobra.Command{
		Use:   "submit",
		Short: "Create an execution; prints its id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			p := fftype.CreateParams{Lane: sub.lane, Kind: sub.kind, Namespace: sub.namespace, IdempotencyKey: sub.idem,
				Priority: sub.priority, Delay: fftype.Duration(sub.delay), Capabilities: sub.caps}
			switch {
			case sub.payload != "" && sub.payloadFile != "":
				return errors.New("set --payload or --payload-file, not both")
			case sub.payload != "":
				p.Payload = []byte(sub.payload)
			case sub.payloadFile == "-":
				if p.Payload, err = io.ReadAll(cmd.InOrStdin()); err != nil {
					return err
				}
			case sub.payloadFile != "":
				if p.Payload, err = os.ReadFile(sub.payloadFile); err != nil {
					return err
				}
			}
			res, err := c.Create(cmd.Context(), p)
			if err != nil {
				return err
			}
			dup := ""
			if res.Duplicate {
				dup = " (duplicate of an earlier submit)"
			}
			fmt.Fprintf(out, "%s %s%s\n", res.ID, res.State, dup)
			return nil
		},
	}
	sf := submit.Flags()
	sf.StringVar(&sub.lane, "lane", "", "lane (required)")
	sf.StringVar(&sub.kind, "kind", "", "kind: the handler that runs it (required)")
	sf.StringVar(&sub.payload, "payload", "", "payload as JSON")
	sf.StringVar(&sub.payloadFile, "payload-file", "", "read the JSON payload from a file, or - for stdin")
	sf.StringVar(&sub.namespace, "namespace", "", "namespace (default \"default\")")
	sf.StringVar(&sub.idem, "idempotency-key", "", "a retried submit with the same key finds the first execution")
	sf.IntVar(&sub.priority, "priority", 0, "priority, 0 to 9000 (higher first)")
	sf.DurationVar(&sub.delay, "delay", 0, "do not run before this delay")
	sf.StringSliceVar(&sub.caps, "require", nil, "capabilities a worker must hold (repeat or comma-separate)")

	get := &cobra.Command{
		Use: "get ID", Short: "Describe an execution (JSON)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			x, err := c.Get(cmd.Context(), id)
			if err != nil {
				return err
			}
			return printJSON(out, x)
		},
	}

	var list fftype.ListParams
	var state string
	listCmd := &cobra.Command{
		Use: "list", Short: "List executions, oldest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if list.Limit < 1 { // the server checks the rest; 0 would not be sent, and mean its default
				return fmt.Errorf("--limit %d: want 1 to 1000", list.Limit)
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			list.State = fftype.PublicState(state)
			page, err := c.List(cmd.Context(), list)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tLANE\tKIND\tATTEMPTS\tCREATED")
			for _, x := range page.Executions {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", x.ID, x.PublicState(), x.Lane, x.Kind, x.TotalAttempts, x.CreatedAt.Format(time.RFC3339))
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
	lf := listCmd.Flags()
	lf.StringVar(&list.Namespace, "namespace", "", "only this namespace")
	lf.StringVar(&list.Lane, "lane", "", "only this lane")
	lf.StringVar(&state, "state", "", "only this state (waiting, delayed, active, completed, failed, cancelled, expired)")
	lf.StringVar(&list.Kind, "kind", "", "only this kind")
	lf.StringVar(&list.Cursor, "cursor", "", "continue a listing")
	lf.IntVar(&list.Limit, "limit", 50, "page size, 1 to 1000")

	var reason string
	cancel := &cobra.Command{
		Use: "cancel ID", Short: "Cancel an execution (as an operator)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withID(r, args[0], func(c *ffclient.Client, id fftype.ExecutionID) error {
				return c.Cancel(cmd.Context(), id, fftype.CancelParams{Reason: reason})
			}, out, "cancelled")
		},
	}
	cancel.Flags().StringVar(&reason, "reason", "", "why")

	replay := &cobra.Command{
		Use: "replay ID", Short: "Replay a finished execution", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withID(r, args[0], func(c *ffclient.Client, id fftype.ExecutionID) error {
				return c.Replay(cmd.Context(), id)
			}, out, "replayed")
		},
	}

	priority := &cobra.Command{
		Use: "priority ID PRIORITY", Short: "Change an execution's priority", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("priority %q is not a number", args[1])
			}
			return withID(r, args[0], func(c *ffclient.Client, id fftype.ExecutionID) error {
				return c.ChangePriority(cmd.Context(), id, p)
			}, out, "priority changed")
		},
	}

	result := &cobra.Command{
		Use: "result ID", Short: "Print a completed execution's result (a binary one as its bytes alone)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			b, enc, err := c.ResultWithEncoding(cmd.Context(), id)
			if err != nil {
				return err
			}
			if enc == fftype.EncodingJSON {
				b = append(b, '\n') // ends the line on a terminal; binary bytes stay as they are
			}
			_, err = out.Write(b)
			return err
		},
	}
	cmd.AddCommand(submit, get, listCmd, cancel, replay, priority, result)
	return cmd
}

func withID(r *remote, arg string, fn func(*ffclient.Client, fftype.ExecutionID) error, out io.Writer, done string) error {
	id, err := parseID(arg)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	if err := fn(c, id); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s %s\n", id, done)
	return nil
}
