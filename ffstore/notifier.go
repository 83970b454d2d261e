package ffstore

import (
	"context"
	"sync"
)

// Notifier is a building block for [ChangeNotifier]: Notify wakes every channel handed out
// by Changes, coalescing wake-ups so that a slow reader never blocks Notify. The zero value
// is ready to use.
type Notifier struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// Notify wakes every current subscriber without blocking.
func (n *Notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// Changes returns a channel that receives a value after each Notify (coalesced: at most
// one wake-up is pending), and is closed when ctx ends.
func (n *Notifier) Changes(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.subs == nil {
		n.subs = map[chan struct{}]struct{}{}
	}
	n.subs[ch] = struct{}{}
	n.mu.Unlock()
	go func() {
		<-ctx.Done()
		n.mu.Lock()
		delete(n.subs, ch)
		close(ch)
		n.mu.Unlock()
	}()
	return ch
}
