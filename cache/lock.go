package cache

import (
	"context"
	"sync"
)

// keyedLock is a set of mutexes by name whose Lock gives up when ctx is
// done, so a cancelled build does not wait for someone else's download.
type keyedLock struct {
	mu   sync.Mutex
	held map[string]chan struct{} // closed when the holder unlocks
}

func (k *keyedLock) lock(ctx context.Context, key string) (unlock func(), err error) {
	for {
		k.mu.Lock()
		if k.held == nil {
			k.held = make(map[string]chan struct{})
		}
		ch, busy := k.held[key]
		if !busy {
			ch = make(chan struct{})
			k.held[key] = ch
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.held, key)
				k.mu.Unlock()
				close(ch)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
