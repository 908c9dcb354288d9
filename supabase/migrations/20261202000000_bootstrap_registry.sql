-- The bootstrap registry (DESIGN §8): a table of bootstrap nodes that anyone
-- holding the project's (public) anon key can read, and that is written only
-- through `public.register_node(record, signature)`, which verifies the
-- record's Ed25519 signature against the key inside the record's peer id.
--
-- Threat model: the anon key is public. Supabase grants `anon` ALL on every
-- table and function in `public` by default, so everything below revokes
-- explicitly and relies on row-level security, never on the defaults.
-- See supabase/README.md.

create extension if not exists pgcrypto with schema extensions;

-- Private schema: helpers and settings, not exposed by PostgREST (only the
-- schemas in [api] schemas are) and unusable by anon/authenticated anyway.
create schema if not exists registry_private;
revoke all on schema registry_private from public;
revoke all on schema registry_private from anon, authenticated;
alter default privileges in schema registry_private revoke execute on functions from public;
alter default privileges in schema registry_private revoke all on tables from public;

------------------------------------------------------------------------------
-- Settings (one row). Change with e.g.
--   update registry_private.settings set min_interval_secs = 30;
------------------------------------------------------------------------------
create table registry_private.settings (
  id boolean primary key default true check (id),
  -- A peer may register at most once per this many seconds (else PT429).
  min_interval_secs integer not null default 10 check (min_interval_secs >= 0),
  -- A record's ttl is clamped to this.
  max_ttl_secs integer not null default 3600 check (max_ttl_secs >= 30),
  -- At most this many rows (new peers are refused with PT503 beyond it).
  max_rows integer not null default 10000 check (max_rows >= 0),
  -- Rows expired for longer than this are deleted by prune_bootstrap_nodes().
  prune_grace_secs integer not null default 3600 check (prune_grace_secs >= 0),
  -- A record's timestamp must be within this many seconds of now().
  max_clock_skew_secs integer not null default 300 check (max_clock_skew_secs between 0 and 86400)
);
insert into registry_private.settings default values;
revoke all on table registry_private.settings from public, anon, authenticated;

------------------------------------------------------------------------------
-- The table.
------------------------------------------------------------------------------
create table public.bootstrap_nodes (
  -- The node's libp2p peer id (ed25519 key, base58btc: 12D3KooW + 44 chars).
  peer_id text primary key check (peer_id ~ '^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$'),
  multiaddrs text[] not null check (cardinality(multiaddrs) between 1 and 16),
  models text[] not null check (cardinality(models) <= 64),
  contract_version text not null check (length(contract_version) between 1 and 64),
  protocol_version text not null check (length(protocol_version) between 1 and 64),
  -- The signed record, byte for byte as the node sent it (never re-serialized).
  record text not null check (octet_length(record) <= 4096),
  -- Ed25519 signature over 'infernet/registry-record/1' || 0x00 || record, 128 lowercase hex.
  signature text not null check (signature ~ '^[0-9a-f]{128}$'),
  -- The record's "timestamp" (unix seconds); a new record must be strictly newer.
  record_timestamp bigint not null,
  -- When the registry accepted the record (rate limiting: min_interval_secs).
  last_seen timestamptz not null default now(),
  expires_at timestamptz not null
);
create index bootstrap_nodes_expires_at_idx on public.bootstrap_nodes (expires_at);

comment on table public.bootstrap_nodes is
  'Infernet bootstrap nodes. Read-only for anon/authenticated (active rows only); written only by register_node().';

-- Row-level security: anon and authenticated read active rows; there is no
-- insert/update/delete policy, so nobody but the owner (register_node runs as
-- the owner) and service_role (BYPASSRLS, secret key) writes.
alter table public.bootstrap_nodes enable row level security;

create policy "active rows are readable" on public.bootstrap_nodes
  for select to anon, authenticated
  using (expires_at > now());

-- Undo Supabase's default "grant all to anon, authenticated" on this table:
-- privileges are the first line, RLS the second.
revoke all on table public.bootstrap_nodes from public, anon, authenticated;
grant select on table public.bootstrap_nodes to anon, authenticated;

-- The view clients read. security_invoker: the caller's privileges and the
-- table's RLS policy apply (a plain view would run as its owner and bypass RLS);
-- the where clause repeats the policy so the view means "active" for everyone,
-- service_role included.
create view public.active_bootstrap_nodes with (security_invoker = true) as
  select peer_id, multiaddrs, models, contract_version, protocol_version,
         record, signature, last_seen, expires_at
    from public.bootstrap_nodes
   where expires_at > now();

revoke all on table public.active_bootstrap_nodes from public, anon, authenticated;
grant select on table public.active_bootstrap_nodes to anon, authenticated;

------------------------------------------------------------------------------
-- Base58 (bitcoin alphabet) and peer ids.
------------------------------------------------------------------------------

-- Decodes base58btc; null on a character outside the alphabet.
create function registry_private.base58_decode(input text)
returns bytea
language plpgsql immutable strict parallel safe
set search_path = ''
as $$
declare
  alphabet constant text := '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  n numeric := 0;
  zeros integer := 0;
  len constant integer := length(input);
  c integer;
  out bytea := ''::bytea;
begin
  if len > 256 then
    return null;
  end if;
  while zeros < len and substr(input, zeros + 1, 1) = '1' loop
    zeros := zeros + 1;
  end loop;
  for i in zeros + 1 .. len loop
    c := strpos(alphabet, substr(input, i, 1)) - 1;
    if c < 0 then
      return null;
    end if;
    n := n * 58 + c;
  end loop;
  while n > 0 loop
    out := set_byte('\x00'::bytea, 0, mod(n, 256)::integer) || out;
    n := div(n, 256);
  end loop;
  return decode(repeat('00', zeros), 'hex') || out;
end;
$$;

-- The 32-byte Ed25519 public key inside a libp2p peer id, or null when the
-- text is not an Ed25519 peer id: base58btc of 00 24 08 01 12 20 || key
-- (identity multihash of the protobuf-encoded public key).
create function registry_private.peer_id_public_key(peer_id text)
returns bytea
language plpgsql immutable strict parallel safe
set search_path = ''
as $$
declare
  raw bytea;
begin
  if peer_id !~ '^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$' then
    return null;
  end if;
  raw := registry_private.base58_decode(peer_id);
  if raw is null or length(raw) <> 38 or substring(raw from 1 for 6) <> '\x002408011220'::bytea then
    return null;
  end if;
  return substring(raw from 7 for 32);
end;
$$;

------------------------------------------------------------------------------
-- Ed25519 (RFC 8032, cofactorless, the check of ed25519-dalek's `verify`):
-- decode A (reject a non-canonical y or a non-point), reject s >= L,
-- k = SHA-512(R || A || M) mod L, and accept iff encode([s]B - [k]A) == R.
-- Field arithmetic in numeric mod p = 2^255 - 19; points in extended
-- twisted-Edwards coordinates (X:Y:Z:T), no inversion but the final one;
-- [s]B + [k](-A) in one double-and-add pass (Straus/Shamir).
------------------------------------------------------------------------------

-- b^e mod p (square and multiply).
create function registry_private.ed25519_pow(b numeric, e numeric)
returns numeric
language plpgsql immutable strict parallel safe
set search_path = ''
as $$
declare
  p constant numeric := 57896044618658097711785492504343953926634992332820282019728792003956564819949;
  r numeric := 1;
begin
  b := mod(b, p);
  while e > 0 loop
    if mod(e, 2) = 1 then
      r := mod(r * b, p);
    end if;
    b := mod(b * b, p);
    e := div(e, 2);
  end loop;
  return r;
end;
$$;

create function registry_private.ed25519_verify(public_key bytea, message bytea, signature bytea)
returns boolean
language plpgsql immutable strict parallel safe
set search_path = ''
as $$
declare
  p constant numeric := 57896044618658097711785492504343953926634992332820282019728792003956564819949;
  l constant numeric := 7237005577332262213973186563042994240857116359379907606001950938285454250989;
  d constant numeric := 37095705934669439343138083508754565189542113879843219016388785533085940283555;
  d2 constant numeric := 16295367250680780974490674513165176452449235426866156013048779062215315747161;
  sqrt_m1 constant numeric := 19681161376707505956807079304988542015446066515923890162744021073123829784752;
  -- The base point B (affine, Z = 1) and its T * 2d.
  bx constant numeric := 15112221349535400772501151409588531511454012693041857206046113283949847762202;
  b_y constant numeric := 46316835694926478169428394003475163141307993866256225615783033603165251855960;
  bt2d constant numeric := 50237614328228664512531835696112167678046477356841409204013502641986506238568;
  r_bytes bytea;
  s_bytes bytea;
  k_bytes bytea;
  h bytea;
  s numeric := 0;
  k numeric := 0;
  ay numeric := 0;
  ax numeric;
  a_sign integer;
  ry numeric := 0;
  r_sign integer;
  u numeric; v numeric; v3 numeric; vx2 numeric;
  -- -A (affine) and B + (-A) (projective), each with T * 2d.
  nax numeric; nay numeric; nat2d numeric;
  cx numeric; cy numeric; cz numeric; ct2d numeric;
  -- The accumulator Q and the addend P.
  qx numeric := 0; qy numeric := 1; qz numeric := 1; qt numeric := 0;
  px numeric; py numeric; pz numeric; pt2d numeric;
  fa numeric; fb numeric; fc numeric; fd numeric; fe numeric; ff numeric; fg numeric; fh numeric;
  sb integer; kb integer;
  zinv numeric; x numeric; y numeric;
begin
  if length(public_key) <> 32 or length(signature) <> 64 then
    return false;
  end if;
  r_bytes := substring(signature from 1 for 32);
  s_bytes := substring(signature from 33 for 32);

  -- s (little-endian) must be < L.
  for i in reverse 31 .. 0 loop
    s := s * 256 + get_byte(s_bytes, i);
  end loop;
  if s >= l then
    return false;
  end if;

  -- Decode A: y little-endian with bit 255 the sign of x.
  a_sign := get_bit(public_key, 255);
  ay := get_byte(public_key, 31) & 127;
  for i in reverse 30 .. 0 loop
    ay := ay * 256 + get_byte(public_key, i);
  end loop;
  if ay >= p then
    return false;
  end if;
  u := mod(ay * ay - 1, p);
  v := mod(d * mod(ay * ay, p) + 1, p);
  v3 := mod(mod(v * v, p) * v, p);
  -- x = u v^3 (u v^7)^((p-5)/8)
  ax := mod(mod(u * v3, p) * registry_private.ed25519_pow(mod(mod(u * v3, p) * mod(v3 * v, p), p),
        7237005577332262213973186563042994240829374041602535252466099000494570602493), p);
  vx2 := mod(mod(ax * ax, p) * v, p);
  if mod(vx2 - u, p) = 0 then
    null;
  elsif mod(vx2 + u, p) = 0 then
    ax := mod(ax * sqrt_m1, p);
  else
    return false;
  end if;
  if ax < 0 then
    ax := ax + p;
  end if;
  if ax = 0 and a_sign = 1 then
    return false;
  end if;
  if mod(ax, 2) <> a_sign then
    ax := p - ax;
  end if;

  -- R's encoding: y and the sign of x (compared to [s]B - [k]A at the end).
  r_sign := get_bit(r_bytes, 255);
  ry := get_byte(r_bytes, 31) & 127;
  for i in reverse 30 .. 0 loop
    ry := ry * 256 + get_byte(r_bytes, i);
  end loop;
  if ry >= p then
    return false;
  end if;

  -- k = SHA-512(R || A || M) mod L, as 32 little-endian bytes.
  h := extensions.digest(r_bytes || public_key || message, 'sha512');
  for i in reverse 63 .. 0 loop
    k := k * 256 + get_byte(h, i);
  end loop;
  k := mod(k, l);
  k_bytes := decode(repeat('00', 32), 'hex');
  for i in 0 .. 31 loop
    k_bytes := set_byte(k_bytes, i, mod(k, 256)::integer);
    k := div(k, 256);
  end loop;

  -- -A = (-x, y), and C = B + (-A) (add-2008-hwcd-3 with Z1 = Z2 = 1).
  nax := mod(p - ax, p);
  nay := ay;
  nat2d := mod(mod(nax * nay, p) * d2, p);
  fa := mod((b_y - bx) * (nay - nax), p);
  fb := mod((b_y + bx) * (nay + nax), p);
  fc := mod(bt2d * mod(nax * nay, p), p);
  fd := 2;
  fe := fb - fa; ff := fd - fc; fg := fd + fc; fh := fb + fa;
  cx := mod(fe * ff, p); cy := mod(fg * fh, p); cz := mod(ff * fg, p);
  ct2d := mod(mod(fe * fh, p) * d2, p);

  -- Q = [s]B + [k](-A), bits 252..0 (s, k < L < 2^253).
  for i in reverse 252 .. 0 loop
    -- Q = 2Q (dbl-2008-hwcd).
    fa := mod(qx * qx, p);
    fb := mod(qy * qy, p);
    fc := 2 * mod(qz * qz, p);
    fh := fa + fb;
    fe := fh - mod((qx + qy) * (qx + qy), p);
    fg := fa - fb;
    ff := fc + fg;
    qx := mod(fe * ff, p);
    qy := mod(fg * fh, p);
    qt := mod(fe * fh, p);
    qz := mod(ff * fg, p);

    sb := get_bit(s_bytes, i);
    kb := get_bit(k_bytes, i);
    if sb = 1 or kb = 1 then
      if sb = 1 and kb = 1 then
        px := cx; py := cy; pz := cz; pt2d := ct2d;
      elsif sb = 1 then
        px := bx; py := b_y; pz := 1; pt2d := bt2d;
      else
        px := nax; py := nay; pz := 1; pt2d := nat2d;
      end if;
      -- Q = Q + P (add-2008-hwcd-3).
      fa := mod((qy - qx) * (py - px), p);
      fb := mod((qy + qx) * (py + px), p);
      fc := mod(qt * pt2d, p);
      if pz = 1 then
        fd := 2 * qz;
      else
        fd := mod(2 * qz * pz, p);
      end if;
      fe := fb - fa; ff := fd - fc; fg := fd + fc; fh := fb + fa;
      qx := mod(fe * ff, p);
      qy := mod(fg * fh, p);
      qt := mod(fe * fh, p);
      qz := mod(ff * fg, p);
    end if;
  end loop;

  -- encode(Q) == R?
  zinv := registry_private.ed25519_pow(mod(qz + p, p), p - 2);
  x := mod(mod(qx * zinv, p) + p, p);
  y := mod(mod(qy * zinv, p) + p, p);
  return y = ry and mod(x, 2) = r_sign;
end;
$$;

-- The message a registry record's signature covers.
create function registry_private.record_signing_bytes(record text)
returns bytea
language sql immutable strict parallel safe
set search_path = ''
as $$
  select convert_to('infernet/registry-record/1', 'UTF8') || '\x00'::bytea || convert_to(record, 'UTF8');
$$;

------------------------------------------------------------------------------
-- Pruning. Schedule on Supabase with pg_cron (see README):
--   select cron.schedule('prune-bootstrap-nodes', '*/15 * * * *',
--                        'select registry_private.prune_bootstrap_nodes()');
------------------------------------------------------------------------------
create function registry_private.prune_bootstrap_nodes()
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  grace integer;
  n integer;
begin
  select s.prune_grace_secs into grace from registry_private.settings s where s.id;
  delete from public.bootstrap_nodes b
   where b.expires_at < now() - make_interval(secs => coalesce(grace, 3600));
  get diagnostics n = row_count;
  return n;
end;
$$;

------------------------------------------------------------------------------
-- register_node: the only write path.
--
-- Errors (SQLSTATE -> PostgREST HTTP status):
--   22023 (400) a malformed argument; the message names the field.
--   28000 (403) the signature does not verify against the peer id's key.
--   PT429 (429) this peer registered less than min_interval_secs ago.
--   PT503 (503) the registry is full (max_rows).
------------------------------------------------------------------------------
create function public.register_node(record text, signature text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  cfg registry_private.settings;
  j json;
  keys text[];
  key_count integer;
  peer text;
  pubkey bytea;
  addrs text[];
  mdls text[];
  contract text;
  protocol text;
  ts bigint;
  ttl bigint;
  ttl_eff integer;
  now_secs bigint;
  expires timestamptz;
  elem json;
  s text;
  existing public.bootstrap_nodes;
  is_new boolean;
  row_total bigint;
  invalid constant text := '22023';
begin
  if record is null or signature is null then
    raise exception 'record and signature are required' using errcode = invalid;
  end if;
  if octet_length(record) > 4096 then
    raise exception 'record is % bytes, at most 4096 are allowed', octet_length(record)
      using errcode = invalid;
  end if;
  if signature !~ '^[0-9a-f]{128}$' then
    raise exception 'signature must be 128 lowercase hex characters (64 bytes)'
      using errcode = invalid;
  end if;

  select * into cfg from registry_private.settings where id;

  -- Shape. json keeps the text of every token (and duplicate keys); jsonb
  -- additionally refuses \u0000.
  begin
    j := record::json;
    perform record::jsonb;
  exception when others then
    raise exception 'record is not valid JSON: %', sqlerrm using errcode = invalid;
  end;
  if json_typeof(j) <> 'object' then
    raise exception 'record must be a JSON object' using errcode = invalid;
  end if;
  select array_agg(distinct k order by k), count(*) into keys, key_count from json_object_keys(j) k;
  if key_count <> 8 or keys is distinct from
       array['addrs', 'contract', 'models', 'peer_id', 'protocol', 'timestamp', 'ttl', 'v'] then
    raise exception 'record must have exactly the keys v, peer_id, addrs, models, contract, protocol, timestamp, ttl (each once), got %',
      (select string_agg(k, ', ') from json_object_keys(j) k)
      using errcode = invalid;
  end if;

  if json_typeof(j -> 'v') <> 'number' or j ->> 'v' <> '1' then
    raise exception 'record.v must be 1' using errcode = invalid;
  end if;

  if json_typeof(j -> 'peer_id') <> 'string' then
    raise exception 'record.peer_id must be a string' using errcode = invalid;
  end if;
  peer := j ->> 'peer_id';
  pubkey := registry_private.peer_id_public_key(peer);
  if pubkey is null then
    raise exception 'record.peer_id is not an Ed25519 libp2p peer id (12D3KooW...)' using errcode = invalid;
  end if;

  if json_typeof(j -> 'addrs') <> 'array' then
    raise exception 'record.addrs must be an array' using errcode = invalid;
  end if;
  if json_array_length(j -> 'addrs') not between 1 and 16 then
    raise exception 'record.addrs must have 1 to 16 entries, got %', json_array_length(j -> 'addrs')
      using errcode = invalid;
  end if;
  addrs := array[]::text[];
  for elem in select * from json_array_elements(j -> 'addrs') loop
    if json_typeof(elem) <> 'string' then
      raise exception 'record.addrs entries must be strings' using errcode = invalid;
    end if;
    s := elem #>> '{}';
    if length(s) > 256 then
      raise exception 'record.addrs entry is % characters, at most 256 are allowed', length(s)
        using errcode = invalid;
    end if;
    if s !~ '^/[!-~]*$' then
      raise exception 'record.addrs entry % must start with / and be printable ASCII', s
        using errcode = invalid;
    end if;
    if right(s, 57) <> '/p2p/' || peer then
      raise exception 'record.addrs entry % must end with /p2p/% (the record''s own peer id)', s, peer
        using errcode = invalid;
    end if;
    addrs := addrs || s;
  end loop;

  if json_typeof(j -> 'models') <> 'array' then
    raise exception 'record.models must be an array' using errcode = invalid;
  end if;
  if json_array_length(j -> 'models') > 64 then
    raise exception 'record.models must have at most 64 entries, got %', json_array_length(j -> 'models')
      using errcode = invalid;
  end if;
  mdls := array[]::text[];
  for elem in select * from json_array_elements(j -> 'models') loop
    if json_typeof(elem) <> 'string' then
      raise exception 'record.models entries must be strings' using errcode = invalid;
    end if;
    s := elem #>> '{}';
    if length(s) not between 1 and 128 or s ~ '[[:cntrl:]]' then
      raise exception 'record.models entries must be 1 to 128 characters without control characters'
        using errcode = invalid;
    end if;
    mdls := mdls || s;
  end loop;

  if json_typeof(j -> 'contract') <> 'string' or (j ->> 'contract') !~ '^[!-~]{1,64}$' then
    raise exception 'record.contract must be 1 to 64 printable ASCII characters' using errcode = invalid;
  end if;
  contract := j ->> 'contract';
  if json_typeof(j -> 'protocol') <> 'string' or (j ->> 'protocol') !~ '^[!-~]{1,64}$' then
    raise exception 'record.protocol must be 1 to 64 printable ASCII characters' using errcode = invalid;
  end if;
  protocol := j ->> 'protocol';

  -- Integers as written (json keeps the token: 1e9 or 1.0 are refused).
  if json_typeof(j -> 'timestamp') <> 'number' or (j ->> 'timestamp') !~ '^(0|[1-9][0-9]{0,11})$' then
    raise exception 'record.timestamp must be a non-negative integer (unix seconds)' using errcode = invalid;
  end if;
  ts := (j ->> 'timestamp')::bigint;
  if json_typeof(j -> 'ttl') <> 'number' or (j ->> 'ttl') !~ '^(0|[1-9][0-9]{0,8})$' then
    raise exception 'record.ttl must be a non-negative integer (seconds)' using errcode = invalid;
  end if;
  ttl := (j ->> 'ttl')::bigint;
  if ttl < 30 then
    raise exception 'record.ttl must be at least 30 seconds, got %', ttl using errcode = invalid;
  end if;
  ttl_eff := least(ttl, cfg.max_ttl_secs::bigint)::integer;

  now_secs := floor(extract(epoch from now()))::bigint;
  if abs(ts - now_secs) > cfg.max_clock_skew_secs then
    raise exception 'record.timestamp % is more than % seconds from the registry''s clock (%)',
      ts, cfg.max_clock_skew_secs, now_secs using errcode = invalid;
  end if;
  expires := least(to_timestamp(ts), now()) + make_interval(secs => ttl_eff);
  if expires <= now() then
    raise exception 'record has already expired (timestamp + ttl is in the past)' using errcode = invalid;
  end if;

  -- Per-peer checks against the stored row (locked: concurrent calls for one
  -- peer serialize here).
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('infernet.register_node:' || peer));
  select * into existing from public.bootstrap_nodes b where b.peer_id = peer for update;
  is_new := not found;
  if not is_new then
    if existing.last_seen > now() - make_interval(secs => cfg.min_interval_secs) then
      raise exception 'peer % registered less than % seconds ago; retry later', peer, cfg.min_interval_secs
        using errcode = 'PT429',
              hint = 'register at most once per min_interval_secs';
    end if;
    if ts <= existing.record_timestamp then
      raise exception 'record.timestamp % is not newer than the registered record''s (%): replayed or stale record',
        ts, existing.record_timestamp using errcode = invalid;
    end if;
  end if;

  -- The signature, last (the expensive check).
  if not registry_private.ed25519_verify(pubkey, registry_private.record_signing_bytes(record),
                                         decode(signature, 'hex')) then
    raise exception 'signature does not verify against the public key of peer id %', peer
      using errcode = '28000';
  end if;

  perform registry_private.prune_bootstrap_nodes();

  if is_new then
    -- A new peer: the row cap (serialized so concurrent newcomers cannot overshoot).
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('infernet.register_node:new'));
    select count(*) into row_total from public.bootstrap_nodes;
    if row_total >= cfg.max_rows then
      raise exception 'the bootstrap registry is full (% rows)', cfg.max_rows
        using errcode = 'PT503';
    end if;
  end if;

  insert into public.bootstrap_nodes as b
    (peer_id, multiaddrs, models, contract_version, protocol_version, record, signature,
     record_timestamp, last_seen, expires_at)
  values (peer, addrs, mdls, contract, protocol, record, signature, ts, now(), expires)
  on conflict (peer_id) do update set
    multiaddrs = excluded.multiaddrs,
    models = excluded.models,
    contract_version = excluded.contract_version,
    protocol_version = excluded.protocol_version,
    record = excluded.record,
    signature = excluded.signature,
    record_timestamp = excluded.record_timestamp,
    last_seen = excluded.last_seen,
    expires_at = excluded.expires_at;

  return jsonb_build_object('peer_id', peer, 'expires_at', expires, 'ttl', ttl_eff);
end;
$$;

comment on function public.register_node(text, text) is
  'Registers (or refreshes) a bootstrap node from its signed record; see supabase/README.md.';

-- Execute rights: register_node for anon and authenticated only; the helpers
-- for nobody but the owner (and service_role/postgres by ownership or grant).
revoke all on function public.register_node(text, text) from public;
grant execute on function public.register_node(text, text) to anon, authenticated, service_role;

revoke all on all functions in schema registry_private from public, anon, authenticated;
revoke all on all tables in schema registry_private from public, anon, authenticated;
