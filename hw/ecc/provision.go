package ecc

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
)

// Configuration-zone layout (ATECC608 datasheet, section 2.2).
const (
	configSize        = 128
	lockValueOffset   = 86 // data/OTP zone lock: 0x55 unlocked, 0x00 locked
	lockConfigOffset  = 87 // configuration zone lock
	slotConfigOffset  = 20 // 2 bytes per slot
	keyConfigOffset   = 96 // 2 bytes per slot
	unlocked          = 0x55
	lockModeConfigCRC = 0x00 // lock the configuration zone, checking its CRC
	lockModeDataNoCRC = 0x81 // lock data and OTP zones without a summary CRC
)

// Slot settings written by Provision for the key slot: a secret P-256
// private key (SlotConfig 0x2087: secret, external-message signing, GenKey
// allowed; KeyConfig 0x0033: private, public info, P-256, lockable).
var (
	keySlotConfig = [2]byte{0x87, 0x20}
	keyKeyConfig  = [2]byte{0x33, 0x00}
)

// ErrLocked reports a chip whose configuration zone is already locked:
// Provision refuses it (its slots were set up by someone else, or it is a
// pre-provisioned Trust&Go part).
var ErrLocked = errors.New("ATECC configuration zone is already locked")

// ChipInfo describes a chip for the provisioning confirmation.
type ChipInfo struct {
	Revision     [4]byte
	Serial       [9]byte
	ConfigLocked bool
	DataLocked   bool
}

func (c ChipInfo) String() string {
	return fmt.Sprintf("ATECC608 revision % x serial %x (config zone locked: %t, data zone locked: %t)",
		c.Revision, c.Serial, c.ConfigLocked, c.DataLocked)
}

// ReadConfig reads the 128-byte configuration zone.
func (d *Device) ReadConfig(ctx context.Context) ([]byte, error) {
	cfg := make([]byte, 0, configSize)
	err := d.session(ctx, func() error {
		cfg = cfg[:0]
		for block := range uint16(4) {
			data, err := d.exec(ctx, command{op: opRead, p1: 0x80, p2: block << 3}, 32)
			if err != nil {
				return fmt.Errorf("read config block %d: %w", block, err)
			}
			cfg = append(cfg, data...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ATECC read configuration: %w", err)
	}
	return cfg, nil
}

// Describe reads the revision, serial number and lock state.
func (d *Device) Describe(ctx context.Context) (ChipInfo, error) {
	var info ChipInfo
	rev, err := d.Info(ctx)
	if err != nil {
		return info, err
	}
	cfg, err := d.ReadConfig(ctx)
	if err != nil {
		return info, err
	}
	info.Revision = rev
	copy(info.Serial[:4], cfg[0:4])
	copy(info.Serial[4:], cfg[8:13])
	info.ConfigLocked = cfg[lockConfigOffset] != unlocked
	info.DataLocked = cfg[lockValueOffset] != unlocked
	return info, nil
}

// Provision configures slot as a secret P-256 signing key, locks the
// configuration zone, generates the key inside the chip and locks the data
// zone. This cannot be undone. confirm sees the chip first; a non-nil
// error from it aborts before anything is written. A chip whose
// configuration zone is locked is refused with ErrLocked.
func (d *Device) Provision(ctx context.Context, slot int, confirm func(ChipInfo) error) (*ecdsa.PublicKey, error) {
	if err := checkSlot(slot); err != nil {
		return nil, err
	}
	info, err := d.Describe(ctx)
	if err != nil {
		return nil, err
	}
	if info.ConfigLocked {
		return nil, fmt.Errorf("%w: %s", ErrLocked, info)
	}
	if err := confirm(info); err != nil {
		return nil, fmt.Errorf("ATECC provisioning not confirmed: %w", err)
	}
	d.log.Warn("provisioning atecc: locking configuration and data zones", "chip", info.String(), "slot", slot)
	if err := d.writeSlotConfig(ctx, slot); err != nil {
		return nil, err
	}
	if err := d.lockConfig(ctx); err != nil {
		return nil, err
	}
	pub, err := d.GenerateKey(ctx, slot)
	if err != nil {
		return nil, err
	}
	if err := d.lock(ctx, lockModeDataNoCRC, 0); err != nil {
		return nil, fmt.Errorf("ATECC lock data zone: %w", err)
	}
	return pub, nil
}

// writeSlotConfig sets the slot's SlotConfig and KeyConfig, keeping the
// neighbouring slot's half of each 4-byte word.
func (d *Device) writeSlotConfig(ctx context.Context, slot int) error {
	for _, f := range []struct {
		offset int
		value  [2]byte
	}{
		{slotConfigOffset + 2*slot, keySlotConfig},
		{keyConfigOffset + 2*slot, keyKeyConfig},
	} {
		cfg, err := d.ReadConfig(ctx)
		if err != nil {
			return err
		}
		word := f.offset / 4
		data := append([]byte(nil), cfg[word*4:word*4+4]...)
		copy(data[f.offset%4:], f.value[:])
		err = d.session(ctx, func() error {
			_, err := d.exec(ctx, command{op: opWrite, p1: 0x00, p2: uint16(word), data: data}, 1)
			return err
		})
		if err != nil {
			return fmt.Errorf("ATECC write config word %d: %w", word, err)
		}
	}
	return nil
}

// lockConfig locks the configuration zone, giving the CRC of what was read
// so that the chip refuses if the zone is not what we checked.
func (d *Device) lockConfig(ctx context.Context) error {
	cfg, err := d.ReadConfig(ctx)
	if err != nil {
		return err
	}
	if err := d.lock(ctx, lockModeConfigCRC, crc16(cfg)); err != nil {
		return fmt.Errorf("ATECC lock configuration zone: %w", err)
	}
	return nil
}

func (d *Device) lock(ctx context.Context, mode byte, summary uint16) error {
	return d.session(ctx, func() error {
		_, err := d.exec(ctx, command{op: opLock, p1: mode, p2: summary}, 1)
		return err
	})
}
