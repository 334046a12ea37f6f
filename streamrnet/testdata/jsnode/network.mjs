// A two-node Streamr Network (v103.3.1) on 127.0.0.1 for streamrnet's
// interop tests: node A is the entry point and accepts proxy connections,
// node B is an ordinary node of the same stream partitions. Controlled by
// JSON lines on stdin, reports JSON lines on stdout (see interop_test.go).
//
// B also takes both sides of the SDK's key exchange (issue 18): as a
// subscriber it requests the group keys of encrypted messages and decrypts
// them; as a publisher it encrypts and answers the key requests of the
// subscribers it is given. The ciphers are node:crypto's, through the
// cross-check's kxcrypto.mjs.
//
// usage: node --require ./loopback.cjs network.mjs <proxyPort> <nodePort> <streamPartId>...
import { createInterface } from 'node:readline'
import { randomBytes, randomUUID } from 'node:crypto'
import { createNetworkNode, ProxyDirection, SignatureType, ContentType, EncryptionType, AsymmetricEncryptionType } from '@streamr/trackerless-network'
import { NodeType, toDhtAddressRaw, randomDhtAddress } from '@streamr/dht'
import { EcdsaSecp256k1Evm, binaryToHex, hexToBinary, toUserId, toStreamPartID, StreamPartIDUtils } from '@streamr/utils'
import { rsaKeyPair, rsaEncrypt, rsaDecrypt, aesEncrypt, aesDecrypt } from '../../../streamr/testdata/sdkcheck/kxcrypto.mjs'

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
    switch (m.body.oneofKind) {
    case 'contentMessage': {
        const c = m.body.contentMessage
        parts.push(c.content)
        if (c.newGroupKey) parts.push(utf8(c.newGroupKey.id), c.newGroupKey.data)
        break
    }
    case 'groupKeyRequest': {
        const r = m.body.groupKeyRequest
        parts.push(utf8(r.requestId), r.recipientId, r.publicKey, ...r.groupKeyIds.map(utf8))
        break
    }
    case 'groupKeyResponse': {
        const r = m.body.groupKeyResponse
        parts.push(utf8(r.requestId), r.recipientId)
        for (const k of r.groupKeys) parts.push(utf8(k.id), k.data)
        break
    }
    default:
        throw new Error(`unexpected body ${m.body.oneofKind}`)
    }
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
// Messages are handled one after the other, so that what waits for a key
// is reported in the order it arrived.
let handling = Promise.resolve()
nodeB.addMessageListener((m) => {
    handling = handling.then(() => onMessage(m)).catch((err) => out({ event: 'error', error: String(err?.stack ?? err) }))
})

async function onMessage(m) {
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
    if (m.body.oneofKind === 'groupKeyRequest') return onKeyRequest(m, streamPart)
    if (m.body.oneofKind === 'groupKeyResponse') return onKeyResponse(m, streamPart)
    const c = m.body.contentMessage
    const report = {
        event: 'message', node: 'B', streamPart,
        publisher: binaryToHex(m.messageId.publisherId, true),
        timestamp: m.messageId.timestamp, sequenceNumber: m.messageId.sequenceNumber,
        chain: m.messageId.messageChainId,
        prev: m.previousMessageRef ? [m.previousMessageRef.timestamp, m.previousMessageRef.sequenceNumber] : null,
        content: Buffer.from(c.content).toString('utf8')
    }
    if (verifying) {
        try {
            report.signatureValid = await verify(m)
            report.tamperedValid = await verify(tampered(m))
        } catch (err) {
            report.verifyError = String(err?.message ?? err)
        }
    }
    if (c.encryptionType !== EncryptionType.AES) return out(report)
    report.encrypted = true
    report.groupKeyId = c.groupKeyId
    report.content = null // never ciphertext as if it were the reading
    if (!decrypting) return out(report)
    const keyName = `${report.publisher}/${c.groupKeyId}`
    const key = groupKeys.get(keyName)
    if (key) return out(decrypted(report, key, c))
    let p = awaiting.get(keyName)
    if (!p) {
        awaiting.set(keyName, p = [])
        await requestKey(streamPart, m.messageId.publisherId, c.groupKeyId, identities.self)
        // Requests are not acknowledged: one lost while the publisher's proxy connection was
        // down is sent again, as the SDK requests again for later messages.
        const retry = setInterval(() => {
            if (!awaiting.has(keyName)) return clearInterval(retry)
            requestKey(streamPart, m.messageId.publisherId, c.groupKeyId, identities.self)
                .catch((err) => out({ event: 'error', error: String(err?.stack ?? err) }))
        }, 5000)
        retry.unref()
    }
    p.push([report, c])
}

// decrypted fills a report with the plaintext, keeping a rotated-in key.
function decrypted(report, key, c) {
    if (c.newGroupKey) groupKeys.set(`${report.publisher}/${c.newGroupKey.id}`, aesDecrypt(key, Buffer.from(c.newGroupKey.data)))
    return { ...report, content: aesDecrypt(key, Buffer.from(c.content)).toString('utf8') }
}

// The subscriber side: keys known by "publisher/id", messages waiting per
// key, our RSA key pairs, requests sent.
let decrypting = false
const groupKeys = new Map()
const awaiting = new Map()
const requests = new Map() // requestId → { identity, rsa }

async function requestKey(streamPart, publisherId, groupKeyId, identity) {
    identity.rsa ??= rsaKeyPair() // as the SDK's RSAKeyPair: 4096-bit, PEM SPKI
    const requestId = randomUUID()
    requests.set(requestId, { identity, rsa: identity.rsa })
    const body = { oneofKind: 'groupKeyRequest', groupKeyRequest: {
        requestId, recipientId: publisherId, publicKey: utf8(identity.rsa.publicKey),
        groupKeyIds: [groupKeyId], encryptionType: AsymmetricEncryptionType.RSA } }
    await nodeB.broadcast(await signed(streamPart, body, identity))
    out({ event: 'keyrequested', streamPart, requestId, requester: binaryToHex(identity.address, true), groupKeyId,
        recipient: binaryToHex(publisherId, true) })
}

async function onKeyResponse(m, streamPart) {
    const r = m.body.groupKeyResponse
    const from = binaryToHex(m.messageId.publisherId, true)
    const report = { event: 'keyresponse', streamPart, publisher: from, recipient: binaryToHex(r.recipientId, true),
        requestId: r.requestId, groupKeyIds: r.groupKeys.map((k) => k.id), signatureValid: await verify(m) }
    const req = requests.get(r.requestId)
    if (!req || !report.signatureValid || report.recipient !== binaryToHex(req.identity.address, true)) return out(report)
    requests.delete(r.requestId)
    out(report)
    for (const k of r.groupKeys) {
        const name = `${from}/${k.id}`
        let key = rsaDecrypt(req.rsa.privateKey, Buffer.from(k.data))
        groupKeys.set(name, key)
        out({ event: 'groupkey', publisher: from, groupKeyId: k.id, requester: report.recipient })
        for (const [waiting, c] of awaiting.get(name) ?? []) {
            key = groupKeys.get(`${from}/${c.groupKeyId}`)
            out(decrypted(waiting, key, c))
        }
        awaiting.delete(name)
    }
}

// The publisher side: one group key per stream part, given to listed subscribers.
const published = new Map() // streamPart → { key: {id, data}, subscribers: Set }

async function onKeyRequest(m, streamPart) {
    const r = m.body.groupKeyRequest
    const requester = binaryToHex(m.messageId.publisherId, true)
    const report = { event: 'keyrequest', streamPart, requester, recipient: binaryToHex(r.recipientId, true),
        groupKeyIds: r.groupKeyIds, signatureValid: await verify(m) }
    const mine = published.get(streamPart)
    if (report.recipient !== binaryToHex(address, true) || !mine || !report.signatureValid) return out(report)
    if (!mine.subscribers.has(requester)) return out({ ...report, event: 'keyrefused' })
    const groupKeys = r.groupKeyIds.filter((id) => id === mine.key.id)
        .map((id) => ({ id, data: rsaEncrypt(Buffer.from(r.publicKey).toString('utf8'), mine.key.data) }))
    const body = { oneofKind: 'groupKeyResponse', groupKeyResponse: {
        requestId: r.requestId, recipientId: m.messageId.publisherId, groupKeys, encryptionType: AsymmetricEncryptionType.RSA } }
    await nodeB.broadcast(await signed(streamPart, body, identities.self))
    out({ ...report, event: 'keyanswered', count: groupKeys.length })
}

const key = evm.generateKeyPair()
// For EVM keys the "public key" of a key pair is the 20-byte address.
const address = key.publicKey
// B signs as itself; "stranger" is a second identity, listed nowhere.
const stranger = evm.generateKeyPair()
const identities = {
    self: { address, privateKey: key.privateKey },
    stranger: { address: stranger.publicKey, privateKey: stranger.privateKey },
}
const chains = new Map() // streamPart → { chain, prev }

async function signedMessage(streamPart, content, encryption) {
    const [streamId, partition] = splitStreamPart(streamPart)
    let c = chains.get(streamPart)
    if (!c) chains.set(streamPart, c = { chain: randomBytes(8).toString('hex'), prev: undefined, ts: Date.now() })
    const timestamp = Math.max(Date.now(), c.ts + 1)
    c.ts = timestamp
    let contentMessage = { content: utf8(content), contentType: ContentType.JSON, encryptionType: EncryptionType.NONE }
    if (encryption) {
        contentMessage = { content: aesEncrypt(encryption.data, utf8(content)), contentType: ContentType.JSON,
            encryptionType: EncryptionType.AES, groupKeyId: encryption.id }
    }
    const m = {
        messageId: { streamId, streamPartition: partition, timestamp, sequenceNumber: 0, publisherId: address, messageChainId: c.chain },
        previousMessageRef: c.prev,
        signatureType: SignatureType.ECDSA_SECP256K1_EVM,
        body: { oneofKind: 'contentMessage', contentMessage },
        signature: new Uint8Array()
    }
    m.signature = await evm.createSignature(signaturePayload(m), key.privateKey)
    c.prev = { timestamp, sequenceNumber: 0 }
    return m
}

// signed is a key exchange message of identity: a chain of its own, as the SDK's.
async function signed(streamPart, body, identity) {
    const [streamId, partition] = splitStreamPart(streamPart)
    const m = {
        messageId: { streamId, streamPartition: partition, timestamp: Date.now(), sequenceNumber: 0,
            publisherId: identity.address, messageChainId: randomBytes(8).toString('hex') },
        signatureType: SignatureType.ECDSA_SECP256K1_EVM, body, signature: new Uint8Array()
    }
    m.signature = await evm.createSignature(signaturePayload(m), identity.privateKey)
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

out({ event: 'ready', proxy: `ws://127.0.0.1:${proxyPort}`, nodeA: binaryToHex(descA.nodeId), publisher: binaryToHex(address, true),
    stranger: binaryToHex(identities.stranger.address, true) })

const commands = {
    async publish({ streamPart, contents }) {
        for (const content of contents) await nodeB.broadcast(await signedMessage(streamPart, content))
        out({ event: 'published', streamPart, count: contents.length, publisher: binaryToHex(address, true) })
    },
    // Encrypted with the stream part's group key (made on first use), which
    // B gives to the subscribers listed (addresses) when they ask.
    async publishEncrypted({ streamPart, contents, subscribers }) {
        let mine = published.get(streamPart)
        if (!mine) published.set(streamPart, mine = { key: { id: `${randomUUID()}-GroupKey1`, data: randomBytes(32) }, subscribers: new Set() })
        for (const s of subscribers ?? []) mine.subscribers.add(s.toLowerCase())
        for (const content of contents) await nodeB.broadcast(await signedMessage(streamPart, content, mine.key))
        out({ event: 'published', streamPart, count: contents.length, publisher: binaryToHex(address, true), groupKeyId: mine.key.id })
    },
    // B requests the keys of the encrypted messages it gets and reports them decrypted.
    async decrypt({ on }) { decrypting = on; out({ event: 'decrypt', on }) },
    // One key request, as identity "self" or "stranger".
    async keyRequest({ streamPart, recipient, groupKeyId, as }) {
        await requestKey(streamPart, hexToBinary(recipient), groupKeyId, identities[as ?? 'self'])
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
