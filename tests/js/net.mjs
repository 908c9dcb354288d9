// The js-libp2p node of the interop client, and the job-stream exchange.
// Kept apart from client.mjs so that probes and tests can build the same node.

import './node20.mjs'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { webSockets } from '@libp2p/websockets'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { Uint8ArrayList } from 'uint8arraylist'
import * as wire from './wire.mjs'

const utf8 = new TextEncoder()

/**
 * Gossipsub message ids as the Rust nodes compute them (rust-libp2p's
 * default): base58 of the source peer id followed by the decimal sequence
 * number. With js-gossipsub's own default (from bytes || seqno bytes) the
 * two sides would name the same message differently in IHAVE/IWANT, and
 * each would count the other's gossip as broken promises.
 */
export function rustMessageId (msg) {
  if (msg.type === 'signed') {
    return utf8.encode(msg.from.toString() + msg.sequenceNumber.toString())
  }
  return utf8.encode(wire.sha256Hex(msg.data))
}

/**
 * A started client node: TCP + WebSocket, Noise, Yamux, identify, ping,
 * Kademlia in client mode on `kadProtocol`, gossipsub with StrictSign.
 */
export async function createNode ({ privateKey, kadProtocol = wire.KAD_PROTOCOL, identifyVersion = wire.IDENTIFY_PROTOCOL_VERSION } = {}) {
  const node = await createLibp2p({
    privateKey,
    addresses: { listen: [] }, // a client: dials out only
    // In Node, @libp2p/websockets dials plain ws:// to any address by
    // default (the dns/wss-only filter is the browser's); /tcp/N goes to
    // the TCP transport, /tcp/N/ws to this one.
    transports: [tcp(), webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: { denyDialMultiaddr: async () => false }, // loopback is fine
    nodeInfo: { name: 'infernet-js-interop', version: '0.0.0' },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: kadProtocol,
        clientMode: true,
        // The default (removePrivateAddressesMapper) drops private and
        // loopback addresses of every peer the DHT hears of: on a loopback
        // network the bootstrap peer never enters the routing table and
        // providers come back with no address to dial.
        peerInfoMapper: passthroughMapper
      }),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign',
        msgIdFn: rustMessageId,
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        fallbackToFloodsub: false
      })
    }
  })
  // @libp2p/identify derives its protocol-version string from the protocol
  // prefix, which also names the stream protocol (/ipfs/id/1.0.0, which the
  // Rust nodes speak); set the string alone.
  const host = node.services.identify.host
  if (host == null || typeof host.protocolVersion !== 'string') {
    throw new Error('@libp2p/identify has no host.protocolVersion to set (its internals changed: see net.mjs)')
  }
  host.protocolVersion = identifyVersion
  return node
}

/**
 * Opens a `protocol` stream to `peer`, writes `bytes`, closes our write
 * side, and returns everything the peer writes before closing (at most
 * `maxResponse` bytes).
 */
export async function exchangeRaw (node, peer, protocol, bytes, signal, maxResponse) {
  const stream = await node.dialProtocol(peer, protocol, { signal })
  const onAbort = () => stream.abort(new Error('aborted waiting for the answer'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await stream.sink([bytes]) // the source ends: our write side closes
    const got = new Uint8ArrayList()
    for await (const chunk of stream.source) {
      got.append(chunk)
      if (got.byteLength > maxResponse) throw new wire.WireError(`answer exceeds ${maxResponse} bytes`)
    }
    return got.subarray()
  } finally {
    signal.removeEventListener('abort', onAbort)
    await stream.close().catch(() => {})
  }
}

/** One /infernet/job/2 exchange: a JobMessage out, the checked answer back. */
export async function exchange (node, peer, message, signal) {
  const out = wire.encodeFrame(message, wire.MAX_REQUEST_BYTES)
  // Room for the varint in front of the largest body.
  const got = await exchangeRaw(node, peer, wire.JOB_PROTOCOL, out, signal, wire.MAX_RESPONSE_BYTES + 9)
  return { reply: wire.decodeFrame(got, wire.MAX_RESPONSE_BYTES), bytes: got.length }
}
