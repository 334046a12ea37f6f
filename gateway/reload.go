package gateway

import "context"

// reloadOnHangup reloads the broker's users file (with its ACLs) and TLS certificates on every
// SIGHUP, as mosquitto does. A file that does not load is refused with its error and what was
// in force stays in force.
func (s *system) reloadOnHangup(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.opts.Reload:
			s.log.Info("SIGHUP: reloading the users file and TLS certificates")
			if err := s.broker.Reload(); err != nil {
				s.log.Error("reload refused: the users file and certificates in force stay", "err", err)
			}
		}
	}
}
