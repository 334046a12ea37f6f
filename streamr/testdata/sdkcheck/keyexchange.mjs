// The SDK subscriber's side of the key exchange, written independently of
// the Go code with node:crypto (RSA-OAEP SHA-1, AES-256-CTR) and the
// official @streamr/utils (signatures), to check Tributary's publisher
// (e2ee/sdk_crosscheck_test.go).
//
//   node keyexchange.mjs request <in.json> <state.json>
//     in: {streamId, partition, publisher, groupKeyId, subscriber, privateKey}; makes a
//     4096-bit RSA key pair as the SDK's RSAKeyPair does, and writes a
//     signed GroupKeyRequest (hex protobuf) and the private key to state.
//   node keyexchange.mjs open <state.json> <messages.raw>
//     messages.raw: the publisher's GroupKeyResponse, then its encrypted
//     content messages. Verifies every signature, decrypts the group keys
//     with the RSA private key, the contents with them (following in-band
//     rotations), and prints {verified, keys, plaintexts} as JSON.
import { readFileSync, writeFileSync } from 'node:fs'
import { randomUUID } from 'node:crypto'
import { EcdsaSecp256k1Evm, hexToBinary, binaryToHex } from '@streamr/utils'
import { StreamMessage, readFrames, decode, signaturePayload } from './wire.mjs'
import { rsaKeyPair, rsaDecrypt, aesDecrypt } from './kxcrypto.mjs'

const evm = new EcdsaSecp256k1Evm()

async function request(inFile, stateFile) {
    const req = JSON.parse(readFileSync(inFile, 'utf8'))
    const { publicKey, privateKey } = rsaKeyPair()
    const priv = hexToBinary(req.privateKey)
    const subscriber = hexToBinary(req.subscriber)
    evm.assertValidKeyPair(subscriber, priv)
    const requestId = randomUUID()
    const msg = {
        messageId: {
            streamId: req.streamId, streamPartition: req.partition, timestamp: Date.now(), sequenceNumber: 0,
            publisherId: Buffer.from(subscriber), messageChainId: 'sdkcheck-kx',
        },
        signatureType: 'ECDSA_SECP256K1_EVM',
        body: 'groupKeyRequest',
        groupKeyRequest: {
            requestId, recipientId: Buffer.from(hexToBinary(req.publisher)), publicKey: Buffer.from(publicKey, 'utf8'),
            groupKeyIds: [req.groupKeyId], encryptionType: 'RSA',
        },
    }
    msg.signature = Buffer.from(await evm.createSignature(signaturePayload(msg), priv))
    const encoded = StreamMessage.encode(StreamMessage.fromObject(msg)).finish()
    writeFileSync(stateFile, JSON.stringify({
        request: Buffer.from(encoded).toString('hex'), requestId, rsaPrivateKey: privateKey,
        subscriber: binaryToHex(msg.messageId.publisherId, true), publisher: req.publisher,
    }))
}

async function open(stateFile, rawFile) {
    const state = JSON.parse(readFileSync(stateFile, 'utf8'))
    const [responseFrame, ...contentFrames] = readFrames(readFileSync(rawFile))
    let verified = 0
    const check = async (m) => {
        if (binaryToHex(m.messageId.publisherId, true) !== state.publisher) throw new Error('not from the publisher')
        if (!await evm.verifySignature(m.messageId.publisherId, signaturePayload(m), m.signature)) {
            throw new Error(`signature of ${m.body} rejected by @streamr/utils`)
        }
        verified++
    }
    const resp = decode(responseFrame)
    await check(resp)
    const r = resp.groupKeyResponse
    if (resp.body !== 'groupKeyResponse' || r.requestId !== state.requestId || r.encryptionType !== 'RSA'
        || binaryToHex(r.recipientId, true) !== state.subscriber) {
        throw new Error(`not a response to our request: ${JSON.stringify({ body: resp.body, requestId: r?.requestId })}`)
    }
    const keys = new Map()
    for (const k of r.groupKeys) {
        keys.set(k.id, rsaDecrypt(state.rsaPrivateKey, k.data))
    }
    const plaintexts = []
    for (const frame of contentFrames) {
        const m = decode(frame)
        await check(m)
        const c = m.contentMessage
        const key = keys.get(c.groupKeyId)
        if (c.encryptionType !== 'AES' || !key) throw new Error(`content not decryptable: ${c.encryptionType} ${c.groupKeyId}`)
        plaintexts.push(aesDecrypt(key, c.content).toString('utf8'))
        if (c.newGroupKey) keys.set(c.newGroupKey.id, aesDecrypt(key, c.newGroupKey.data))
    }
    const hexKeys = Object.fromEntries([...keys].map(([id, k]) => [id, k.toString('hex')]))
    console.log(JSON.stringify({ verified, keys: hexKeys, plaintexts }))
}

const [op, a, b] = process.argv.slice(2)
if (op === 'request' && a && b) await request(a, b)
else if (op === 'open' && a && b) await open(a, b)
else {
    console.error('usage: node keyexchange.mjs request <in.json> <state.json> | open <state.json> <messages.raw>')
    process.exit(2)
}
