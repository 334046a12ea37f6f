package overlay

import "context"

// ResendAny is Resend with the answering peer and the messages' bytes as
// stored, for callers that keep or forward the original encoding.
func (n *Node) ResendAny(ctx context.Context, q ResendQuery) (ResendResult, error) {
	return n.resend(ctx, q)
}
