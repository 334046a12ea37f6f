package statuspage

import (
	"log/slog"
	"math"
	"time"
)

// sampler turns successive snapshots of counters into rates, sparklines,
// last-message times and the backlog's drain progress.
type sampler struct {
	history     int
	logInterval time.Duration
	log         *slog.Logger
	start       time.Time

	seq      uint64
	last     time.Time
	readings uint64
	parts    map[string]*partHistory
	drain    *drainState
}

type partHistory struct {
	total   uint64 // messages in + out at the last sample
	rate    []float64
	lastMsg *time.Time
}

type drainState struct {
	since     time.Time
	peak      uint64
	prev      uint64
	rate      float64 // messages per second, smoothed
	lastLog   time.Time
	logged    bool
	lastShown uint64
}

func newSampler(history int, logInterval time.Duration, log *slog.Logger) *sampler {
	return &sampler{history: history, logInterval: logInterval, log: log, parts: make(map[string]*partHistory)}
}

// add completes st, sampled at now.
func (s *sampler) add(st *Status, now time.Time, interval time.Duration) {
	if s.start.IsZero() {
		s.start = now
	}
	s.seq++
	st.SchemaVersion, st.Seq, st.Time = SchemaVersion, s.seq, now.UTC()
	st.SampleSeconds = interval.Seconds()
	if st.UptimeSeconds == 0 {
		st.UptimeSeconds = now.Sub(s.start).Seconds()
	}
	dt := now.Sub(s.last).Seconds()
	first := s.last.IsZero() || dt <= 0
	s.last = now
	if !first {
		st.Readings.RatePerSecond = perSecond(st.Readings.In, s.readings, dt)
	}
	s.readings = st.Readings.In
	seen := make(map[string]bool, len(st.Partitions))
	for i := range st.Partitions {
		s.addPart(&st.Partitions[i], now, dt, first)
		seen[st.Partitions[i].ID] = true
	}
	for id := range s.parts {
		if !seen[id] {
			delete(s.parts, id) // left: its history goes with it
		}
	}
	if st.Forward != nil {
		st.Forward.Drain = s.addDrain(st.Forward.BacklogMessages, now, dt)
	}
}

func (s *sampler) addPart(p *Partition, now time.Time, dt float64, first bool) {
	h, ok := s.parts[p.ID]
	total := p.MessagesIn + p.MessagesOut
	if !ok {
		h = &partHistory{total: total}
		s.parts[p.ID] = h
	} else if !first {
		p.RatePerSecond = perSecond(total, h.total, dt)
		if total > h.total {
			t := now.UTC()
			h.lastMsg = &t
		}
		h.total = total
	}
	h.rate = append(h.rate, p.RatePerSecond)
	if len(h.rate) > s.history {
		h.rate = h.rate[len(h.rate)-s.history:]
	}
	p.Rate = append([]float64(nil), h.rate...)
	p.LastMessage = h.lastMsg
}

// drainMin is the backlog below which no drain is reported: a few
// messages in flight are no backlog.
const drainMin = 1024

// addDrain follows a backlog from when it grows past drainMin until it is
// gone, logging its progress every logInterval while it shrinks.
func (s *sampler) addDrain(backlog uint64, now time.Time, dt float64) *Drain {
	d := s.drain
	if d == nil {
		if backlog < drainMin {
			return nil
		}
		d = &drainState{since: now, peak: backlog, prev: backlog}
		s.drain = d
	}
	if backlog == 0 {
		if d.logged {
			s.log.Info("forward backlog drained", "peak", d.peak, "took", now.Sub(d.since).Round(time.Second).String())
		}
		s.drain = nil
		return nil
	}
	if dt > 0 && d.prev >= backlog {
		// Smoothed over about ten samples, so one slow second does not
		// swing the ETA.
		d.rate += (float64(d.prev-backlog)/dt - d.rate) / 10
	}
	d.prev = backlog
	d.peak = max(d.peak, backlog)
	out := &Drain{
		Since: d.since.UTC(), Peak: d.peak, Remaining: backlog,
		Percent:       100 * float64(d.peak-backlog) / float64(d.peak),
		RatePerSecond: d.rate,
	}
	if d.rate > 0.5 {
		eta := float64(backlog) / d.rate
		out.ETASeconds = &eta
	}
	s.logDrain(d, out, now)
	return out
}

func (s *sampler) logDrain(d *drainState, out *Drain, now time.Time) {
	if now.Sub(d.lastLog) < s.logInterval || out.Remaining == d.lastShown {
		return
	}
	d.lastLog, d.logged, d.lastShown = now, true, out.Remaining
	attrs := []any{"remaining", out.Remaining, "peak", out.Peak, "percent", int(out.Percent), "rate_per_second", int(out.RatePerSecond)}
	if out.ETASeconds != nil {
		attrs = append(attrs, "eta", (time.Duration(*out.ETASeconds) * time.Second).String())
	}
	s.log.Info("forward backlog draining", attrs...)
}

// perSecond is the rate between two counter samples, to 0.01/s: finer
// digits would only lengthen every snapshot's sparklines.
func perSecond(now, before uint64, dt float64) float64 {
	if now < before || dt <= 0 {
		return 0 // a counter reset (restart): no rate for this sample
	}
	return math.Round(100*float64(now-before)/dt) / 100
}
