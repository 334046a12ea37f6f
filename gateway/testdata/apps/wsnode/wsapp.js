// A Node.js app of the Streamr node's WebSocket plugin, with the `ws`
// package: it subscribes, publishes n readings on another connection, and
// prints what the subscription received as one JSON array. It also checks
// the plugin's application-level "ping" → "pong" on the subscription.
//
//   node wsapp.js <subscribe URL> <publish URL> <n>
'use strict'
const WebSocket = require('ws')

const [subURL, pubURL, nArg] = process.argv.slice(2)
const n = Number(nArg)
const got = []
let pong = false

const fail = (msg) => { console.error(msg); process.exit(1) }
setTimeout(() => fail(`timeout: got ${got.length} of ${n} messages, pong ${pong}`), 30000).unref()

const sub = new WebSocket(subURL)
sub.on('error', (err) => fail(`subscribe: ${err.message}`))
sub.on('message', (data) => {
    const text = data.toString()
    if (text === 'pong') {
        pong = true
    } else {
        got.push(JSON.parse(text))
    }
    if (got.length === n && pong) {
        console.log(JSON.stringify(got))
        sub.close()
        process.exit(0)
    }
})
sub.on('open', () => {
    sub.send('ping')
    const pub = new WebSocket(pubURL)
    pub.on('error', (err) => fail(`publish: ${err.message}`))
    pub.on('open', () => {
        for (let i = 0; i < n; i++) {
            pub.send(JSON.stringify({ seq: i, from: 'node' }))
        }
        pub.send('ping')
    })
    pub.on('message', (data) => {
        if (data.toString() === 'pong') pub.close()
    })
})
