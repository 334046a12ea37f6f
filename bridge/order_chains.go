package bridge

import (
	"container/list"
	"context"
	"log/slog"
	"time"
)

// chainTable is the Orderer's chains in memory, indexed by position key,
// and in order of last activity, overall and per publisher: the least
// recently active quiet chain is the one evicted at a limit, and idle
// ones are found from the front. Every method runs under the Orderer's
// lock.
type chainTable struct {
	byKey map[string]*orderedChain
	lru   *list.List            // of *orderedChain, least recently active first
	byPub map[string]*list.List // publisher hex → its chains, least recently active first
}

func newChainTable() chainTable {
	return chainTable{byKey: make(map[string]*orderedChain), lru: list.New(), byPub: make(map[string]*list.List)}
}

func (t *chainTable) add(c *orderedChain, publisher string, now time.Time) {
	c.publisher, c.active = publisher, now
	t.byKey[c.key] = c
	c.elem = t.lru.PushBack(c)
	l := t.byPub[publisher]
	if l == nil {
		l = list.New()
		t.byPub[publisher] = l
	}
	c.pubElem = l.PushBack(c)
}

// touch marks c active now.
func (t *chainTable) touch(c *orderedChain, now time.Time) {
	c.active = now
	t.lru.MoveToBack(c.elem)
	t.byPub[c.publisher].MoveToBack(c.pubElem)
}

func (t *chainTable) remove(c *orderedChain) {
	delete(t.byKey, c.key)
	t.lru.Remove(c.elem)
	l := t.byPub[c.publisher]
	l.Remove(c.pubElem)
	if l.Len() == 0 {
		delete(t.byPub, c.publisher)
	}
}

// logLimit lets one kind of log line through at most once per interval
// and counts those held back, so that a peer causing warnings at will
// costs a line per interval.
type logLimit struct {
	last       time.Time
	suppressed int
}

// warnOnce writes a warning of kind key unless one was written within
// LogInterval.
func (o *Orderer) warnOnce(key, msg string, args ...any) {
	o.logOnce(slog.LevelWarn, key, msg, args...)
}

// infoOnce is warnOnce at info level.
func (o *Orderer) infoOnce(key, msg string, args ...any) {
	o.logOnce(slog.LevelInfo, key, msg, args...)
}

func (o *Orderer) logOnce(level slog.Level, key, msg string, args ...any) {
	now := o.cfg.Now()
	o.logMu.Lock()
	defer o.logMu.Unlock()
	l := o.warned[key]
	if l == nil {
		l = &logLimit{}
		o.warned[key] = l
	} else if now.Sub(l.last) < o.cfg.LogInterval {
		l.suppressed++
		return
	}
	if l.suppressed > 0 {
		args = append(args, "suppressed", l.suppressed)
	}
	l.last, l.suppressed = now, 0
	o.log.Log(context.Background(), level, msg, args...)
}
