// Independent verifier for StreamMessages produced by Tributary's Go code.
//
// Usage: node verify.mjs <messages.raw> [manifest.json]
//
// messages.raw is the Streamr storage node "raw" format: repeated
// [uint32 big-endian length][StreamMessage protobuf]. Each message is decoded
// with protobufjs from streamr/pb/NetworkRpc.proto, its signature payload is
// rebuilt here from the decoded fields (Streamr protocol spec §2.1, written
// without looking at the Go code), and the signature is verified with the
// official @streamr/utils. The optional manifest carries extra cases the Go
// side computed (partition keys, stream IDs, AES plaintexts) to compare with
// @streamr/utils and node:crypto. A JSON summary goes to stdout; the exit
// code is 0 whenever the input could be read, since judging the summary is
// the Go test's job.
import { readFileSync } from 'node:fs'
import { createDecipheriv } from 'node:crypto'
import {
    EcdsaSecp256k1Evm, EcdsaSecp256r1, keyToArrayIndex, toStreamID, toStreamPartID
} from '@streamr/utils'
import { StreamMessage, readFrames, decode, signaturePayload } from './wire.mjs'

const evm = new EcdsaSecp256k1Evm()
const p256 = new EcdsaSecp256r1()

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
            m = decode(frame)
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
