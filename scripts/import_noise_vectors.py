#!/usr/bin/python3
"""Convert the Noise test vectors libsim replays into tests/vectors/noise/*.vec.

Reads the read-only copies in ../shared/vectors/ (cacophony and snow, see tests/vectors/SOURCES.md) and keeps every
non-PSK vector of the protocols libsim implements: Noise_{XX,IK}_25519_{AESGCM,ChaChaPoly}_SHA256.
The JSON `messages` array is flattened into msg<i>_payload / msg<i>_ciphertext fields; `msg_count` says how many.
Message i is sent by the initiator when i is even (the vectors alternate, starting with the initiator).

Usage: scripts/import_noise_vectors.py [--shared DIR] [--out DIR]
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vecfmt import write_vec  # noqa: E402

PROTOCOLS = [
    "Noise_XX_25519_AESGCM_SHA256",
    "Noise_XX_25519_ChaChaPoly_SHA256",
    "Noise_IK_25519_AESGCM_SHA256",
    "Noise_IK_25519_ChaChaPoly_SHA256",
]

# Scalar fields copied as they are (hex strings), in this order, when present and non-empty.
KEYS = [
    "init_prologue",
    "init_static",
    "init_ephemeral",
    "init_remote_static",
    "resp_prologue",
    "resp_static",
    "resp_ephemeral",
    "resp_remote_static",
    "handshake_hash",
]

SOURCES = {
    # name: (input file below the shared folder, licence files, origin line)
    "cacophony": (
        "cacophony/cacophony.txt",
        ["cacophony/LICENSE"],
        "haskell-cryptography/cacophony vectors/cacophony.txt @18b7348c (Unlicense)",
    ),
    "snow": (
        "snow/snow.txt",
        ["snow/LICENSE-MIT", "snow/LICENSE-APACHE"],
        "mcginty/snow tests/vectors/snow.txt @d00b360c (MIT OR Apache-2.0)",
    ),
}


def is_hex(s):
    try:
        bytes.fromhex(s)
        return True
    except ValueError:
        return False


def convert(vectors):
    """Return {protocol: [record, ...]} for the kept vectors."""
    out = {p: [] for p in PROTOCOLS}
    for v in vectors:
        name = v.get("protocol_name")
        if name not in out:
            continue
        if v.get("init_psks") or v.get("resp_psks"):
            continue  # PSK variants are not implemented
        rec = {}
        for key in KEYS:
            value = v.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not is_hex(value):
                raise ValueError(f"{name}: field {key} is not hex")
            rec[key] = value.lower()
        msgs = v["messages"]
        rec["msg_count"] = str(len(msgs))
        for i, m in enumerate(msgs):
            for part in ("payload", "ciphertext"):
                if not is_hex(m[part]):
                    raise ValueError(f"{name}: message {i} {part} is not hex")
                rec[f"msg{i}_{part}"] = m[part].lower()
        out[name].append(rec)
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(root), "shared", "vectors"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "vectors", "noise"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    total = 0
    for source, (rel, licences, origin) in SOURCES.items():
        with open(os.path.join(args.shared, rel), encoding="utf-8") as f:
            data = json.load(f)
        converted = convert(data["vectors"])
        count = sum(len(r) for r in converted.values())
        total += count
        header = [
            f"Noise vectors from {origin}",
            "converted by scripts/import_noise_vectors.py; do not edit by hand",
            "msg<i> is sent by the initiator when i is even; messages after the handshake use the Split() keys",
            f"{count} vectors",
        ]
        sections = [(p, recs) for p, recs in converted.items() if recs]
        write_vec(os.path.join(args.out, f"{source}.vec"), header, sections)
        for lic in licences:
            dest = os.path.join(args.out, f"{source}-{os.path.basename(lic)}")
            shutil.copyfile(os.path.join(args.shared, lic), dest)
            os.chmod(dest, 0o644)
        print(f"{source}: {count} vectors")
    print(f"total: {total}")


if __name__ == "__main__":
    main()
