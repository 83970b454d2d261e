//go:build !unix

package ffcli

import (
	"os"
	"os/exec"
)

// startOwnGroup does nothing: process groups are a Unix notion.
func startOwnGroup(*exec.Cmd) {}

// terminateGroup kills p; the processes it started are left alone. It returns
// os.ErrProcessDone if p has already ended.
func terminateGroup(p *os.Process) error { return p.Kill() }

// groupGone reports true: there is no group to wait for.
func groupGone(int) bool { return true }

// killGroup does nothing: there is no group to kill.
func killGroup(int) {}

// byStopSignal reports false: a signal does not show in how a command ended here.
func byStopSignal(*os.ProcessState) bool { return false }
