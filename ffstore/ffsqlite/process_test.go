package ffsqlite_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/fftype"
)

// The tests in this file run real OS processes on one file: the test binary re-executes
// itself with -test.run=^TestHelperProcess$ and the environment variables below.
const (
	envHelper = "FFSQLITE_HELPER" // the helper's job: "pop" or "crash"
	envPath   = "FFSQLITE_PATH"   // the store's file
	envName   = "FFSQLITE_NAME"   // the helper's name, written into what it writes
)

const workQueue = "work"

// The pop helper named victim does not exit when the queue runs dry: it prints idleLine
// and waits to be killed, so TestTwoProcesses always kills a live process.
const (
	victim   = "a"
	idleLine = "IDLE"
)

// TestHelperProcess is not a test: it is the body of the helper processes. Each unit a
// helper acknowledges is printed on its own line of stdout only after Update returned nil.
func TestHelperProcess(t *testing.T) {
	job := os.Getenv(envHelper)
	if job == "" {
		return // run as an ordinary test: nothing to do
	}
	ctx := context.Background()
	s, err := ffsqlite.Open(ctx, os.Getenv(envPath), &ffsqlite.Options{BusyTimeout: fftestBusyTimeout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	name := os.Getenv(envName)
	var out sync.Mutex
	ack := func(s string) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintln(os.Stdout, s) // unbuffered: one write(2) per line
	}
	var wg sync.WaitGroup
	var failed atomic.Bool
	switch job {
	case "pop":
		for range 4 {
			wg.Go(func() {
				for !failed.Load() {
					member, err := popOne(ctx, s, name)
					if err != nil {
						fmt.Fprintln(os.Stderr, "pop:", err)
						failed.Store(true)
						return
					}
					if member == "" {
						return // the queue is empty
					}
					ack(member)
				}
			})
		}
	case "crash":
		var next atomic.Int64
		for range 8 {
			wg.Go(func() {
				for !failed.Load() {
					i := next.Add(1)
					if err := writePair(ctx, s, i); err != nil {
						fmt.Fprintln(os.Stderr, "write:", err)
						failed.Store(true)
						return
					}
					ack(strconv.FormatInt(i, 10))
				}
			})
		}
	}
	wg.Wait()
	if failed.Load() {
		os.Exit(3)
	}
	if job == "pop" && name == victim {
		// The parent kills the victim: it must still be alive then, even if the queue
		// ran dry before the parent read enough acknowledgements.
		fmt.Println(idleLine)
		select {}
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		os.Exit(4)
	}
	os.Exit(0)
}

// fftestBusyTimeout is generous: under -race a unit of the other process can be slow.
const fftestBusyTimeout = 30 * time.Second

// popOne pops one item of the work queue and records it as done by name, noting a
// duplicate if the item was done before. It returns "" when the queue is empty.
func popOne(ctx context.Context, s ffstore.Store, name string) (string, error) {
	var member string
	err := s.Update(ctx, 0, func(tx ffstore.Tx) error {
		member = ""
		items, err := tx.PopDue(workQueue, ffstore.MaxScore, 1)
		if err != nil || len(items) == 0 {
			return err
		}
		member = items[0].Member
		if _, ok, err := tx.Get("done:" + member); err != nil {
			return err
		} else if ok {
			tx.Put("dup:"+member, []byte(name))
		}
		tx.Put("done:"+member, []byte(name))
		tx.AppendEvent(fftype.Event{Type: fftype.EventClaimed, Lane: name, Data: []byte(strconv.Quote(member))})
		return nil
	})
	return member, err
}

// writePair writes unit i: two records and one event, which must exist together or not
// at all.
func writePair(ctx context.Context, s ffstore.Store, i int64) error {
	return s.Update(ctx, 0, func(tx ffstore.Tx) error {
		v := []byte(strconv.FormatInt(i, 10))
		tx.Put("a:"+string(v), v)
		tx.Put("b:"+string(v), v)
		tx.AppendEvent(fftype.Event{Type: fftype.EventCreated, Data: v})
		return nil
	})
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	lines chan string // acknowledged units, closed at EOF
	done  chan error  // the process's exit
}

func startHelper(t *testing.T, job, path, name string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelper+"="+job, envPath+"="+path, envName+"="+name)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &helper{cmd: cmd, lines: make(chan string, 1<<16), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		_, _ = io.Copy(io.Discard, stdout)
		h.done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return h
}

// collect reads h's acknowledgements until EOF and returns them with the exit error.
func (h *helper) collect() ([]string, error) {
	var acks []string
	for l := range h.lines {
		if l != idleLine {
			acks = append(acks, l)
		}
	}
	return acks, <-h.done
}

func isKilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestTwoProcesses has two processes pop one shared queue, one of them SIGKILLed midway.
// Every item must be popped exactly once and every acknowledged pop must be in the file.
func TestTwoProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ff.db")
	const items = 1500

	s, err := ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		for i := range items {
			tx.QueueAdd(workQueue, fmt.Sprintf("m%05d", i), int64(i%97))
		}
		return nil
	}))
	require.NoError(t, s.Close())

	a := startHelper(t, "pop", path, victim)
	b := startHelper(t, "pop", path, "b")

	// Kill a once it has acknowledged some pops, while both are running.
	var ackedA []string
	for l := range a.lines {
		if l != idleLine {
			ackedA = append(ackedA, l)
		}
		if len(ackedA) == 100 || l == idleLine {
			require.NoError(t, a.cmd.Process.Signal(syscall.SIGKILL))
			break
		}
	}
	restA, errA := a.collect()
	ackedA = append(ackedA, restA...)
	ackedB, errB := b.collect()
	require.True(t, isKilled(errA), "a should have been killed, got %v", errA)
	require.NoError(t, errB, "b")
	require.Less(t, len(ackedA), items, "a finished before it was killed")
	t.Logf("a acknowledged %d pops before SIGKILL, b %d", len(ackedA), len(ackedB))

	// Finish whatever is left (b normally took everything).
	s, err = ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
	defer s.Close()
	var rest int
	for {
		m, err := popOne(ctx, s, "test")
		require.NoError(t, err)
		if m == "" {
			break
		}
		rest++
	}
	t.Logf("the test popped %d left over", rest)

	acked := map[string]string{}
	for name, list := range map[string][]string{"a": ackedA, "b": ackedB} {
		for _, m := range list {
			prev, dup := acked[m]
			require.False(t, dup, "%s acknowledged by %s and %s", m, prev, name)
			acked[m] = name
		}
	}
	require.NoError(t, s.View(ctx, 0, func(tx ffstore.ReadTx) error {
		for i := range items {
			m := fmt.Sprintf("m%05d", i)
			by, ok, err := tx.Get("done:" + m)
			require.NoError(t, err)
			require.True(t, ok, "%s was never popped", m)
			if name, ok := acked[m]; ok {
				require.Equal(t, name, string(by), "%s acknowledged by %s but recorded by %s", m, name, by)
			}
			_, dup, err := tx.Get("dup:" + m)
			require.NoError(t, err)
			require.False(t, dup, "%s popped twice", m)
		}
		left, err := tx.Range(workQueue, nil, ffstore.MaxScore, 10)
		require.NoError(t, err)
		require.Empty(t, left)
		return nil
	}))
	evs, err := s.ReadEvents(ctx, 0, 0, 2*items)
	require.NoError(t, err)
	require.Len(t, evs, items, "one event per pop")
	for i, ev := range evs {
		require.Equal(t, uint64(i+1), ev.Seq)
	}
}

// TestCrashSafety SIGKILLs a process while its units are in flight: afterwards every
// acknowledged unit is in the file, and every unit is there whole or not at all.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ff.db")
	s, err := ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	h := startHelper(t, "crash", path, "c")
	var acked []string
	for l := range h.lines {
		acked = append(acked, l)
		if len(acked) == 400 {
			require.NoError(t, h.cmd.Process.Signal(syscall.SIGKILL))
			break
		}
	}
	rest, err := h.collect()
	acked = append(acked, rest...)
	require.True(t, isKilled(err), "the helper should have been killed, got %v", err)

	s, err = ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
	defer s.Close()
	evs, err := s.ReadEvents(ctx, 0, 0, 1_000_000)
	require.NoError(t, err)
	inLog := map[int64]bool{}
	var maxI int64
	for i, ev := range evs {
		require.Equal(t, uint64(i+1), ev.Seq, "sequence has a gap")
		n, err := strconv.ParseInt(string(ev.Data), 10, 64)
		require.NoError(t, err)
		require.False(t, inLog[n], "unit %d logged twice", n)
		inLog[n] = true
		maxI = max(maxI, n)
	}
	for _, l := range acked {
		n, err := strconv.ParseInt(l, 10, 64)
		require.NoError(t, err)
		require.True(t, inLog[n], "acknowledged unit %d is lost", n)
	}
	t.Logf("%d units acknowledged, %d committed", len(acked), len(evs))
	require.NoError(t, s.View(ctx, 0, func(tx ffstore.ReadTx) error {
		// Units were numbered from 1; those in flight at the kill are at most a few
		// dozen past the last committed one.
		for n := int64(1); n <= maxI+100; n++ {
			k := strconv.FormatInt(n, 10)
			_, okA, err := tx.Get("a:" + k)
			require.NoError(t, err)
			_, okB, err := tx.Get("b:" + k)
			require.NoError(t, err)
			require.Equal(t, inLog[n], okA, "unit %d: record a vs event", n)
			require.Equal(t, inLog[n], okB, "unit %d: record b vs event", n)
		}
		return nil
	}))
}
