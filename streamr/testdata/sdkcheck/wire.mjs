// The Streamr wire format as the cross-check scripts read it: the
// StreamMessage protobuf type (streamr/pb/NetworkRpc.proto), the raw
// format's frames, and the signature payload of spec §2.1 (written from
// the spec, without looking at the Go code).
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import protobuf from 'protobufjs'
import { binaryToHex } from '@streamr/utils'

const here = path.dirname(fileURLToPath(import.meta.url))
// Streamr's NetworkRpc.proto imports DhtRpc.proto by its path in streamr-dev/network;
// streamr/pb keeps the files side by side.
const pbDir = path.join(here, '..', '..', 'pb')
const protoRoot = new protobuf.Root()
protoRoot.resolvePath = (origin, target) =>
    target.startsWith('packages/') ? path.join(pbDir, path.basename(target)) : protobuf.util.path.resolve(origin, target)
export const StreamMessage = protoRoot.loadSync(path.join(pbDir, 'NetworkRpc.proto')).lookupType('StreamMessage')

export const utf8 = (s) => Buffer.from(s, 'utf8')

// readFrames splits the raw format: repeated [uint32 BE length][message].
export function readFrames(buf) {
    const frames = []
    let off = 0
    while (off < buf.length) {
        if (off + 4 > buf.length) throw new Error(`truncated length prefix at byte ${off}`)
        const len = buf.readUInt32BE(off)
        if (off + 4 + len > buf.length) throw new Error(`truncated frame at byte ${off}`)
        frames.push(buf.subarray(off + 4, off + 4 + len))
        off += 4 + len
    }
    return frames
}

// decode reads one StreamMessage as a plain object (enums as names).
export function decode(frame) {
    return StreamMessage.toObject(StreamMessage.decode(frame), {
        longs: String, enums: String, bytes: Buffer, defaults: true, oneofs: true
    })
}

// Spec §2.1: decimal header fields, "0x"+lowercase hex publisher, optional
// previous ref, then the signed fields of the body.
export function signaturePayload(m) {
    const id = m.messageId
    let header = `${id.streamId}${id.streamPartition}${id.timestamp}${id.sequenceNumber}`
        + `${binaryToHex(id.publisherId, true)}${id.messageChainId}`
    if (m.previousMessageRef) {
        header += `${m.previousMessageRef.timestamp}${m.previousMessageRef.sequenceNumber}`
    }
    const parts = [utf8(header)]
    if (m.body === 'contentMessage') {
        const c = m.contentMessage
        parts.push(c.content)
        if (c.newGroupKey) parts.push(utf8(c.newGroupKey.id), c.newGroupKey.data)
    } else if (m.body === 'groupKeyRequest') {
        const r = m.groupKeyRequest
        parts.push(utf8(r.requestId), r.recipientId, r.publicKey, ...r.groupKeyIds.map(utf8))
    } else if (m.body === 'groupKeyResponse') {
        const r = m.groupKeyResponse
        parts.push(utf8(r.requestId), r.recipientId)
        for (const k of r.groupKeys) parts.push(utf8(k.id), k.data)
    } else {
        throw new Error('no body')
    }
    return Buffer.concat(parts)
}
