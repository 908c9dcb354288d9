// A js-libp2p Infernet client: joins a network of Rust nodes through one
// bootstrap peer, finds a provider of a model in the DHT, checks its
// gossiped advert, runs one job over /infernet/job/2 and checks the signed
// result; optionally gossips an advert of its own.
//
//   node client.mjs --bootstrap <multiaddr/p2p/id> --model <id> --prompt <text>
//                   [--timeout-ms 60000] [--advert-model <id>]
//
// Progress goes to stderr; stdout gets exactly one JSON line:
// {"ok":true,...} (exit 0) or {"ok":false,"step":...,"error":...} (exit 1).

import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { randomBytes } from 'node:crypto'
import { createNode, exchange as exchangeFrames } from './net.mjs'
import * as wire from './wire.mjs'

// ---------------------------------------------------------------------------
// Arguments, logging, the one output line

function parseArgs (argv) {
  const opts = { timeoutMs: 60000 }
  const names = { '--bootstrap': 'bootstrap', '--model': 'model', '--prompt': 'prompt', '--timeout-ms': 'timeoutMs', '--advert-model': 'advertModel' }
  for (let i = 0; i < argv.length; i++) {
    const key = names[argv[i]]
    if (key == null || i + 1 >= argv.length) throw new Error(`unexpected argument ${argv[i]}`)
    opts[key] = argv[++i]
  }
  opts.timeoutMs = Number(opts.timeoutMs)
  if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) throw new Error('--timeout-ms must be a positive number')
  for (const k of ['bootstrap', 'model', 'prompt']) {
    if (opts[k] == null) throw new Error(`--${k} is required`)
  }
  return opts
}

const started = Date.now()
let step = 'args'
let finished = false

function log (msg, label = step) {
  process.stderr.write(`[js-client +${((Date.now() - started) / 1000).toFixed(1)}s] ${label}: ${msg}\n`)
}

function jsonSafe (v) {
  return JSON.stringify(v, (_, x) => typeof x === 'bigint' ? (Number.isSafeInteger(Number(x)) ? Number(x) : x.toString()) : x)
}

function finish (code, obj) {
  if (finished) return
  finished = true
  process.stdout.write(jsonSafe(obj) + '\n', () => process.exit(code))
  // Exit even if stdout never drains.
  setTimeout(() => process.exit(code), 2000).unref()
}

function fail (err) {
  const error = err instanceof Error ? err.message : String(err)
  log(`FAILED: ${error}`)
  finish(1, { ok: false, step, error })
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  if (signal?.aborted) return reject(signal.reason)
  const t = setTimeout(resolve, ms)
  signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason) }, { once: true })
})

// ---------------------------------------------------------------------------
// One job exchange: one frame out (then close our write side), one frame back.

async function exchange (node, peer, message, signal) {
  const variant = Object.keys(message.body)[0]
  const { reply, bytes } = await exchangeFrames(node, peer, message, signal)
  log(`${variant} -> ${reply.variant} (${bytes} bytes)`)
  return reply
}

function expectReply (reply, variant, jobId) {
  if (reply.variant === 'Error') {
    throw new Error(`provider answered Error ${reply.fields.code}: ${reply.fields.message}`)
  }
  if (reply.variant !== variant) throw new Error(`expected ${variant}, provider answered ${reply.variant}`)
  if (variant !== 'Result' && reply.fields.job_id !== jobId) {
    throw new Error(`${variant} is for job ${reply.fields.job_id}, expected ${jobId}`)
  }
  return reply.fields
}

// ---------------------------------------------------------------------------

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  // Every wait is bound by `signal`, which fires a little before the
  // deadline so the failure names the step; the hard stop answers and exits
  // at the deadline whatever is still pending.
  const signal = AbortSignal.timeout(Math.max(opts.timeoutMs - 750, opts.timeoutMs * 0.9))
  setTimeout(() => fail(new Error(`timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs).unref()

  const boot = multiaddr(opts.bootstrap)
  const bootPeer = boot.getPeerId()
  if (bootPeer == null) throw new Error(`--bootstrap ${opts.bootstrap} has no /p2p/<peer id>`)
  const { cid } = await wire.modelKey(opts.model)

  step = 'start'
  const privateKey = await generateKeyPair('Ed25519')
  const node = await createNode({ privateKey })
  const me = node.peerId.toString()
  log(`peer id ${me}`)

  // Collect verified adverts from the start, latest per signer.
  const adverts = new Map()
  let dropped = 0
  const pubsub = node.services.pubsub
  pubsub.addEventListener('message', (evt) => {
    const m = evt.detail
    if (m.topic !== wire.ADVERT_TOPIC) return
    wire.verifyAdvertBytes(m.data).then(({ advert, signer }) => {
      const prev = adverts.get(signer)
      if (prev == null) log(`advert from ${signer}: models ${advert.models.join(',')}`, 'gossip')
      if (prev == null || Number(prev.advert.timestamp_ms) <= Number(advert.timestamp_ms)) adverts.set(signer, { advert, data: m.data })
    }, (err) => {
      if (dropped++ < 5) log(`dropped an advert from ${m.from}: ${err.message}`, 'gossip')
    })
  })
  pubsub.subscribe(wire.ADVERT_TOPIC)

  const stop = async () => {
    await Promise.race([node.stop().catch(() => {}), sleep(2000)])
  }

  try {
    // a. dial the bootstrap peer
    step = 'dial'
    log(`dialing ${boot}`)
    const conn = await node.dial(boot, { signal })
    log(`connected to ${conn.remotePeer} over ${conn.remoteAddr}`)

    // b. a provider of the model, through Kademlia
    step = 'dht'
    log(`findProviders ${cid} (model ${opts.model}) via ${wire.KAD_PROTOCOL}`)
    let provider = null
    let providerAddrs = []
    for (let attempt = 1; provider == null; attempt++) {
      const q = AbortSignal.any([signal, AbortSignal.timeout(5000)])
      try {
        for await (const ev of node.services.dht.findProviders(cid, { signal: q })) {
          if (ev.name === 'PROVIDER' && ev.providers.length > 0) {
            provider = ev.providers[0].id
            providerAddrs = ev.providers[0].multiaddrs
            break
          }
        }
      } catch (err) {
        if (signal.aborted) throw err
        if (attempt <= 3 || attempt % 10 === 0) log(`attempt ${attempt}: ${err.message}`)
      }
      if (provider == null) {
        if (attempt <= 3 || attempt % 10 === 0) log(`attempt ${attempt}: no provider yet, retrying`)
        await sleep(500, signal)
      }
    }
    const providerStr = provider.toString()
    log(`provider ${providerStr} at [${providerAddrs.map(String).join(', ')}]`)
    if (!provider.equals(conn.remotePeer)) {
      if (providerAddrs.length > 0) await node.peerStore.merge(provider, { multiaddrs: providerAddrs })
      // Not fatal here: the advert's addresses are a second chance below.
      await node.dial(provider, { signal }).then(
        (c) => log(`connected to the provider over ${c.remoteAddr}`),
        (err) => log(`dialing the provider from its DHT record failed: ${err.message}`)
      )
    }

    // c. its gossiped advert, verified
    step = 'advert'
    log(`waiting for an advert from ${providerStr} on ${wire.ADVERT_TOPIC}`)
    let entry
    while ((entry = adverts.get(providerStr)) == null) await sleep(100, signal)
    // Verify the exact bytes again, now (timestamp window at the time of use).
    const { advert } = await wire.verifyAdvertBytes(entry.data)
    if (advert.peer_id !== providerStr) throw new Error(`advert peer_id ${advert.peer_id} != provider ${providerStr}`)
    if (!advert.models.includes(opts.model)) log(`note: the advert lists models [${advert.models}], not ${opts.model}`)
    log(`advert verified: protocol_version ${advert.protocol_version}, quote ${jsonSafe(advert.quote)}, addrs [${advert.addrs}]`)
    if (node.getConnections(provider).length === 0) {
      const addrs = (advert.addrs ?? []).map((a) => multiaddr(a)).filter((a) => a.getPeerId() == null || a.getPeerId() === providerStr)
      if (addrs.length > 0) await node.peerStore.merge(provider, { multiaddrs: addrs })
    }

    // d. a job
    step = 'job'
    const jobId = `js-${randomBytes(8).toString('hex')}.1`
    const params = [['max_tokens', '16']]
    const offer = expectReply(await exchange(node, provider, wire.quoteRequest({
      jobId, model: opts.model, inputTokens: wire.countWords(opts.prompt), maxOutputTokens: 16, params
    }), signal), 'QuoteOffer', jobId)
    log(`offer ${offer.quote_id}: ${jsonSafe(offer.price)}${offer.pay_to?.length ? `, pay_to ${jsonSafe(offer.pay_to)}` : ' (unpaid)'}`)
    expectReply(await exchange(node, provider, wire.accept({ jobId, quoteId: offer.quote_id, escrow: null }), signal), 'Ack', jobId)
    const result = expectReply(await exchange(node, provider, wire.run({
      jobId, model: opts.model, input: wire.textInput(opts.prompt), params, stream: false
    }), signal), 'Result', jobId)
    const checked = await wire.verifyResult(result, { jobId, modelId: opts.model, provider: providerStr, client: me })
    log(`result verified: output_hash ${checked.outputHash}, output ${jsonSafe(wire.toJsonView(checked.output))}`)

    // e. our own advert, gossiped to the Rust nodes
    let published = false
    if (opts.advertModel != null) {
      step = 'publish'
      let afterMesh = 0
      let total = 0
      while (afterMesh < 3) {
        const inMesh = pubsub.getMeshPeers(wire.ADVERT_TOPIC).includes(providerStr)
        const payload = wire.advertPayload({
          peerId: me,
          addrs: [],
          models: [opts.advertModel],
          quote: { amount: 1, currency: 'USD' },
          capacity: 1,
          witVersion: '0.2.0',
          stake: null,
          timestampMs: Date.now()
        })
        const { bytes } = await wire.signPayload(privateKey, wire.DOMAIN.advert, payload)
        const { recipients } = await pubsub.publish(wire.ADVERT_TOPIC, bytes)
        total++
        if (inMesh) afterMesh++
        log(`published advert #${total} for ${opts.advertModel} to ${recipients.length} peer(s)${inMesh ? ` (${afterMesh} with the provider in the mesh)` : ', provider not in our mesh yet'}`)
        if (afterMesh < 3) await sleep(1000, signal)
      }
      published = true
    }

    step = 'done'
    const out = {
      ok: true,
      peer_id: me,
      provider: providerStr,
      found_via_dht: true,
      advert_verified: true,
      quote: wire.toJsonView(offer.price),
      output: wire.toJsonView(checked.output),
      output_hash: checked.outputHash,
      result_verified: true,
      usage: wire.toJsonView(checked.body.usage),
      published_advert: published
    }
    await stop()
    finish(0, out)
  } catch (err) {
    const e = signal.aborted ? new Error(`timed out after ${opts.timeoutMs} ms (${err.message})`) : err
    fail(e)
    await stop()
  }
}

main().catch(fail)
