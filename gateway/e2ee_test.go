package gateway

import (
	"strings"
	"testing"
)

func TestEncryptionConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, toml, want string }{
		{"bad subscriber", "[[rule]]\ntopic = \"a/#\"\nstream = \"{address}/a\"\nencryption = \"always\"\nsubscribers = [\"0x12\"]\n", `rule 1: subscribers: "0x12"`},
		{"bad encryption", "[[rule]]\ntopic = \"a/#\"\nstream = \"{address}/a\"\nencryption = \"maybe\"\n", `encryption "maybe"`},
		{"bad key exchange", "[encryption]\nkey_exchange = \"dh\"\n", `encryption.key_exchange "dh"`},
		{"small RSA key", "[encryption]\nrsa_key_bits = 1024\n", "encryption.rsa_key_bits 1024"},
		{"no timeout", "[encryption]\nkey_request_timeout = \"0s\"\n", "key_request_timeout must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, tc.toml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadConfig error %v, want one containing %q", err, tc.want)
			}
		})
	}
	cfg, err := LoadConfig(writeConfig(t, "[encryption]\nrotate_every = \"24h\"\nkey_exchange = \"ml-kem\"\n[[rule]]\ntopic = \"a/#\"\nstream = \"{address}/a\"\nencryption = \"always\"\nsubscribers = [\"0x7e5f4552091a69125d5dfcb7b8c2659029395bdf\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.needsE2EE() || cfg.Encryption.KeyExchange != "ml-kem" {
		t.Fatalf("config %+v", cfg.Encryption)
	}
}
