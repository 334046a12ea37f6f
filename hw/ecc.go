package hw

import (
	"context"
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"

	"github.com/tributary-iot/tributary/hw/ecc"
)

// eccBackend signs with a P-256 key in a slot of an ATECC608 (package
// hw/ecc). Its keys are generated on the chip by ProvisionECC only.
type eccBackend struct{}

func (eccBackend) open(ctx context.Context, uri string, opts Options) (Key, error) {
	dev, bus, slot, err := openECC(uri, opts)
	if err != nil {
		return nil, err
	}
	k, err := ecc.Open(ctx, dev, slot, bus)
	if err != nil {
		bus.Close()
		return nil, err
	}
	return k, nil
}

func (eccBackend) create(context.Context, string, Options) (Key, error) {
	return nil, fmt.Errorf("ATECC608 keys are generated when the chip is provisioned (bridge key provision-ecc); " +
		"regenerating a slot key would silently replace the gateway identity")
}

func (eccBackend) importKey(context.Context, string, []byte, Options) (Key, error) {
	return nil, fmt.Errorf("%w: ATECC608 keys are generated inside the chip", ErrImportUnsupported)
}

// ProvisionECC configures and locks a blank ATECC608 named by an ecc://
// URI and generates the key in the URI's slot: `bridge key provision-ecc`.
// This is irreversible. confirm receives a description of the chip and must
// return nil for provisioning to go ahead (the CLI asks the operator); a
// chip whose configuration zone is already locked is refused with
// ecc.ErrLocked before confirm is called.
func ProvisionECC(ctx context.Context, uri string, opts Options, confirm func(chip string) error) (Key, error) {
	dev, bus, slot, err := openECC(uri, opts)
	if err != nil {
		return nil, err
	}
	pub, err := dev.Provision(ctx, slot, func(info ecc.ChipInfo) error { return confirm(info.String()) })
	if err != nil {
		bus.Close()
		return nil, err
	}
	k, err := ecc.NewKey(dev, slot, pub, bus)
	if err != nil {
		bus.Close()
		return nil, err
	}
	opts.logger().Info("provisioned atecc608", "uri", uri, "publisher", Describe(k))
	return k, nil
}

func openECC(uri string, opts Options) (*ecc.Device, i2c.BusCloser, int, error) {
	cfg, err := ecc.ParseURI(uri)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%w: %w", ErrBadURI, err)
	}
	open := opts.OpenI2C
	if open == nil {
		open = openHostI2C
	}
	bus, err := open(cfg.Bus)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("open I2C bus %s for %s: %w", cfg.Bus, uri, err)
	}
	dev := ecc.New(bus, ecc.Options{Addr: cfg.Addr, Logger: opts.logger()})
	return dev, bus, cfg.Slot, nil
}

// openHostI2C initialises periph's host drivers (idempotent) and opens a bus.
func openHostI2C(name string) (i2c.BusCloser, error) {
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("periph host init: %w", err)
	}
	return i2creg.Open(name)
}
