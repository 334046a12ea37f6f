package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/systemd"
)

// serve runs every part until ctx is cancelled or any part fails, then
// stops them in dependency order: the broker stops taking readings first,
// storage commits what was queued, the signer signs every pending
// reading, the forwarder sends what it can, and only then does the
// overlay close. The parts form one tree: the back (storage, signer,
// overlay side) fails the front (broker, HTTP, watchdog, status) and the
// front's end stops the back, so a failing part stops the gateway with
// its error and systemd restarts it. ready is called once the gateway
// serves.
func (s *system) serve(ctx context.Context, ready func()) error {
	work, failed := errgroup.WithContext(context.WithoutCancel(ctx))
	pages, err := s.newStatusPage(failed)
	if err != nil {
		return err
	}
	appendCtx, stopAppends := context.WithCancel(failed)
	signCtx, stopSigning := context.WithCancel(failed)
	netCtx, stopNet := context.WithCancel(failed)
	defer stopAppends()
	defer stopSigning()
	defer stopNet()
	st := stages{
		failed:   failed,
		appends:  stage{stopAppends, goDone(work, func() error { return s.store.Run(appendCtx) })},
		signing:  stage{stopSigning, goDone(work, func() error { return s.pipeline.Run(signCtx) })},
		stopRest: stopNet,
	}
	s.runNet(netCtx, work)

	frontCtx, stopFront := context.WithCancelCause(ctx)
	defer stopFront(nil)
	stopOnFailure := context.AfterFunc(failed, func() { stopFront(context.Cause(failed)) })
	defer stopOnFailure()
	front, frontCtx := errgroup.WithContext(frontCtx)
	front.Go(func() error { return s.broker.Run(frontCtx) })
	front.Go(func() error { return s.reloadOnHangup(frontCtx) })
	// The status sampler runs without the HTTP API too: it logs a
	// backlog's drain progress.
	front.Go(func() error { return pages.Run(frontCtx) })
	if s.cfg.HTTP.Address != "" {
		front.Go(func() error { return s.serveHTTP(frontCtx, failed, pages) })
	}
	if s.cfg.WebSocket.Address != "" {
		front.Go(func() error { return s.serveWebSocket(frontCtx) })
	}
	front.Go(func() error { return s.announceReady(frontCtx, failed, ready) })
	if s.cfg.Status.LEDPin != "" || s.cfg.Status.ButtonPin != "" {
		front.Go(func() error { return s.runStatus(frontCtx) })
	}

	frontErr := front.Wait()
	_ = systemd.Stopping()
	drainErr := s.drain(context.WithoutCancel(ctx), st)
	return errors.Join(frontErr, work.Wait(), drainErr)
}

// runNet starts the overlay side in g: the node, the forwarder, the
// receipts poller, and the subscriptions and storer once MQTT is up (they
// deliver into it).
func (s *system) runNet(ctx context.Context, g *errgroup.Group) {
	if s.registry != nil {
		g.Go(func() error { return s.registry.Run(ctx) })
	}
	if s.sn != nil {
		g.Go(func() error { return s.sn.Run(ctx) })
		g.Go(func() error { return s.snKeys.run(ctx) })
		g.Go(func() error { return s.snAdapter.run(ctx) })
	}
	if s.e2ee != nil {
		g.Go(func() error { return s.runKeyResponder(ctx) })
	}
	for _, f := range s.forwarders() {
		g.Go(func() error { return f.Run(ctx) })
	}
	if s.delivery != nil {
		for _, l := range s.delivery.layers {
			g.Go(func() error {
				return s.afterBroker(ctx, func() error { return l.deliverer.Run(ctx, l.overlay, l.subs) })
			})
		}
	}
	if s.node == nil {
		return
	}
	g.Go(func() error { return s.node.Run(ctx) })
	g.Go(func() error { return s.receipts.Run(ctx, s.node, s.store.Parts) })
	if s.storer != nil {
		g.Go(func() error {
			return s.afterBroker(ctx, func() error { return s.storer.Run(ctx, s.adapter, s.stored) })
		})
	}
}

// afterBroker runs fn once the broker accepts connections (nil if ctx
// ends first).
func (s *system) afterBroker(ctx context.Context, fn func() error) error {
	select {
	case <-ctx.Done():
		return nil
	case <-s.broker.Ready():
		return fn()
	}
}

// health is the gateway's health for the watchdog and /healthz: a failed
// part, or a stalled signer.
func (s *system) health(failed context.Context) error {
	if failed.Err() != nil {
		return fmt.Errorf("gateway stopping: %w", context.Cause(failed))
	}
	return s.pipeline.Health(maxStall)
}

// stage is a component that a stop ends on its own: stop cancels it and
// done closes once it has returned.
type stage struct {
	stop context.CancelFunc
	done <-chan struct{}
}

func (s stage) end() {
	s.stop()
	<-s.done
}

// stages are the lifetimes serve ends one after the other.
type stages struct {
	failed   context.Context // done when any component failed
	appends  stage           // the group committer of storage
	signing  stage           // the pipeline's signer
	stopRest func()          // the overlay side, the forwarder among it
}

// goDone runs fn in g and returns a channel closed when fn has returned.
func goDone(g *errgroup.Group, fn func() error) <-chan struct{} {
	done := make(chan struct{})
	g.Go(func() error {
		defer close(done)
		return fn()
	})
	return done
}

// drain is the graceful part of a stop, bounded by stop_timeout: storage
// commits the appends already queued, the signer signs every pending
// reading in chain order, and the forwarder gets the time left to send.
// It returns an *UnsignedError if stored readings remain unsigned.
func (s *system) drain(ctx context.Context, st stages) error {
	defer st.stopRest()
	timeout := time.Duration(s.cfg.StopTimeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout,
		fmt.Errorf("stop_timeout (%s) reached", timeout))
	defer cancel()
	st.appends.end()
	st.signing.end()
	pending := s.store.PendingCount()
	s.log.Info("shutting down: broker stopped, signing pending readings", "pending", pending, "stop_timeout", timeout)
	start := time.Now()
	signed, err := s.pipeline.Drain(ctx)
	unsigned := s.store.PendingCount()
	s.log.Info("signer drained", "signed", signed, "unsigned", unsigned, "took", time.Since(start).Round(time.Millisecond))
	s.flushForwarder(ctx, st.failed)
	if unsigned == 0 {
		return nil
	}
	if err == nil {
		err = errors.New("readings were still pending after the signer found none")
	}
	return &UnsignedError{Count: unsigned, Reason: err}
}

// flushForwarder gives the forwarders until ctx ends to send what the
// drain signed; what they cannot send stays in storage for the next start.
func (s *system) flushForwarder(ctx, failed context.Context) {
	for _, f := range s.forwarders() {
		flushOne(ctx, failed, f, s.log)
	}
}

func flushOne(ctx, failed context.Context, f *bridge.Forwarder, log *slog.Logger) {
	since := time.Now()
	f.Notify()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !f.SettledSince(since) {
		select {
		case <-ctx.Done():
			log.Warn("forwarding cut short; unsent messages stay in storage for the next start", "reason", context.Cause(ctx).Error())
			return
		case <-failed.Done():
			return
		case <-tick.C:
		}
	}
	if f.HoldingBack() {
		log.Info("forwarder done; messages of stream partitions without peers stay in storage for the next start")
	}
}

// ExitUnsigned is the exit status of a stop, or an export, that leaves
// stored readings unsigned.
const ExitUnsigned = 3

// UnsignedError reports stored readings a stop left unsigned, and why.
type UnsignedError struct {
	Count  int64
	Reason error
}

func (e *UnsignedError) Error() string {
	return fmt.Sprintf("%d stored readings remain unsigned (%v); they are safe on disk and are signed at the next start", e.Count, e.Reason)
}

func (e *UnsignedError) Unwrap() error { return e.Reason }

// ExitCode is the process exit status for this error.
func (e *UnsignedError) ExitCode() int { return ExitUnsigned }

// announceReady tells systemd READY=1 once MQTT accepts connections and
// the subscriptions and storer have joined their overlays, then drives
// the watchdog with the gateway's health.
func (s *system) announceReady(ctx, failed context.Context, ready func()) error {
	// A failed part ends ctx too: its error is the one Run returns.
	for _, up := range append([]<-chan struct{}{s.broker.Ready()}, s.joined()...) {
		select {
		case <-ctx.Done():
			return nil
		case <-up:
		}
	}
	s.log.Info("gateway ready", "publisher", hw.Describe(s.key), "mqtt", s.broker.Addrs())
	ready()
	if err := systemd.Ready(); err != nil {
		s.log.Warn("sd_notify READY failed", "err", err)
	}
	return systemd.RunWatchdog(ctx, func() error { return s.health(failed) }, s.log)
}

// joined are the channels closed once the subscriptions and the storer
// have joined their overlays.
func (s *system) joined() []<-chan struct{} {
	var chans []<-chan struct{}
	if s.delivery != nil {
		for _, l := range s.delivery.layers {
			chans = append(chans, l.deliverer.Joined())
		}
	}
	if s.storer != nil {
		chans = append(chans, s.storer.Joined())
	}
	return chans
}
