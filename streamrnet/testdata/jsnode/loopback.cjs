'use strict'
// Preloaded into the test nodes: @streamr/dht always listens on 0.0.0.0;
// tests stay on loopback.
const net = require('node:net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
    if (typeof args[0] === 'number' && args[1] === '0.0.0.0') args[1] = '127.0.0.1'
    if (args[0] && typeof args[0] === 'object' && args[0].host === '0.0.0.0') args[0] = { ...args[0], host: '127.0.0.1' }
    return listen.apply(this, args)
}
