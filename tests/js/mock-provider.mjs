// A provider written with the same codec, for testing client.mjs without a
// Rust node (it proves the client's flow, not interop: both ends are ours).
//
//   node mock-provider.mjs [--model echo] [--tamper output|signature|client]
//                          [--bootstrap <multiaddr/p2p/id>]
//
// Listens on loopback TCP and WebSocket, serves Kademlia in server mode,
// provides the model's key, gossips a signed advert every second, and
// answers /infernet/job/2: QuoteRequest -> QuoteOffer, Accept -> Ack,
// Run -> Result (output {"Text": "echo: <prompt>"}), anything else or a bad
// frame -> Error. --tamper makes its Results wrong in one way (output bytes
// that do not match output_hash, a signature over other bytes, another
// client id) so tests can see the client refuse them. Prints `peer <id>` and
// one `listen <addr>` line per address on stdout, then runs until killed.

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
import { generateKeyPair } from '@libp2p/crypto/keys'
import { Uint8ArrayList } from 'uint8arraylist'
import { rustMessageId } from './net.mjs'
import * as wire from './wire.mjs'

const args = process.argv.slice(2)
const opt = (name, dflt) => args.includes(name) ? args[args.indexOf(name) + 1] : dflt
const model = opt('--model', 'echo')
const tamper = opt('--tamper', null)
const bootstrap = opt('--bootstrap', null)
const log = (m) => process.stderr.write(`[mock-provider] ${m}\n`)

const privateKey = await generateKeyPair('Ed25519')
const node = await createLibp2p({
  privateKey,
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws'] },
  transports: [tcp(), webSockets()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionGater: { denyDialMultiaddr: async () => false },
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({ protocol: wire.KAD_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper }),
    pubsub: gossipsub({ globalSignaturePolicy: 'StrictSign', msgIdFn: rustMessageId, allowPublishToZeroTopicPeers: true })
  }
})
node.services.identify.host.protocolVersion = wire.IDENTIFY_PROTOCOL_VERSION
node.addEventListener('peer:identify', (e) => log(`identified ${e.detail.peerId}: ${e.detail.protocolVersion}, ${e.detail.agentVersion}`))
const me = node.peerId.toString()
const quotes = new Map()

function answer (from, msg) {
  const { variant, fields } = msg
  const jobId = fields.job_id ?? null
  const error = (code, message) => wire.jobMessage('Error', { job_id: jobId, code, message })
  switch (variant) {
    case 'QuoteRequest': {
      if (fields.model !== model) return error('UnknownModel', `no backend for ${fields.model}`)
      const quoteId = `${jobId}-q`
      quotes.set(jobId, { quoteId, accepted: false })
      const amount = Number(fields.input_tokens) + 2 * Number(fields.max_output_tokens)
      return wire.jobMessage('QuoteOffer', {
        job_id: jobId,
        quote_id: quoteId,
        price: { amount, currency: 'USD' },
        breakdown: [['input', Number(fields.input_tokens)], ['output', 2 * Number(fields.max_output_tokens)]],
        valid_until_ms: Date.now() + 60000
      })
    }
    case 'Accept': {
      const q = quotes.get(jobId)
      if (q == null || q.quoteId !== fields.quote_id) return error('QuoteExpired', 'unknown quote')
      q.accepted = true
      return wire.jobMessage('Ack', { job_id: jobId })
    }
    default:
      return error('InvalidRequest', `unexpected ${variant}`)
  }
}

async function runJob (from, fields) {
  const q = quotes.get(fields.job_id)
  const error = (code, message) => wire.jobMessage('Error', { job_id: fields.job_id, code, message })
  if (q == null || !q.accepted) return error('UnknownJob', 'no accepted quote')
  const { variant, value } = wire.enumVariant(fields.input, wire.INPUT_VARIANTS, 'Run.input')
  if (variant !== 'Text') return error('InvalidRequest', 'text input only')
  const output = wire.encodeCbor({ Text: `echo: ${value}` })
  const body = {
    job_id: fields.job_id,
    model_id: fields.model,
    output_hash: wire.sha256Hex(output),
    usage: { input_tokens: wire.countWords(value), output_tokens: wire.countWords(value) + 1 },
    backend: { name: 'mock-echo', version: '0.0.0', sha256: '00'.repeat(32) },
    provider: me,
    client: tamper === 'client' ? me : from.toString(),
    timestamp_ms: Date.now(),
    trace_root: null
  }
  const { envelope, payloadBytes } = await wire.signPayload(privateKey, wire.DOMAIN.result, body)
  if (tamper === 'signature') {
    // cborg sorts keys shortest first: the last bytes are timestamp_ms's.
    const changed = payloadBytes.slice()
    changed[changed.length - 1] ^= 1
    envelope.payload = changed
  }
  const sent = tamper === 'output' ? wire.encodeCbor({ Text: `echo: ${value}!` }) : output
  return wire.jobMessage('Result', { output: sent, signed: envelope })
}

await node.handle(wire.JOB_PROTOCOL, async ({ stream, connection }) => {
  let reply
  try {
    const got = new Uint8ArrayList()
    for await (const chunk of stream.source) {
      got.append(chunk)
      if (got.byteLength > wire.MAX_REQUEST_BYTES + 9) throw new wire.WireError('request too large')
    }
    const msg = wire.decodeFrame(got.subarray(), wire.MAX_REQUEST_BYTES)
    reply = msg.variant === 'Run' ? await runJob(connection.remotePeer, msg.fields) : answer(connection.remotePeer, msg)
    log(`${msg.variant} from ${connection.remotePeer} -> ${Object.keys(reply.body)[0]}`)
  } catch (e) {
    reply = wire.jobMessage('Error', { job_id: null, code: 'InvalidRequest', message: e.message })
    log(`bad request from ${connection.remotePeer}: ${e.message}`)
  }
  await stream.sink([wire.encodeFrame(reply, wire.MAX_RESPONSE_BYTES)])
  await stream.close().catch(() => {})
})

const pubsub = node.services.pubsub
pubsub.subscribe(wire.ADVERT_TOPIC)
pubsub.addEventListener('message', (evt) => {
  if (evt.detail.topic !== wire.ADVERT_TOPIC) return
  wire.verifyAdvertBytes(evt.detail.data).then(
    ({ advert, signer }) => log(`advert accepted from ${signer}: models ${advert.models}`),
    (e) => log(`advert dropped: ${e.message}`)
  )
})

if (bootstrap != null) {
  const { multiaddr } = await import('@multiformats/multiaddr')
  await node.dial(multiaddr(bootstrap))
  // Let identify put the bootstrap peer in the routing table before providing.
  for (let i = 0; i < 50 && node.services.dht.routingTable.size === 0; i++) await new Promise((resolve) => setTimeout(resolve, 100))
}

const { cid } = await wire.modelKey(model)
// Stored locally first; the network part finds no peer yet, which is fine:
// clients ask this node, and it answers from its own provider store.
void (async () => {
  for await (const ev of node.services.dht.provide(cid)) void ev
})().catch((e) => log(`provide: ${e.message}`))

setInterval(() => {
  const payload = wire.advertPayload({
    peerId: me,
    addrs: node.getMultiaddrs().map((a) => a.toString()),
    models: [model],
    quote: { amount: 10, currency: 'USD' },
    capacity: 1,
    timestampMs: Date.now()
  })
  wire.signPayload(privateKey, wire.DOMAIN.advert, payload)
    .then(({ bytes }) => pubsub.publish(wire.ADVERT_TOPIC, bytes))
    .catch((e) => log(`publish: ${e.message}`))
}, 1000)

process.stdout.write(`peer ${me}\n`)
for (const a of node.getMultiaddrs()) process.stdout.write(`listen ${a}\n`)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { node.stop().finally(() => process.exit(0)) })
