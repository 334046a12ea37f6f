'use strict'
// Stand-in for node-datachannel (WebRTC). @streamr/dht only opens WebRTC
// connections when neither peer serves WebSocket; the test network's nodes
// all do, so any attempt to use WebRTC is a test bug and fails loudly.
exports.initLogger = function initLogger() {}
exports.cleanup = function cleanup() {}
exports.PeerConnection = class PeerConnection {
    constructor() {
        throw new Error('node-datachannel stand-in: WebRTC is not available in the test network')
    }
}
exports.DataChannel = class DataChannel {}
exports.DescriptionType = { Unspec: 'unspec', Offer: 'offer', Answer: 'answer', Pranswer: 'pranswer', Rollback: 'rollback' }
