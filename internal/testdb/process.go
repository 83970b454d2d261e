package testdb

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// serverLog keeps the last lines a server printed, for error messages.
type serverLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *serverLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	if len(l.lines) > 50 {
		l.lines = l.lines[len(l.lines)-50:]
	}
}

func (l *serverLog) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// awaitReady follows the output of a started server process until it prints a line
// containing ready, and returns a channel closed when the process exits. If the process
// exits first, or timeout passes (the process is then killed), it returns an error with
// the last lines printed. name names the server in errors.
func awaitReady(cmd *exec.Cmd, out io.Reader, log *serverLog, ready, name string, timeout time.Duration) (chan struct{}, error) {
	readyCh := make(chan struct{})
	exited := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			log.add(line)
			if strings.Contains(line, ready) {
				once.Do(func() { close(readyCh) })
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-readyCh:
		return exited, nil
	case <-exited:
		return nil, fmt.Errorf("testdb: %s exited during start:\n%s", name, log.tail())
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("testdb: %s did not start within %s:\n%s", name, timeout, log.tail())
	}
}
