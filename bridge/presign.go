package bridge

import (
	"context"
	"math"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// presignedLog is a Log whose group commit can sign readings before it
// writes them (storage.Store): New hands it the pipeline's signer, so a
// reading is written once, signed, instead of pending and again signed.
type presignedLog interface {
	SetPresigner(storage.Presigner)
}

// DefaultPresignMax is the slowest signature the group commit waits for,
// as calibrated at start (Config.PresignMax). Software keys sign in tens of µs (a few
// hundred on a Pi); hardware keys (ATECC608 ~200 ms, discrete TPMs tens of
// ms) are left to the background signer, so that they never hold up
// PUBACKs.
const DefaultPresignMax = 2 * time.Millisecond

// presignStallSignature stops presigning if the moving average of
// signature wall time grows this large after calibration (a key that
// became slow). It is well above DefaultPresignMax because a busy CPU
// inflates wall time, and every batch not presigned stays pending until
// the background signer catches up.
const presignStallSignature = 20 * time.Millisecond

// calibrationRounds is how many signatures calibration takes at most; the
// fastest counts, as scheduling delays only add time.
const calibrationRounds = 3

// calibrationPayload is signed at start to learn the signer's speed
// before the first batch. The signatures are discarded.
var calibrationPayload = []byte("tributary: signing speed calibration, not a message")

// calibrate measures the signer's speed once.
func (s *signer) calibrate(ctx context.Context) {
	if s.calibrated.Load() != 0 || s.p.cfg.PresignMax < 0 {
		return
	}
	fastest := time.Duration(math.MaxInt64)
	for range calibrationRounds {
		start := time.Now()
		if _, err := s.p.cfg.Signer.Sign(ctx, calibrationPayload); err != nil {
			s.p.log.Warn("signing speed calibration failed; readings are signed after they are stored", "err", err)
			return
		}
		fastest = min(fastest, time.Since(start))
		if fastest > max(s.p.cfg.PresignMax, DefaultPresignMax) {
			break // a slow key: one signature tells
		}
	}
	s.calibrated.Store(int64(fastest))
	s.p.log.Info("signing speed measured", "per_signature", fastest.String(),
		"sign_in_commit", fastest <= time.Duration(s.maxPresign.Load()))
}

// observeFastest lowers the calibrated speed to d if d is faster. A key
// calibrated as too slow to sign in the commit (on a CPU busy at start)
// begins to once one of its signatures shows it is fast enough.
func (s *signer) observeFastest(d time.Duration) {
	for {
		cal := s.calibrated.Load()
		if cal == 0 || int64(d) >= cal {
			return // not calibrated (never presigning), or not faster
		}
		if s.calibrated.CompareAndSwap(cal, int64(d)) {
			if limit := s.maxPresign.Load(); cal > limit && int64(d) <= limit {
				s.p.log.Info("signing speed measured again: signing in the commit from now on", "per_signature", d.String())
			}
			return
		}
	}
}

// Presign implements storage.Presigner. It declines (nil) for a slow or
// uncalibrated signer and while the clock policy holds readings; the
// store then keeps the readings pending for Run.
func (s *signer) Presign(ctx context.Context, readings []storage.Reading) ([]storage.Signed, map[string]streamr.ChainState, error) {
	p := s.p
	cal := time.Duration(s.calibrated.Load())
	if cal == 0 || cal > time.Duration(s.maxPresign.Load()) || time.Duration(s.perSignature.Load()) > presignStallSignature {
		return nil, nil, nil
	}
	if p.cfg.HoldUnsynced && !p.cfg.Clock.Synced() {
		return nil, nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	msgs, dirty, err := s.sign(ctx, readings)
	if err != nil {
		s.forget(dirty)
		return nil, nil, err
	}
	s.presignedMu.Lock()
	s.presigned = append(s.presigned, presignedBatch{readings: readings, chains: dirty})
	s.presignedMu.Unlock()
	return msgs, dirty, nil
}

// Committed implements storage.Presigner. The store reports batches in
// the order it presigned them, and acknowledges a batch's readings only
// after Committed returns: a successful commit is reported without s.mu,
// which the next batch's Presign may be holding while it signs.
func (s *signer) Committed(_ []storage.Signed, err error) {
	s.presignedMu.Lock()
	if len(s.presigned) == 0 {
		s.presignedMu.Unlock()
		return
	}
	batch := s.presigned[0]
	s.presigned[0] = presignedBatch{}
	s.presigned = s.presigned[1:]
	s.presignedMu.Unlock()
	if err != nil {
		s.mu.Lock()
		s.forget(batch.chains) // the chain states in memory ran ahead of storage
		s.mu.Unlock()
		return
	}
	s.committed(batch.readings)
}
