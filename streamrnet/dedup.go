package streamrnet

import "sync"

// dedup remembers the last n keys: messages several proxies deliver are
// passed on once. A message older than the window can come twice; the
// receiver's ordering drops it then (it is behind its chain).
type dedup struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newDedup(n int) *dedup {
	return &dedup{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

// seen records key and reports whether it was already there.
func (d *dedup) seen(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.set[key]; ok {
		return true
	}
	if old := d.ring[d.next]; old != "" {
		delete(d.set, old)
	}
	d.ring[d.next] = key
	d.next = (d.next + 1) % len(d.ring)
	d.set[key] = struct{}{}
	return false
}
