package ffcli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/fftype"
)

// syncBuffer is a buffer a running command writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestShellWorkerIsARegisteredWorker runs "flowfabric worker" against the real server: it
// is listed by "flowfabric workers" while it runs, returns binary output as a binary
// result, stops a command whose execution is cancelled, hands back the execution of a
// command running when it stops, and deregisters on the way out.
func TestShellWorkerIsARegisteredWorker(t *testing.T) {
	t.Parallel()
	base := startServer(t, "tok")
	c, err := ffclient.New(base, &ffclient.Config{Token: "tok"})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	out := &syncBuffer{}
	waitLine := func(line string) {
		t.Helper()
		require.Eventually(t, func() bool { return strings.Contains(out.String(), line) }, 20*time.Second, 10*time.Millisecond,
			"the worker never printed %q:\n%s", line, out)
	}
	done := make(chan error, 1)
	go func() {
		root := NewRootCommand(out)
		root.SetArgs([]string{"worker", "--server", base, "--token", "tok", "--lane", "sh", "--lane", "sh2",
			"--capability", "shell", "--instance-id", "box-1", "--concurrency", "2", "--lease-ttl", "3s", "--",
			"sh", "-c", `read -r x; if [ "$x" = '"slow"' ]; then exec sleep 30; fi; printf '\377\376'`})
		done <- root.ExecuteContext(ctx)
	}()
	waitLine("claiming from")

	listed := cli(t, "workers", "--server", base, "--token", "tok")
	lines := strings.Split(strings.TrimSpace(listed), "\n")
	require.Len(t, lines, 2, listed)
	require.Equal(t, []string{"box-1", "shell-worker", "default", "sh,sh2", "shell"}, strings.Fields(lines[1])[:5])

	var dup bytes.Buffer
	second := NewRootCommand(&dup)
	second.SetArgs([]string{"worker", "--server", base, "--token", "tok", "--lane", "sh", "--instance-id", "box-1", "--once", "--", "true"})
	require.ErrorIs(t, second.ExecuteContext(t.Context()), flowfabric.ErrDuplicateWorkerInstance,
		"a second live process may not take the instance id")

	submit := func(payload string) fftype.ExecutionID {
		t.Helper()
		res, err := c.Create(t.Context(), fftype.CreateParams{Lane: "sh", Kind: "k", Payload: []byte(payload)})
		require.NoError(t, err)
		return res.ID
	}
	waitState := func(id fftype.ExecutionID, want fftype.PublicState) {
		t.Helper()
		require.Eventually(t, func() bool {
			x, err := c.Get(t.Context(), id)
			require.NoError(t, err)
			return x.PublicState() == want
		}, 20*time.Second, 10*time.Millisecond, "%s never became %s:\n%s", id, want, out)
	}

	fast := submit(`"fast"`)
	waitState(fast, fftype.StateCompleted)
	b, err := c.Result(t.Context(), fast)
	require.NoError(t, err)
	require.Equal(t, []byte{0xff, 0xfe}, b, "output that is not text is a binary result")

	cancelled := submit(`"slow"`)
	waitLine(string(cancelled) + " running (k, attempt 0)")
	require.NoError(t, c.Cancel(t.Context(), cancelled, fftype.CancelParams{Reason: "enough"}))
	waitLine(string(cancelled) + " stopped: flowfabric: execution cancelled: enough")

	running := submit(`"slow"`)
	waitLine(string(running) + " running")
	stop()
	require.NoError(t, <-done)
	require.Contains(t, out.String(), string(running)+" released (stopping)")
	x, err := c.Get(t.Context(), running)
	require.NoError(t, err)
	require.Equal(t, fftype.StateWaiting, x.PublicState(), "the stopped worker handed its execution back")
	require.Equal(t, "no live workers in namespace \"default\"\n", cli(t, "workers", "--server", base, "--token", "tok"),
		"the stopped worker deregistered")
}

// TestWorkerRefusesACommandItCannotFind pins that a worker whose command does not exist (a
// misspelt "shh" for "sh") fails at once, before it claims anything, rather than failing
// the attempts of every execution of its lanes.
func TestWorkerRefusesACommandItCannotFind(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	id := strings.Fields(cli(t, "exec", "submit", "--server", base, "--lane", "typo", "--kind", "k", "--payload", `{}`))[0]

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := Run(ctx, []string{"worker", "--server", base, "--lane", "typo", "--once", "--", "no-such-command"}, &out)
	c, cerr := ffclient.New(base, nil)
	require.NoError(t, cerr)
	x, gerr := c.Get(t.Context(), fftype.ExecutionID(id))
	require.NoError(t, gerr)
	require.Equal(t, 0, x.TotalAttempts, "nothing was claimed:\n%s", out.String())
	require.ErrorContains(t, err, "no-such-command")
}

// TestWorkerReportsErrorsOnStderr pins that the worker prints what goes wrong (here the
// claims that fail once its server has stopped) to its error writer, stderr, and what it
// does to its output.
func TestWorkerReportsErrorsOnStderr(t *testing.T) {
	t.Parallel()
	addr, stopServer, served := startServe(t, &serveOptions{shutdown: 10 * time.Second})
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var out, errOut syncBuffer
	root := NewRootCommand(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"worker", "--server", "http://" + addr, "--lane", "l", "--", "true"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "claiming from") }, 20*time.Second, 10*time.Millisecond)

	stopServer()
	require.NoError(t, <-served)
	require.Eventually(t, func() bool { return strings.Contains(errOut.String(), "claim failed") }, 20*time.Second, 10*time.Millisecond,
		"stderr:\n%s\nstdout:\n%s", &errOut, &out)
	stop()
	require.NoError(t, <-done)
	require.NotContains(t, out.String(), "failed", "stdout")
}

// submitOne submits one execution on lane through the CLI and returns its id.
func submitOne(t *testing.T, base, lane string) fftype.ExecutionID {
	t.Helper()
	return fftype.ExecutionID(strings.Fields(cli(t, "exec", "submit", "--server", base, "--lane", lane, "--kind", "k", "--payload", `{}`))[0])
}

// workOnce runs "worker --once" on lane with argv and returns what it printed (output and
// errors) and its error. Its instance id is the lane's, so tests on other lanes may run
// beside it.
func workOnce(t *testing.T, base, lane string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	root := NewRootCommand(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"worker", "--server", base, "--lane", lane, "--instance-id", lane, "--once", "--"}, argv...))
	err := root.ExecuteContext(ctx)
	return out.String() + errOut.String(), err
}

// TestWorkerFailsAttemptWhoseStderrIsNotASCII pins that a command exiting non-zero fails
// its attempt even when its stderr, cut to fit a reason, is multi-byte text or not UTF-8
// at all. A reason cut inside a character, or holding bytes that JSON turns into U+FFFD,
// grew past the server's limit on the way: the fail was refused, the execution handed
// back with no retry counted, and a worker without --once ran the command for ever.
func TestWorkerFailsAttemptWhoseStderrIsNotASCII(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		lane, script string
	}{
		{"euro", `i=0; while [ $i -lt 700 ]; do printf '€'; i=$((i+1)); done >&2; exit 2`},
		{"latin1", `i=0; while [ $i -lt 700 ]; do printf 'caf\351 '; i=$((i+1)); done >&2; exit 2`},
	} {
		t.Run(tc.lane, func(t *testing.T) {
			t.Parallel()
			id := submitOne(t, base, tc.lane)
			out, err := workOnce(t, base, tc.lane, "sh", "-c", tc.script)
			require.Error(t, err)
			x, err := c.Get(t.Context(), id)
			require.NoError(t, err)
			require.Equal(t, 1, x.RetryCount, "the attempt is failed and a retry scheduled (state %s):\n%s", x.PublicState(), out)
		})
	}
}

// TestWorkerFailReasonIsTheEndOfStderr pins that the reason of a failed attempt is the end
// of a long stderr, where the error usually is, not a slice from its middle.
func TestWorkerFailReasonIsTheEndOfStderr(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	id := submitOne(t, base, "stderrend")
	script := `i=0; while [ $i -lt 60 ]; do echo "progress line $i of a long build log" >&2; i=$((i+1)); done; echo "FATAL: disk full" >&2; exit 3`
	out, err := workOnce(t, base, "stderrend", "sh", "-c", script)
	require.Error(t, err, out)
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	attempts, err := c.Attempts(t.Context(), id)
	require.NoError(t, err)
	require.NotEmpty(t, attempts)
	reason := attempts[0].FailureReason
	require.True(t, strings.HasPrefix(reason, "exit status 3: "), "%q", reason)
	require.True(t, strings.HasSuffix(reason, "FATAL: disk full"), "%q", reason)
	require.LessOrEqual(t, len(reason), fftype.MaxReasonBytes)
}

// TestWorkerCompletesWhenABackgroundChildKeepsStdoutOpen pins that a command exiting 0
// completes its execution with what it printed even though a process it started in the
// background still holds its stdout (sh -c 'daemon & echo ok'): the worker stops waiting
// for that output a moment after the exit, and the exit status decides the outcome.
func TestWorkerCompletesWhenABackgroundChildKeepsStdoutOpen(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	id := submitOne(t, base, "bg")
	out, err := workOnce(t, base, "bg", "sh", "-c", "sleep 3 & echo ok")
	require.NoError(t, err, "the command exited 0:\n%s", out)
	require.Contains(t, out, string(id)+" completed")
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	b, err := c.Result(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, `"ok"`, string(b))
}

// TestWorkerStoppedAfterItsCommandExitedKeepsTheOutcome pins that a command that has
// exited 0 when the worker stops (Ctrl-C while it waits for output a daemon the command
// started holds open) completes its execution: handed back, the finished work would run
// again.
func TestWorkerStoppedAfterItsCommandExitedKeepsTheOutcome(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	id := submitOne(t, base, "exited")
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := fmt.Sprintf(`sleep 2 & echo ok; echo $$ > "%s.tmp"; mv "%[1]s.tmp" "%[1]s"`, pidFile)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"worker", "--server", base, "--lane", "exited", "--instance-id", "exited", "--once", "--", "sh", "-c", script}, out)
	}()
	require.Eventually(t, func() bool { _, err := os.Stat(pidFile); return err == nil }, 20*time.Second, 5*time.Millisecond, out)
	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		stat, _ := exec.Command("ps", "-o", "stat=", "-p", strings.TrimSpace(string(b))).Output()
		return len(stat) == 0 // exited, and waited for by the worker
	}, 20*time.Second, 5*time.Millisecond)
	cancel() // Ctrl-C
	require.NoError(t, <-done, out.String())
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	x, err := c.Get(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, fftype.StateCompleted, x.PublicState(), out.String())
}

// TestWorkerStoresNonUTF8StdoutAsBinary pins that output that parses as JSON but is not
// UTF-8 (a quoted Latin-1 string), which the server refuses as a JSON result, is stored
// as a binary result rather than failing an attempt whose command succeeded.
func TestWorkerStoresNonUTF8StdoutAsBinary(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	id := submitOne(t, base, "latin1")
	out, err := workOnce(t, base, "latin1", "sh", "-c", `printf '"caf\351"'`)
	require.NoError(t, err, "the command exited 0:\n%s", out)
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	b, err := c.Result(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, []byte("\"caf\xe9\""), b)
}

// TestWorkerOnceStoppedBeforeAnyWorkFails pins that "worker --once" stopped (Ctrl-C, or
// the SIGTERM of `timeout`) while it waits for work fails: it handled nothing, so
// `flowfabric worker --once … && next-step` must not run next-step.
func TestWorkerOnceStoppedBeforeAnyWorkFails(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"worker", "--server", base, "--lane", "idle", "--once", "--", "true"}, out)
	}()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "claiming from") }, 20*time.Second, 10*time.Millisecond)
	cancel()
	require.ErrorContains(t, <-done, "stopped before it claimed an execution", out.String())
}

// TestWorkerStopsEveryProcessOfACancelledCommand pins that cancelling an execution stops
// the programs its command started as well (a script's sh -c "…", make, npm run), not
// just the command: one left running would finish the cancelled work. The program here
// ignores SIGTERM, so it lasts until the SIGKILL that follows.
func TestWorkerStopsEveryProcessOfACancelledCommand(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	id := submitOne(t, base, "grandchild")
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := fmt.Sprintf(`sh -c 'trap "" TERM; echo $$ > "%s.tmp"; mv "%[1]s.tmp" "%[1]s"; while :; do sleep 1; done'; echo done`, pidFile)

	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(t.Context(), []string{"worker", "--server", base, "--lane", "grandchild", "--instance-id", "grandchild", "--once", "--", "sh", "-c", script}, out)
	}()
	require.Eventually(t, func() bool { _, err := os.Stat(pidFile); return err == nil }, 20*time.Second, 10*time.Millisecond, out)
	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid := strings.TrimSpace(string(b))
	t.Cleanup(func() { _ = exec.Command("kill", "-KILL", pid).Run() }) // should the test fail
	require.NoError(t, c.Cancel(t.Context(), id, fftype.CancelParams{Reason: "stop it"}))
	require.ErrorContains(t, <-done, "stopped", out.String())

	// Gone, or a zombie waiting for whoever adopted it to reap it.
	require.Eventually(t, func() bool {
		stat, _ := exec.Command("ps", "-o", "stat=", "-p", pid).Output()
		return len(stat) == 0 || strings.HasPrefix(string(stat), "Z")
	}, 5*time.Second, 10*time.Millisecond, "the program the cancelled command started still runs:\n%s", out)
}

// TestWorkerStopSignalReachingItsCommandHandsBack pins that a signal that stops the worker
// hands the execution back, as the help says, even when it reaches the running command as
// well (a terminal sends SIGINT to its whole foreground group, systemd SIGTERM to every
// process of the service) and the command dies of it before the worker notices its own:
// the attempt is not failed, no retry is counted.
func TestWorkerStopSignalReachingItsCommandHandsBack(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	bin := buildCLI(t)
	// SIGINT as a terminal's Ctrl-C sends it; SIGTERM as systemctl stop sends it to every
	// process of the service at once.
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			handsBackOnStopSignal(t, c, base, bin, sig)
		})
	}
}

// handsBackOnStopSignal runs four workers whose commands and themselves get sig, the
// command first, and checks that each execution is handed back, not failed.
func handsBackOnStopSignal(t *testing.T, c *ffclient.Client, base, bin string, sig syscall.Signal) {
	type worker struct {
		cmd             *exec.Cmd
		out             *syncBuffer
		id              fftype.ExecutionID
		pid, commandPID int
	}
	workers := make([]worker, 4)
	for i := range workers {
		lane := fmt.Sprintf("stop%d-%d", int(sig), i)
		w := worker{id: submitOne(t, base, lane), out: &syncBuffer{}}
		pidFile := filepath.Join(t.TempDir(), "pid")
		w.cmd = exec.Command(bin, "worker", "--server", base, "--lane", lane, "--instance-id", lane, "--",
			"sh", "-c", `echo $$ > "$0.tmp"; mv "$0.tmp" "$0"; exec sleep 30`, pidFile)
		w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the terminal's foreground group
		w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
		require.NoError(t, w.cmd.Start())
		w.pid = w.cmd.Process.Pid
		t.Cleanup(func() { _ = syscall.Kill(-w.pid, syscall.SIGKILL) })
		require.Eventually(t, func() bool { _, err := os.Stat(pidFile); return err == nil }, 20*time.Second, 5*time.Millisecond, w.out)
		b, err := os.ReadFile(pidFile)
		require.NoError(t, err)
		w.commandPID, err = strconv.Atoi(strings.TrimSpace(string(b)))
		require.NoError(t, err)
		workers[i] = w
	}
	for _, w := range workers {
		// The command first: the order in which the worker could get it wrong.
		require.NoError(t, syscall.Kill(w.commandPID, sig))
		require.NoError(t, syscall.Kill(-w.pid, sig))
	}
	for _, w := range workers {
		require.NoError(t, w.cmd.Wait(), w.out.String())
		x, err := c.Get(t.Context(), w.id)
		require.NoError(t, err)
		require.Equal(t, 0, x.RetryCount, "%s failed the attempt instead of handing it back:\n%s", sig, w.out)
		require.Equal(t, fftype.StateWaiting, x.PublicState(), w.out.String())
	}
}

// TestWorkerStopBeforeTheCommandStartsHandsBack pins that a stop which lands after the
// claim and before the command starts (exec starts nothing under an ended context) hands
// the execution back like any other stop, rather than failing the attempt.
func TestWorkerStopBeforeTheCommandStartsHandsBack(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	id := submitOne(t, base, "early")
	c, err := ffclient.New(base, nil)
	require.NoError(t, err)
	wk, err := flowfabric.NewWorker(t.Context(), c, &flowfabric.WorkerConfig{WorkerID: "w", WorkerInstanceID: "early", Lanes: []string{"early"}}, nil)
	require.NoError(t, err)
	defer wk.Close(t.Context())
	task, err := wk.ClaimNext(t.Context())
	require.NoError(t, err)
	require.NotNil(t, task)

	out := &syncBuffer{}
	w := &shellWorker{c: c, out: out, errOut: out, argv: []string{"true"}}
	stopped, stop := context.WithCancel(t.Context())
	stop() // the worker is stopping before the command starts
	require.ErrorIs(t, w.handle(stopped, task), errStopping, out.String())
	x, err := c.Get(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, 0, x.RetryCount, "the stop failed the attempt:\n%s", out)
	require.Equal(t, fftype.StateWaiting, x.PublicState(), out.String())
}
