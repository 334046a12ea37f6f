package gateway

import (
	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/broker"
)

// The adapters between the packages, checked at compile time.
var (
	_ broker.Handler = ingestHandler{}
	_ bridge.Overlay = (*overlayAdapter)(nil)
	_ bridge.Topic   = (*partHandle)(nil)
)
