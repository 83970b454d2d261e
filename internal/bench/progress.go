package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress is how far a running scenario got.
type Progress struct {
	// Phase is what is running: "seed", "drain" or "run" (a timed run).
	Phase string
	// Done of Total, counted in Unit: "executions" for seeding and draining, "s" for a
	// timed run.
	Done, Total int
	Unit        string
	// Completed counts the completions so far.
	Completed int
}

// ProgressFunc receives a scenario's progress about every half second, from one goroutine
// at a time.
type ProgressFunc func(Progress)

// plainEvery is how often a [ProgressBar] on a writer that is not a terminal prints a line.
const plainEvery = 10 * time.Second

// barWidth is the number of cells of the bar.
const barWidth = 30

// ProgressBar shows a scenario's progress on a writer. On a terminal it redraws one line
// in place and [ProgressBar.Clear] erases it; on anything else (a file, a pipe, a test's
// buffer) it prints a plain line at most every 10 seconds, so short runs print nothing.
// Its Report method is a [ProgressFunc]. It is safe for concurrent use.
type ProgressBar struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	drawn bool      // tty: a line is on screen
	last  time.Time // plain: when the last line was printed
	start time.Time
}

// NewProgressBar returns a bar drawing on w, in place when w is a terminal.
func NewProgressBar(w io.Writer) *ProgressBar {
	return newProgressBar(w, isTerminal(w), time.Now())
}

func newProgressBar(w io.Writer, tty bool, now time.Time) *ProgressBar {
	return &ProgressBar{w: w, tty: tty, last: now, start: now}
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Report shows p: redraws the line on a terminal, or prints it if the last line is 10
// seconds old.
func (b *ProgressBar) Report(p Progress) { b.report(p, time.Now()) }

func (b *ProgressBar) report(p Progress, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty {
		fmt.Fprintf(b.w, "\r%s\x1b[K", b.line(p, now))
		b.drawn = true
		return
	}
	if now.Sub(b.last) >= plainEvery {
		fmt.Fprintln(b.w, b.line(p, now))
		b.last = now
	}
}

// line renders p: "drain [#########.....] 45% 4500/10000 executions, 1234 completed, 12s".
func (b *ProgressBar) line(p Progress, now time.Time) string {
	frac := 0.0
	if p.Total > 0 {
		frac = min(1, max(0, float64(p.Done)/float64(p.Total)))
	}
	filled := int(frac * barWidth)
	s := fmt.Sprintf("%s [%s%s] %3.0f%% %d/%d %s", p.Phase, strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled),
		100*frac, p.Done, p.Total, p.Unit)
	if p.Unit != "executions" {
		s += fmt.Sprintf(", %d completed", p.Completed)
	}
	return s + fmt.Sprintf(", %s", now.Sub(b.start).Truncate(time.Second))
}

// Clear erases the bar's line on a terminal, so that what is printed next starts on a
// clean line. Elsewhere it does nothing.
func (b *ProgressBar) Clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && b.drawn {
		fmt.Fprint(b.w, "\r\x1b[K")
		b.drawn = false
	}
}
