package bridge

import "github.com/tributary-iot/tributary/storage"

// The store implements the interfaces this package defines for what it
// needs of storage; the assembly passes it for each of them.
var (
	_ Log           = (*storage.Store)(nil)
	_ ReceivedLog   = (*storage.Store)(nil)
	_ ForwardLog    = (*storage.Store)(nil)
	_ History       = (*storage.Store)(nil)
	_ PartLister    = (*storage.Store)(nil)
	_ PositionStore = (*storage.Store)(nil)
	_ Clock         = KernelClock{}
)
