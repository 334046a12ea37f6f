package bridge

import (
	"context"
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

// presignMaxSignature is the slowest average signature (wall time) the
// group commit waits for. Software keys sign in tens of µs (a few hundred
// on a Pi, more on a busy CPU); hardware keys (ATECC608 ~200 ms, discrete
// TPMs tens of ms) are left to the background signer, so that they never
// hold up PUBACKs.
const presignMaxSignature = 2 * time.Millisecond

// calibrationPayload is signed once at start to learn the signer's
// speed before the first batch: a batch that is not presigned stays
// pending, and under sustained load the signer might not catch up for
// presigning to resume. The signature is discarded.
var calibrationPayload = []byte("tributary: signing speed calibration, not a message")

// calibrate measures one signature, unless one was measured already.
func (s *signer) calibrate(ctx context.Context) {
	if s.perSignature.Load() != 0 {
		return
	}
	start := time.Now()
	if _, err := s.p.cfg.Signer.Sign(ctx, calibrationPayload); err != nil {
		s.p.log.Warn("signing speed calibration failed; readings are signed after they are stored", "err", err)
		return
	}
	took := time.Since(start)
	s.observeSignature(took)
	s.p.log.Info("signing speed measured", "per_signature", took.String(),
		"sign_in_commit", took <= time.Duration(s.maxPresign.Load()))
}

// Presign implements storage.Presigner. It declines (nil) while the
// signing speed is unknown or too slow, and while the clock policy holds
// readings; the store then keeps the readings pending for Run.
func (s *signer) Presign(ctx context.Context, readings []storage.Reading) ([]storage.Signed, map[string]streamr.ChainState, error) {
	p := s.p
	per := time.Duration(s.perSignature.Load())
	if per == 0 || per > time.Duration(s.maxPresign.Load()) {
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
	s.presigned.readings, s.presigned.chains = readings, dirty
	return msgs, dirty, nil
}

// Committed implements storage.Presigner.
func (s *signer) Committed(_ []storage.Signed, err error) {
	s.mu.Lock()
	batch := s.presigned
	s.presigned.readings, s.presigned.chains = nil, nil
	if err != nil {
		s.forget(batch.chains) // the chain states in memory ran ahead of storage
	}
	s.mu.Unlock()
	if err == nil {
		s.committed(batch.readings)
	}
}
