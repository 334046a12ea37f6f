package gateway

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/storage"
)

// This file maps the config file's tables onto the packages' configs. The
// file says 0 for "none" where a package says 0 for "the default": each
// mapping below turns the file's 0 into the package's negative "none".

// signDelay maps batch_window onto bridge.Config.SignDelay, where zero
// means the default and a negative value none.
func signDelay(window Duration) time.Duration {
	if window == 0 {
		return -1
	}
	return time.Duration(window)
}

// presignMax maps sign_in_commit_under onto bridge.Config.PresignMax,
// where zero means the default and a negative value never.
func presignMax(under Duration) time.Duration {
	if under == 0 {
		return -1
	}
	return time.Duration(under)
}

func storageOptions(cfg *Config, log *slog.Logger, reg prometheus.Registerer) storage.Options {
	return storage.Options{
		Dir:            storageDir(cfg),
		QuotaBytes:     int64(cfg.Storage.Quota),
		Retention:      time.Duration(cfg.Storage.Retention),
		RetentionBytes: int64(cfg.Storage.RetentionBytes),
		GCInterval:     time.Duration(cfg.Storage.GCInterval),
		MinFreeBytes:   minFreeBytes(cfg),
		CommitWindow:   time.Duration(cfg.Storage.CommitWindow),
		Logger:         log,
		Registerer:     reg,
	}
}

func storageDir(cfg *Config) string { return cfg.StateDir + "/data" }

// minFreeBytes maps storage.min_free onto storage.Options, where 0 means
// the default and a negative value no check.
func minFreeBytes(cfg *Config) int64 {
	if cfg.Storage.MinFree == 0 {
		return -1
	}
	return int64(cfg.Storage.MinFree)
}

func brokerConfig(cfg *Config, reg prometheus.Registerer) broker.Config {
	m := cfg.MQTT
	bc := broker.Config{
		UsersFile:         m.UsersFile,
		AllowAnonymous:    m.AllowAnonymous,
		Registerer:        reg,
		MaxSessions:       orNone(m.MaxSessions),
		MaxConnsPerUser:   orNone(m.MaxConnectionsPerUser),
		MaxConnsPerSource: orNone(m.MaxConnectionsPerSource),
		MaxKeepAlive:      time.Duration(m.MaxKeepAlive),
		MaxTopicLength:    m.MaxTopicLength,
		MaxTopicLevels:    m.MaxTopicLevels,
		WriteTimeout:      time.Duration(m.WriteTimeout),
		MaxClientBuffer:   int(m.MaxClientBuffer),
		MaxConcurrentAuth: m.MaxConcurrentAuth,
		AuthBackoffMax:    time.Duration(m.AuthBackoffMax),
		LogRepeatInterval: time.Duration(m.LogRepeatInterval),
		SessionExpiry:     time.Duration(m.SessionExpiry),
		MaxInflight:       uint16(m.SessionMaxMessages),
		MaxSessionBytes:   int64(m.SessionMaxBytes),
		MaxQueuedBytes:    int64(m.MaxQueuedBytes),
	}
	if m.MaxQueuedBytes == 0 {
		bc.MaxQueuedBytes = -1 // "0 B" in the file: no limit
	}
	if m.MaxKeepAlive == 0 {
		bc.MaxKeepAlive = -1 // 0 in the file: no maximum
	}
	if m.AuthBackoffMax == 0 {
		bc.AuthBackoffMax = -1
	}
	for _, l := range cfg.MQTT.Listeners {
		bc.Listeners = append(bc.Listeners, broker.Listener{Type: l.Type, Address: l.Address, CertFile: l.CertFile, KeyFile: l.KeyFile})
	}
	return bc
}

// orNone maps a config limit where 0 means "no limit" onto broker.Config, where 0 means the
// default and a negative value none.
func orNone(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
