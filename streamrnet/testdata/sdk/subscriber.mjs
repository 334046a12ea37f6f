// The full Streamr SDK (103.3.1) StreamrClient as a subscriber, with no
// blockchain: it joins the test network through node A and reports every
// message the SDK delivers (the SDK verifies each signature and drops the
// rest; encrypted ones it decrypts with group keys it obtains through the
// key exchange, as any SDK subscriber). JSON lines on stdout (see
// streamrnet/jsnet, StartSDK).
//
// usage: node --require ../jsnode/loopback.cjs subscriber.mjs <nodeA hex> <portA> <ownPort> <streamId> <partition> [privateKey hex]
import { randomBytes } from 'node:crypto'
import { StreamrClient } from '@streamr/sdk'

const [entryNodeId, entryPort, ownPort, streamId, partition, privateKey] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const local = { host: '127.0.0.1', port: Number(ownPort), tls: false }
const client = new StreamrClient({
    auth: { privateKey: '0x' + (privateKey || randomBytes(32).toString('hex')) },
    network: {
        controlLayer: {
            entryPoints: [{ nodeId: entryNodeId, websocket: { host: '127.0.0.1', port: Number(entryPort), tls: false } }],
            entryPointDiscovery: { enabled: false },
            websocketPortRange: { min: local.port, max: local.port },
            websocketServerEnableTls: false,
            peerDescriptor: { nodeId: randomBytes(20).toString('hex'), websocket: local }
        }
    },
    validation: { permissions: false, partitions: false },
    // A key that does not come is reported after 10 s rather than the default 30 s.
    encryption: { keyRequestTimeout: 10000 },
    contracts: { rpcs: [{ url: 'http://127.0.0.1:9' }] }, // never contacted with validation off
    metrics: false
})
const sub = await client.subscribe({ id: streamId, partition: Number(partition) }, (content, metadata) => {
    out({ event: 'message', node: 'sdk', content: JSON.stringify(content), publisher: metadata.publisherId,
        timestamp: metadata.timestamp.getTime?.() ?? metadata.timestamp, sequenceNumber: metadata.sequenceNumber })
})
sub.on('error', (err) => out({ event: 'sdk_error', error: String(err?.message ?? err) }))
out({ event: 'ready', publisher: await client.getUserId() })
process.stdin.on('end', async () => { await client.destroy(); process.exit(0) })
process.stdin.resume()
