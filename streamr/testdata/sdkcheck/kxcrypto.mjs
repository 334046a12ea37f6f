// The ciphers of the Streamr SDK's end-to-end encryption, with node:crypto
// only (no npm package, so other test harnesses can import this file by
// path): RSA-OAEP SHA-1 key exchange with a PEM SPKI public key, as the
// SDK's RSAKeyPair, and AES-256-CTR content with a fresh IV in front, as
// its EncryptionUtil. Used by keyexchange.mjs and streamrnet's JS nodes
// (streamrnet/testdata/jsnode/network.mjs).
import { generateKeyPairSync, privateDecrypt, publicEncrypt, createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

// rsaKeyPair makes a key exchange key pair: {publicKey: PEM SPKI, privateKey: PEM PKCS#8}.
export function rsaKeyPair(modulusLength = 4096) {
    return generateKeyPairSync('rsa', {
        modulusLength,
        publicKeyEncoding: { type: 'spki', format: 'pem' },
        privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    })
}

// node's publicEncrypt/privateDecrypt default padding is RSA-OAEP with SHA-1, as the SDK uses it.
export const rsaEncrypt = (publicKeyPem, data) => publicEncrypt(publicKeyPem, data)
export const rsaDecrypt = (privateKeyPem, data) => privateDecrypt(privateKeyPem, data)

export function aesEncrypt(key, plaintext) {
    const iv = randomBytes(16)
    const c = createCipheriv('aes-256-ctr', key, iv)
    return Buffer.concat([iv, c.update(plaintext), c.final()])
}

export function aesDecrypt(key, data) {
    const d = createDecipheriv('aes-256-ctr', key, data.subarray(0, 16))
    return Buffer.concat([d.update(data.subarray(16)), d.final()])
}
