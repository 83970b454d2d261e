//go:build unix

package ffcli

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"syscall"
)

// startOwnGroup makes cmd start in a process group of its own, which the processes it
// starts join. The group can be stopped as a whole, and a terminal's Ctrl-C, sent to the
// worker's foreground group, reaches the worker only: the worker, not the terminal,
// decides how its commands stop.
func startOwnGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminateGroup sends SIGTERM to the process group p leads. It returns os.ErrProcessDone
// if p has already ended (and been waited for), or its group is empty.
func terminateGroup(p *os.Process) error {
	if err := p.Signal(syscall.Signal(0)); err != nil {
		return err
	}
	err := syscall.Kill(-p.Pid, syscall.SIGTERM)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// groupGone reports whether no process is left in the process group pgid.
func groupGone(pgid int) bool { return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) }

// killGroup sends SIGKILL to the process group pgid.
func killGroup(pgid int) { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

// byStopSignal reports whether a command that ran, ending in ps, was killed by one of the
// signals that stop the worker too (stopSignals).
func byStopSignal(ps *os.ProcessState) bool {
	if ps == nil {
		return false
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && slices.Contains(stopSignals, os.Signal(ws.Signal()))
}
