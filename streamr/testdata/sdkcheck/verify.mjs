// Independent verifier for StreamMessages produced by Tributary's Go code.
//
// Usage: node verify.mjs <messages.raw> [manifest.json]
//
// messages.raw is the Streamr storage node "raw" format: repeated
// [uint32 big-endian length][StreamMessage protobuf]. Each message is decoded
// with protobufjs from streamr/pb/networkrpc.proto, its signature payload is
// rebuilt here from the decoded fields (Streamr protocol spec §2.1, written
// without looking at the Go code), and the signature is verified with the
// official @streamr/utils. The optional manifest carries extra cases the Go
// side computed (partition keys, stream IDs, AES plaintexts) to compare with
// @streamr/utils and node:crypto. A JSON summary goes to stdout; the exit
// code is 0 whenever the input could be read, since judging the summary is
// the Go test's job.
import { readFileSync } from 'node:fs'
import { createDecipheriv } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import protobuf from 'protobufjs'
import {
    EcdsaSecp256k1Evm, EcdsaSecp256r1, keyToArrayIndex, toStreamID, toStreamPartID, binaryToHex
} from '@streamr/utils'

const here = path.dirname(fileURLToPath(import.meta.url))
const protoFile = path.join(here, '..', '..', 'pb', 'networkrpc.proto')
const StreamMessage = protobuf.loadSync(protoFile).lookupType('StreamMessage')

const evm = new EcdsaSecp256k1Evm()
const p256 = new EcdsaSecp256r1()
const utf8 = (s) => Buffer.from(s, 'utf8')

function readFrames(buf) {
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

// Spec §2.1: decimal header fields, "0x"+lowercase hex publisher, optional
// previous ref, then the signed fields of the body.
function signaturePayload(m) {
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

async function verifyMessage(m) {
    const payload = signaturePayload(m)
    const publisher = m.messageId.publisherId
    switch (m.signatureType) {
        case 'ECDSA_SECP256K1_EVM':
            return evm.verifySignature(publisher, payload, m.signature)
        case 'ECDSA_SECP256R1':
            return p256.verifySignature(publisher, payload, m.signature)
        default:
            throw new Error(`unsupported signature type ${m.signatureType}`)
    }
}

// What an SDK subscriber checks besides the signature (spec §1.3, §3).
function checkFields(m) {
    const id = m.messageId
    if (toStreamID(id.streamId) !== id.streamId) throw new Error(`stream ID ${id.streamId} is not canonical`)
    toStreamPartID(id.streamId, id.streamPartition)
    const c = m.contentMessage
    if (c && c.encryptionType === 'NONE' && c.contentType === 'JSON') {
        JSON.parse(Buffer.from(c.content).toString('utf8'))
    }
    if (c && c.encryptionType === 'AES' && !c.groupKeyId) throw new Error('AES content without groupKeyId')
}

async function checkMessages(frames) {
    const result = { total: frames.length, valid: 0, invalid: [], byType: {} }
    for (const [index, frame] of frames.entries()) {
        let m
        try {
            m = StreamMessage.toObject(StreamMessage.decode(frame), {
                longs: String, enums: String, bytes: Buffer, defaults: true, oneofs: true
            })
            checkFields(m)
            if (!await verifyMessage(m)) throw new Error('signature rejected by @streamr/utils')
            result.valid++
            const key = `${m.signatureType}/${m.body}`
            result.byType[key] = (result.byType[key] ?? 0) + 1
        } catch (err) {
            result.invalid.push({ index, reason: String(err?.message ?? err) })
        }
    }
    return result
}

function checkManifest(manifest, frames) {
    const mismatches = []
    for (const { count, key, want } of manifest.partitionKeys ?? []) {
        const got = keyToArrayIndex(count, key)
        if (got !== want) mismatches.push({ kind: 'partitionKey', key, count, want, got })
    }
    for (const { count, key, want } of manifest.numberKeys ?? []) {
        const got = keyToArrayIndex(count, key)
        if (got !== want) mismatches.push({ kind: 'numberKey', key, count, want, got })
    }
    for (const { input, want } of manifest.streamIds ?? []) {
        let got
        try { got = toStreamID(input) } catch (err) { got = `error: ${err.message}` }
        if (got !== want) mismatches.push({ kind: 'streamId', input, want, got })
    }
    for (const { index, key, plaintext } of manifest.aes ?? []) {
        const m = StreamMessage.decode(frames[index])
        const content = Buffer.from(m.contentMessage.content)
        const decipher = createDecipheriv('aes-256-ctr', Buffer.from(key, 'hex'), content.subarray(0, 16))
        const got = Buffer.concat([decipher.update(content.subarray(16)), decipher.final()]).toString('hex')
        if (got !== plaintext) mismatches.push({ kind: 'aes', index, want: plaintext, got })
    }
    return {
        checked: (manifest.partitionKeys?.length ?? 0) + (manifest.numberKeys?.length ?? 0)
            + (manifest.streamIds?.length ?? 0) + (manifest.aes?.length ?? 0),
        mismatches
    }
}

const [rawFile, manifestFile] = process.argv.slice(2)
if (!rawFile) {
    console.error('usage: node verify.mjs <messages.raw> [manifest.json]')
    process.exit(2)
}
const frames = readFrames(readFileSync(rawFile))
const summary = await checkMessages(frames)
if (manifestFile) {
    summary.manifest = checkManifest(JSON.parse(readFileSync(manifestFile, 'utf8')), frames)
}
console.log(JSON.stringify(summary))
