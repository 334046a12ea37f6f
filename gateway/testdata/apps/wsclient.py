#!/usr/bin/env python3
"""A WebSocket app of the Streamr node's plugin, with the `websockets` library.

  wsclient.py subscribe URL N   print the first N messages, one per line
                                ("connected" first, once the socket is open)
  wsclient.py publish URL       send each stdin line as a message, then
                                "ping", and wait for "pong"
  wsclient.py status URL        print the HTTP status of a refused handshake
"""
import asyncio
import sys

import websockets


async def subscribe(url, n):
    async with websockets.connect(url) as ws:
        print("connected", flush=True)
        for _ in range(n):
            msg = await asyncio.wait_for(ws.recv(), timeout=30)
            print(msg, flush=True)


async def publish(url):
    async with websockets.connect(url) as ws:
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line:
                await ws.send(line)
        await ws.send("ping")
        while True:
            msg = await asyncio.wait_for(ws.recv(), timeout=30)
            if msg == "pong":
                print("pong", flush=True)
                return
            print(msg, flush=True)  # an error message for a refused reading


async def status(url):
    try:
        async with websockets.connect(url):
            print("101")
    except websockets.exceptions.InvalidStatusCode as e:
        print(e.status_code)


def main():
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "subscribe":
        asyncio.run(subscribe(url, int(sys.argv[3])))
    elif mode == "publish":
        asyncio.run(publish(url))
    elif mode == "status":
        asyncio.run(status(url))
    else:
        sys.exit("unknown mode " + mode)


main()
