package ffcli

import (
	"os/exec"
	"time"
)

// stopGrace is how long a stopped command, and every process it started, has to end after
// SIGTERM before it is killed. It is also how long the worker waits, once a command has
// exited, for output still held open by a process the command left running.
const stopGrace = time.Second

// procGroup stops a command together with the processes it started (a script's programs:
// sh -c "…", make, npm run): on Unix the command runs in a process group of its own, and
// stopping it sends SIGTERM to the whole group, then SIGKILL to whatever is left of it
// stopGrace later. Elsewhere only the command itself is killed.
type procGroup struct {
	cmd *exec.Cmd
	// signalledAt is when the group was told to stop; zero if it was not. Set by cmd's
	// Cancel, which cmd.Wait waits for, so it is read safely once Wait has returned.
	signalledAt time.Time
}

// newProcGroup makes cmd, created with [exec.CommandContext], start in a process group of
// its own and stop that group, as [procGroup] says, when its context ends.
func newProcGroup(cmd *exec.Cmd) *procGroup {
	g := &procGroup{cmd: cmd}
	startOwnGroup(cmd)
	cmd.Cancel = g.terminate
	cmd.WaitDelay = stopGrace
	return g
}

// terminate asks the command's group to end. It returns os.ErrProcessDone, and signals
// nothing, if the command has already ended on its own, so that exec keeps its outcome.
func (g *procGroup) terminate() error {
	if err := terminateGroup(g.cmd.Process); err != nil {
		return err
	}
	g.signalledAt = time.Now()
	return nil
}

// signalled reports whether the command was told to stop before it ended. Call it once
// cmd.Wait has returned.
func (g *procGroup) signalled() bool { return !g.signalledAt.IsZero() }

// reap, called once cmd.Wait has returned, waits for what is left of a group told to stop
// to end, until stopGrace after the signal, then kills it: a program the command started
// must not go on with the work of an execution that was cancelled or handed back.
func (g *procGroup) reap() {
	if !g.signalled() {
		return
	}
	pid := g.cmd.Process.Pid
	deadline := g.signalledAt.Add(stopGrace)
	for !groupGone(pid) {
		if !time.Now().Before(deadline) {
			killGroup(pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
