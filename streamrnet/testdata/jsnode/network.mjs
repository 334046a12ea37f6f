// A two-node Streamr Network (v103.3.1) on 127.0.0.1 for streamrnet's
// interop tests: node A is the entry point and accepts proxy connections,
// node B is an ordinary node of the same stream partitions. Controlled by
// JSON lines on stdin, reports JSON lines on stdout (see interop_test.go).
//
// usage: node --require ./loopback.cjs network.mjs <proxyPort> <nodePort> <streamPartId>...
import { createInterface } from 'node:readline'
import { randomBytes } from 'node:crypto'
import { createNetworkNode, ProxyDirection, SignatureType, ContentType, EncryptionType } from '@streamr/trackerless-network'
import { NodeType, toDhtAddressRaw, randomDhtAddress } from '@streamr/dht'
import { EcdsaSecp256k1Evm, binaryToHex, toUserId, toStreamPartID, StreamPartIDUtils } from '@streamr/utils'

const [proxyPort, nodePort, ...streamParts] = process.argv.slice(2)
const evm = new EcdsaSecp256k1Evm()
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const utf8 = (s) => Buffer.from(s, 'utf8')

function descriptor(port, region) {
    return {
        nodeId: toDhtAddressRaw(randomDhtAddress()),
        type: NodeType.NODEJS,
        websocket: { host: '127.0.0.1', port, tls: false },
        region
    }
}

// Spec §2.1, on the protobuf-ts form of a StreamMessage.
function signaturePayload(m) {
    const id = m.messageId
    let header = `${id.streamId}${id.streamPartition}${id.timestamp}${id.sequenceNumber}`
        + `${binaryToHex(id.publisherId, true)}${id.messageChainId}`
    if (m.previousMessageRef) header += `${m.previousMessageRef.timestamp}${m.previousMessageRef.sequenceNumber}`
    const parts = [utf8(header)]
    if (m.body.oneofKind !== 'contentMessage') throw new Error(`unexpected body ${m.body.oneofKind}`)
    const c = m.body.contentMessage
    parts.push(c.content)
    if (c.newGroupKey) parts.push(utf8(c.newGroupKey.id), c.newGroupKey.data)
    return Buffer.concat(parts)
}

async function verify(m) {
    if (m.signatureType !== SignatureType.ECDSA_SECP256K1_EVM) return false
    return evm.verifySignature(m.messageId.publisherId, signaturePayload(m), m.signature)
}

// A copy of m with one content byte flipped: what a tampering relay would send.
function tampered(m) {
    const c = m.body.contentMessage
    const content = Buffer.from(c.content)
    content[0] ^= 1
    return { ...m, body: { oneofKind: 'contentMessage', contentMessage: { ...c, content } } }
}

const descA = descriptor(Number(proxyPort), 1)
const nodeA = createNetworkNode({
    layer0: { entryPoints: [descA], peerDescriptor: descA, websocketServerEnableTls: false },
    networkNode: { acceptProxyConnections: true }
})
const descB = descriptor(Number(nodePort), 1)
const nodeB = createNetworkNode({
    layer0: { entryPoints: [descA], peerDescriptor: descB, websocketServerEnableTls: false }
})
await nodeA.start()
await nodeB.start()
// A joins first (it is B's only possible neighbor); B waits until it has A as one.
async function joinAll(parts) {
    const ids = parts.map((sp) => toStreamPartID(...splitStreamPart(sp)))
    for (const id of ids) nodeA.join(id)
    await Promise.all(ids.map((id) => nodeB.join(id, { minCount: 1, timeout: 30000 })))
}
await joinAll(streamParts)

function splitStreamPart(sp) {
    const i = sp.lastIndexOf('#')
    return [sp.slice(0, i), Number(sp.slice(i + 1))]
}

let verifying = true
let counting = null // { want, got, first, streamPart }
nodeB.addMessageListener(async (m) => {
    const streamPart = `${m.messageId.streamId}#${m.messageId.streamPartition}`
    if (counting && counting.streamPart === streamPart) {
        if (counting.got === 0) counting.first = process.hrtime.bigint()
        if (++counting.got === counting.want) {
            const ns = Number(process.hrtime.bigint() - counting.start)
            out({ event: 'counted', streamPart, count: counting.got, seconds: ns / 1e9 })
            counting = null
        }
        return
    }
    const report = {
        event: 'message', node: 'B', streamPart,
        publisher: binaryToHex(m.messageId.publisherId, true),
        timestamp: m.messageId.timestamp, sequenceNumber: m.messageId.sequenceNumber,
        chain: m.messageId.messageChainId,
        prev: m.previousMessageRef ? [m.previousMessageRef.timestamp, m.previousMessageRef.sequenceNumber] : null,
        content: m.body.oneofKind === 'contentMessage' ? Buffer.from(m.body.contentMessage.content).toString('utf8') : null
    }
    if (verifying) {
        try {
            report.signatureValid = await verify(m)
            report.tamperedValid = await verify(tampered(m))
        } catch (err) {
            report.verifyError = String(err?.message ?? err)
        }
    }
    out(report)
})

const key = evm.generateKeyPair()
// For EVM keys the "public key" of a key pair is the 20-byte address.
const address = key.publicKey
const chains = new Map() // streamPart → { chain, prev }

async function signedMessage(streamPart, content) {
    const [streamId, partition] = splitStreamPart(streamPart)
    let c = chains.get(streamPart)
    if (!c) chains.set(streamPart, c = { chain: randomBytes(8).toString('hex'), prev: undefined, ts: Date.now() })
    const timestamp = Math.max(Date.now(), c.ts + 1)
    c.ts = timestamp
    const m = {
        messageId: { streamId, streamPartition: partition, timestamp, sequenceNumber: 0, publisherId: address, messageChainId: c.chain },
        previousMessageRef: c.prev,
        signatureType: SignatureType.ECDSA_SECP256K1_EVM,
        body: { oneofKind: 'contentMessage', contentMessage: { content: utf8(content), contentType: ContentType.JSON, encryptionType: EncryptionType.NONE } },
        signature: new Uint8Array()
    }
    m.signature = await evm.createSignature(signaturePayload(m), key.privateKey)
    c.prev = { timestamp, sequenceNumber: 0 }
    return m
}

// The JS baseline of the throughput benchmark: a proxy client publishing
// through A, as the SDK's light clients do, counted at B like the Go client.
async function jsProxyPublish(streamPart, count) {
    const client = createNetworkNode({ layer0: { entryPoints: [descA], websocketServerEnableTls: false, region: 1 } })
    await client.start(false)
    const sp = toStreamPartID(...splitStreamPart(streamPart))
    await client.setProxies(sp, [descA], toUserId(address), ProxyDirection.PUBLISH, 1)
    const msgs = []
    for (let i = 0; i < count; i++) msgs.push(await signedMessage(streamPart, JSON.stringify({ i })))
    counting = { want: count, got: 0, streamPart, start: process.hrtime.bigint() }
    for (const m of msgs) await client.broadcast(m)
    return client
}

out({ event: 'ready', proxy: `ws://127.0.0.1:${proxyPort}`, nodeA: binaryToHex(descA.nodeId), publisher: binaryToHex(address, true) })

const commands = {
    async publish({ streamPart, contents }) {
        for (const content of contents) await nodeB.broadcast(await signedMessage(streamPart, content))
        out({ event: 'published', streamPart, count: contents.length, publisher: binaryToHex(address, true) })
    },
    async join({ streamParts: parts }) {
        await joinAll(parts)
        out({ event: 'joined', count: parts.length })
    },
    async verify({ on }) { verifying = on; out({ event: 'verify', on }) },
    async count({ streamPart, count }) {
        counting = { want: count, got: 0, streamPart, start: process.hrtime.bigint() }
        out({ event: 'counting', streamPart, count })
    },
    async jsbench({ streamPart, count }) {
        const client = await jsProxyPublish(streamPart, count)
        setTimeout(() => client.stop(), 30000).unref()
    },
    async stop() { await nodeB.stop(); await nodeA.stop(); process.exit(0) }
}

for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue
    let cmd
    try {
        cmd = JSON.parse(line)
        await commands[cmd.cmd](cmd)
    } catch (err) {
        out({ event: 'error', cmd: cmd?.cmd, error: String(err?.stack ?? err) })
    }
}
await nodeB.stop()
await nodeA.stop()
process.exit(0)
