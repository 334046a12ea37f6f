// Package systemd connects the bridge daemon to the service manager that runs it: readiness and
// shutdown notifications (sd_notify), watchdog pings that stop when the pipeline stalls, and a
// log/slog handler that writes structured entries to the systemd journal.
//
// Everything is a no-op or reports "not available" when the process does not run under systemd,
// so the gateway and cmd/bridge call it unconditionally. The package uses only the standard library.
//
// bridge.service, the unit file shipped in the .deb and the firmware image, lives next to this code;
// its tests check it with systemd-analyze.
package systemd
