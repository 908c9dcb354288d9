// Checks the protocol test vectors (docs/protocol/vectors.json) against
// this independent implementation of the wire protocol.
//
//   node vectors.mjs <vectors.json> [--emit <out.json>]
//
// Prints {"ok":true,"checked":N} and exits 0, or names the first mismatch
// on stderr, prints {"ok":false,"error":...} and exits 1.
//
// --emit also writes cborg's encoding of every vector (payloads re-encoded
// with cborg's sorted-key layout and re-signed with the vector key; frames
// re-encoded from the decoded messages) so the Rust side can check that it
// reads another encoder's bytes.

import { readFileSync, writeFileSync } from 'node:fs'
import { generateKeyPairFromSeed, publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import {
  DOMAIN, SIGNER_FIELD, MAX_RESPONSE_BYTES, WireError,
  PROTOCOL_VERSION, JOB_PROTOCOL, ADVERT_TOPIC, KAD_PROTOCOL, OUTPUT_VARIANTS, enumVariant,
  fromHex, toHex, bytesEqual, signingInput, verifySigned, signPayloadBytes,
  decodeCbor, decodeCborKeepFloats, encodeCbor, encodeFrame, unframe, decodeVarint,
  parseJobMessage, compareJsonView, modelKey, sha256Hex
} from './wire.mjs'

class Mismatch extends Error {}

function check (cond, what) {
  if (!cond) throw new Mismatch(what)
}

function equalHex (actual, expectedHex, what) {
  check(typeof expectedHex === 'string', `${what}: missing hex in the vector`)
  const a = toHex(actual)
  const e = expectedHex.toLowerCase()
  if (a === e) return
  let i = 0
  while (i < a.length && a[i] === e[i]) i++
  const byte = Math.floor(i / 2)
  const cut = (h) => h.length > 64 ? `${h.slice(Math.max(0, 2 * byte - 16), 2 * byte + 48)}… (${h.length / 2} bytes)` : h
  throw new Mismatch(`${what}: differs at byte ${byte}: got ${cut(a)}, vector has ${cut(e)}`)
}

async function main () {
  const args = process.argv.slice(2)
  let path = null
  let emitPath = null
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--emit') emitPath = args[++i]
    else if (path == null && !args[i].startsWith('--')) path = args[i]
    else throw new Mismatch(`unexpected argument ${args[i]}`)
  }
  if (path == null) throw new Mismatch('usage: node vectors.mjs <vectors.json> [--emit <out.json>]')
  const v = JSON.parse(readFileSync(path, 'utf8'))
  let checked = 0
  const emitted = { encoder: 'cborg (default options)', signed: [], frames: [] }

  // -- keys: `key` (the provider's) and, when present, `client_key`
  const keys = []
  for (const name of ['key', 'client_key']) {
    const k = v[name]
    if (k == null) {
      check(name !== 'key', 'no "key" section')
      continue
    }
    const seed = fromHex(k.ed25519_secret_hex)
    check(seed.length === 32, `${name}.ed25519_secret_hex: ${seed.length} bytes, expected a 32-byte seed`)
    const privateKey = await generateKeyPairFromSeed('Ed25519', seed)
    const peerId = peerIdFromPublicKey(privateKey.publicKey).toString()
    check(peerId === k.peer_id, `${name}.peer_id: seed gives ${peerId}, vector has ${k.peer_id}`)
    equalHex(publicKeyToProtobuf(privateKey.publicKey), k.public_key_protobuf_hex, `${name}.public_key_protobuf_hex`)
    const publicKey = publicKeyFromProtobuf(fromHex(k.public_key_protobuf_hex))
    check(peerIdFromPublicKey(publicKey).toString() === k.peer_id, `${name}: public_key_protobuf_hex is not peer_id's key`)
    keys.push({ name, privateKey, publicKey, peerId, protobufHex: k.public_key_protobuf_hex.toLowerCase() })
    checked++
  }

  // -- protocol constants, where the file states them
  for (const [field, mine] of [['protocol_version', PROTOCOL_VERSION], ['job_protocol', JOB_PROTOCOL], ['advert_topic', ADVERT_TOPIC], ['kad_protocol', KAD_PROTOCOL]]) {
    if (v[field] === undefined) continue
    check(v[field] === mine, `${field}: vector has ${JSON.stringify(v[field])}, this implementation speaks ${JSON.stringify(mine)}`)
    checked++
  }

  // -- signed envelopes
  check(Array.isArray(v.signed) && v.signed.length > 0, 'no "signed" vectors')
  for (const s of v.signed) {
    const at = `signed[${s.name}]`
    check(Object.values(DOMAIN).includes(s.domain), `${at}: unknown domain ${s.domain}`)
    // The key is the one whose peer the payload names as its signer.
    const claimed = s.payload?.[SIGNER_FIELD[s.domain]]
    const signerKey = keys.find((k) => k.peerId === claimed)
    check(signerKey != null, `${at}: payload.${SIGNER_FIELD[s.domain]} is ${claimed}, not the peer of any key in the file (${keys.map((k) => k.name).join(', ')})`)
    const { privateKey, publicKey: vectorKey } = signerKey
    const payload = fromHex(s.payload_hex)
    const input = signingInput(s.domain, payload)
    equalHex(input, s.signing_input_hex, `${at}.signing_input_hex (expected "infernet:${s.domain}\\0" || payload)`)
    const signature = fromHex(s.signature_hex)
    check(await vectorKey.verify(input, signature) === true, `${at}: signature_hex does not verify with the vector key`)
    const mine = await privateKey.sign(input)
    equalHex(mine, s.signature_hex, `${at}: signing the payload bytes with the seed`)
    // The envelope: exactly {payload, signature, public_key}, those bytes.
    const env = decodeCbor(fromHex(s.envelope_hex))
    check(env != null && typeof env === 'object' && !Array.isArray(env), `${at}.envelope_hex: not a CBOR map`)
    const envKeys = Object.keys(env).sort()
    check(envKeys.join(',') === 'payload,public_key,signature', `${at}.envelope_hex: keys ${envKeys.join(',')}, expected payload, signature, public_key`)
    check(env.payload instanceof Uint8Array && bytesEqual(env.payload, payload), `${at}.envelope_hex: payload is not payload_hex as a byte string`)
    check(env.signature instanceof Uint8Array && bytesEqual(env.signature, signature), `${at}.envelope_hex: signature is not signature_hex as a byte string`)
    check(env.public_key instanceof Uint8Array && toHex(env.public_key) === signerKey.protobufHex, `${at}.envelope_hex: public_key is not ${signerKey.name}'s`)
    // The payload decodes to its JSON view.
    const decoded = decodeCbor(payload)
    const diff = compareJsonView(decoded, s.payload)
    check(diff == null, `${at}: payload_hex does not decode to the JSON view: ${diff}`)
    // And the envelope passes the receiver's full check (signer field is the key's peer).
    try {
      const { signer } = await verifySigned(env, s.domain)
      check(signer === signerKey.peerId, `${at}: signer ${signer} is not ${signerKey.name}'s peer`)
    } catch (e) {
      if (e instanceof WireError) throw new Mismatch(`${at}: envelope does not verify as Signed<${s.domain}> (signer field ${SIGNER_FIELD[s.domain]}): ${e.message}`)
      throw e
    }
    if (emitPath) {
      const ours = encodeCbor(decodeCborKeepFloats(payload))
      const signed = await signPayloadBytes(privateKey, s.domain, ours)
      emitted.signed.push({
        name: s.name,
        domain: s.domain,
        payload: s.payload,
        payload_hex: toHex(ours),
        signature_hex: toHex(signed.envelope.signature),
        envelope_hex: toHex(signed.bytes),
        same_bytes_as_vector: bytesEqual(ours, payload)
      })
    }
    checked++
  }

  // -- a Result's output: CBOR of an Output, hashed as received
  if (v.result_output != null) {
    const r = v.result_output
    const bytes = fromHex(r.output_hex)
    check(sha256Hex(bytes) === r.output_hash, `result_output.output_hash: sha256 of output_hex is ${sha256Hex(bytes)}, vector has ${r.output_hash}`)
    const decoded = decodeCbor(bytes)
    const diff = compareJsonView(decoded, r.output)
    check(diff == null, `result_output: output_hex does not decode to the JSON view: ${diff}`)
    try {
      enumVariant(decoded, OUTPUT_VARIANTS, 'Output')
    } catch (e) {
      throw new Mismatch(`result_output: ${e.message}`)
    }
    checked++
  }

  // -- DHT keys
  for (const d of v.dht_keys ?? []) {
    const at = `dht_keys[${d.model}]`
    const { multihash, cid } = await modelKey(d.model)
    equalHex(multihash, d.multihash_hex, `${at}.multihash_hex (0x1220 || sha256("infernet/model/${d.model}"))`)
    check(cid.toString() === d.cid, `${at}.cid: got ${cid}, vector has ${d.cid}`)
    checked++
  }

  // -- frames
  for (const f of v.frames ?? []) {
    const at = `frames[${f.name}]`
    const bytes = fromHex(f.frame_hex)
    const len = decodeVarint(bytes, 0)
    check(len != null, `${at}: frame_hex ends inside the length varint`)
    check(len.value === bytes.length - len.length, `${at}: varint says ${len.value} bytes, the body has ${bytes.length - len.length}`)
    let body
    try {
      body = unframe(bytes, MAX_RESPONSE_BYTES).body
    } catch (e) {
      throw new Mismatch(`${at}: ${e.message}`)
    }
    const msg = decodeCbor(body)
    const diff = compareJsonView(msg, f.message)
    check(diff == null, `${at}: body does not decode to the JSON view: ${diff}`)
    let parsed
    try {
      parsed = parseJobMessage(msg)
    } catch (e) {
      throw new Mismatch(`${at}: not a valid JobMessage: ${e.message}`)
    }
    // Signed parts inside frames must verify too.
    try {
      if (parsed.variant === 'Result') {
        const { payload } = await verifySigned(parsed.fields.signed, DOMAIN.result)
        check(payload.output_hash === sha256Hex(parsed.fields.output), `${at}: Result output_hash is not sha256 of its output bytes`)
      } else if (parsed.variant === 'Receipt') {
        await verifySigned(parsed.fields, DOMAIN.receipt)
      }
    } catch (e) {
      if (e instanceof WireError) throw new Mismatch(`${at}: ${e.message}`)
      throw e
    }
    if (emitPath) {
      const ours = encodeFrame(decodeCborKeepFloats(body), MAX_RESPONSE_BYTES)
      emitted.frames.push({ name: f.name, message: f.message, frame_hex: toHex(ours), same_bytes_as_vector: bytesEqual(ours, bytes) })
    }
    checked++
  }

  if (emitPath) writeFileSync(emitPath, JSON.stringify(emitted, null, 2) + '\n')
  console.log(JSON.stringify({ ok: true, checked }))
}

main().catch((e) => {
  const msg = e instanceof Mismatch || e instanceof WireError ? e.message : (e?.stack ?? String(e))
  console.error(`vectors: MISMATCH: ${msg}`)
  console.log(JSON.stringify({ ok: false, error: msg }))
  process.exit(1)
})
