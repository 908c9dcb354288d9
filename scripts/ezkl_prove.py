#!/usr/bin/env python3
"""ezkl (Halo2/KZG over BN254) driver for infernet-verifier's `EzklProver`.

Called by `verifier/src/ezkl.rs` as

    python scripts/ezkl_prove.py SUBCOMMAND RESULT.json  < REQUEST.json

reading one JSON request on stdin and writing one JSON result to RESULT.json
(stdout/stderr are left to ezkl's own chatter). Every result carries
`peak_rss_kib` (this process's VmHWM: ezkl runs in-process as a Rust
extension, so this is the peak of the whole prover/verifier step) and
`timings` (seconds per ezkl call). On failure the result is
`{"error": "...", "kind": "..."}` and the exit status is 2.

Subcommands:

  version   -> {"ezkl": "23.0.5", "onnx": ...}
  setup     {onnx, dir, srs_dir, scale, decomp_base, decomp_legs, calibration}
            gen_settings -> calibrate_settings (target "resources", the given
            scale for inputs and params, calibration inputs as floats) ->
            compile_circuit -> gen_srs (only if srs_dir/kzg<logrows>.srs is
            missing; generated locally, never downloaded) -> setup.
            -> {settings, compiled, pk, vk, srs, logrows, ...}
  vk        {onnx, settings, srs, dir}: compile_circuit -> setup, keeping
            only the verifying key (a verifier deriving its own key; Halo2
            keygen is deterministic) -> {vk}
  prove     {dir, srs, input}: gen_witness -> prove -> verify (self-check)
            -> {instances (hex, little-endian field elements), outputs (ints),
                proof (hex)}
  outputs   {dir, inputs}: gen_witness per input, no proof -> {outputs}
  verify    {settings, vk, srs, tmp_dir, instances, proof}: builds a proof
            file from the given instances and proof bytes (never from a
            prover's file) -> verify -> {ok, kind: "ok" | "rejected" | "malformed", message}

The SRS from `ezkl.gen_srs` is produced from local randomness: fine for
benchmarks and tests, but its toxic waste is known to this machine. Production
use needs a ceremony SRS (e.g. perpetual powers of tau) placed in srs_dir.
"""

import json
import os
import resource
import sys
import time
import traceback

try:
    import ezkl
except ImportError as e:  # reported as a typed error by the Rust side
    ezkl = None
    EZKL_IMPORT_ERROR = str(e)


def _rss_kib():
    """Peak RSS of this process image, KiB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a
    child of a large parent would report the parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Timer:
    def __init__(self):
        self.timings = {}

    def run(self, name, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        if hasattr(out, "__await__"):  # some ezkl versions return coroutines
            import asyncio

            async def _wait(c):
                return await c

            out = asyncio.run(_wait(out))
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t
        return out


def _write_json(path, obj):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _paths(d):
    return {
        "onnx": os.path.join(d, "network.onnx"),
        "settings": os.path.join(d, "settings.json"),
        "compiled": os.path.join(d, "network.compiled"),
        "pk": os.path.join(d, "pk.key"),
        "vk": os.path.join(d, "vk.key"),
    }


def cmd_version(_req):
    try:
        import onnx

        onnx_version = onnx.__version__
    except ImportError:  # only scripts/export_onnx.py needs it
        onnx_version = None
    return {"ezkl": ezkl.__version__, "onnx": onnx_version}


def cmd_outputs(req):
    """ezkl's integer outputs for many inputs, without proving (witness
    generation only)."""
    t = Timer()
    d = req["dir"]
    p = _paths(d)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    data = os.path.join(d, f"input-{tag}.json")
    wit = os.path.join(d, f"witness-{tag}.json")
    outputs = []
    try:
        for x in req["inputs"]:
            _write_json(data, {"input_data": [[float(v) for v in x]]})
            w = t.run("gen_witness", ezkl.gen_witness, data, p["compiled"], wit)
            outputs.append([ezkl.felt_to_int(f) for f in w["outputs"][0]])
    finally:
        for f in (data, wit):
            if os.path.exists(f):
                os.remove(f)
    return {"outputs": outputs, "timings": t.timings}


def cmd_setup(req):
    t = Timer()
    d = req["dir"]
    os.makedirs(d, exist_ok=True)
    os.makedirs(req["srs_dir"], exist_ok=True)
    p = _paths(d)
    with open(req["onnx"], "rb") as f:
        onnx_bytes = f.read()
    with open(p["onnx"] + ".tmp", "wb") as f:
        f.write(onnx_bytes)
    os.replace(p["onnx"] + ".tmp", p["onnx"])

    args = ezkl.PyRunArgs()
    args.input_visibility = "public"
    args.output_visibility = "public"
    args.param_visibility = "fixed"
    args.input_scale = int(req["scale"])
    args.param_scale = int(req["scale"])
    args.decomp_base = int(req["decomp_base"])
    args.decomp_legs = int(req["decomp_legs"])
    t.run("gen_settings", ezkl.gen_settings, p["onnx"], p["settings"], py_run_args=args)

    cal = os.path.join(d, "calibration.json")
    flat = [v for row in req["calibration"] for v in row]
    _write_json(cal, {"input_data": [flat]})
    t.run(
        "calibrate_settings",
        ezkl.calibrate_settings,
        cal,
        p["onnx"],
        p["settings"],
        "resources",
        scales=[int(req["scale"])],
    )
    t.run("compile_circuit", ezkl.compile_circuit, p["onnx"], p["compiled"], p["settings"])
    with open(p["settings"]) as f:
        settings = json.load(f)
    logrows = int(settings["run_args"]["logrows"])
    srs = os.path.join(req["srs_dir"], f"kzg{logrows}.srs")
    srs_generated = False
    if not os.path.exists(srs):
        tmp = f"{srs}.tmp-{os.getpid()}"
        t.run("gen_srs", ezkl.gen_srs, tmp, logrows)
        try:
            # First writer wins: a concurrent setup may have created it, and
            # keys made with one SRS must not be verified with another.
            os.link(tmp, srs)
            srs_generated = True
        except FileExistsError:
            pass
        os.remove(tmp)
    ok = t.run("setup", ezkl.setup, p["compiled"], p["vk"], p["pk"], srs_path=srs)
    if not ok:
        raise RuntimeError("ezkl.setup returned false")
    return {
        **p,
        "srs": srs,
        "srs_generated": srs_generated,
        "logrows": logrows,
        "num_rows": settings.get("num_rows"),
        "input_scales": settings.get("model_input_scales"),
        "output_scales": settings.get("model_output_scales"),
        "timings": t.timings,
    }


def cmd_vk(req):
    """Derive the verifying key from ONNX + settings + SRS (a verifier's own
    keygen: Halo2 keygen is deterministic, so it matches the prover's)."""
    t = Timer()
    d = req["dir"]
    os.makedirs(d, exist_ok=True)
    compiled = os.path.join(d, "network.compiled")
    vk = os.path.join(d, "vk.key")
    pk = os.path.join(d, f"pk-{os.getpid()}.key")
    t.run("compile_circuit", ezkl.compile_circuit, req["onnx"], compiled, req["settings"])
    try:
        if not t.run("setup", ezkl.setup, compiled, vk, pk, srs_path=req["srs"]):
            raise RuntimeError("ezkl.setup returned false")
    finally:
        if os.path.exists(pk):
            os.remove(pk)
    return {"vk": vk, "timings": t.timings}


def cmd_prove(req):
    t = Timer()
    d = req["dir"]
    p = _paths(d)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    data = os.path.join(d, f"input-{tag}.json")
    wit = os.path.join(d, f"witness-{tag}.json")
    proof = os.path.join(d, f"proof-{tag}.json")
    try:
        _write_json(data, {"input_data": [[float(v) for v in req["input"]]]})
        w = t.run("gen_witness", ezkl.gen_witness, data, p["compiled"], wit)
        t.run("prove", ezkl.prove, wit, p["compiled"], p["pk"], proof, srs_path=req["srs"])
        # Self-check: never hand out a proof that does not verify.
        if not t.run("verify", ezkl.verify, proof, p["settings"], p["vk"], srs_path=req["srs"]):
            raise RuntimeError("self-check: ezkl.verify returned false")
        with open(proof) as f:
            snark = json.load(f)
    finally:
        for f in (data, wit, proof):
            if os.path.exists(f):
                os.remove(f)
    if len(snark["instances"]) != 1:
        raise RuntimeError(f"expected one instance column, got {len(snark['instances'])}")
    outputs = [ezkl.felt_to_int(f) for f in w["outputs"][0]]
    return {
        "instances": snark["instances"][0],
        "outputs": outputs,
        "proof": bytes(snark["proof"]).hex(),
        "timings": t.timings,
    }


def cmd_verify(req):
    t = Timer()
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    path = os.path.join(req["tmp_dir"], f"verify-{tag}.json")
    try:
        proof = list(bytes.fromhex(req["proof"]))
        _write_json(path, {"instances": [req["instances"]], "proof": proof})
        try:
            ok = t.run("verify", ezkl.verify, path, req["settings"], req["vk"], srs_path=req["srs"])
            kind, msg = ("ok", "") if ok else ("rejected", "ezkl.verify returned false")
        except RuntimeError as e:
            msg = str(e)
            # Decoding failures vs. a well-formed proof that does not check.
            malformed = ("failed to load the proof", "Transcript error", "encoding")
            kind = "malformed" if any(m in msg for m in malformed) else "rejected"
    finally:
        if os.path.exists(path):
            os.remove(path)
    return {"ok": kind == "ok", "kind": kind, "message": msg, "timings": t.timings}


COMMANDS = {
    "version": cmd_version,
    "setup": cmd_setup,
    "vk": cmd_vk,
    "prove": cmd_prove,
    "verify": cmd_verify,
    "outputs": cmd_outputs,
}


def main(argv):
    if len(argv) != 2 or argv[0] not in COMMANDS:
        print(f"usage: ezkl_prove.py {{{'|'.join(COMMANDS)}}} RESULT.json < REQUEST.json", file=sys.stderr)
        return 64
    cmd, result_path = argv
    if ezkl is None:
        _write_json(result_path, {"error": EZKL_IMPORT_ERROR, "kind": "not_installed"})
        return 3
    try:
        req = json.load(sys.stdin)
        out = COMMANDS[cmd](req)
        out["peak_rss_kib"] = _rss_kib()
        _write_json(result_path, out)
        return 0
    except Exception as e:  # reported to the Rust side as a typed error
        traceback.print_exc()
        _write_json(
            result_path,
            {"error": f"{type(e).__name__}: {e}", "kind": "failed", "peak_rss_kib": _rss_kib()},
        )
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
