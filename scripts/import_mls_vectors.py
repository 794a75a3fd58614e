#!/usr/bin/python3
"""Convert the MLS working group's interop test vectors (JSON) into `.vec` files under tests/vectors/mls/.

Run from anywhere: `/usr/bin/python3 scripts/import_mls_vectors.py [--src DIR] [--out DIR]`; the default source is
../shared/vectors/mls/ (mlswg/mls-implementations `test-vectors/` @cfd4502, reduced there to ciphersuite 1).
The output depends only on the inputs (input order kept, no timestamps): re-running it reproduces the committed files
byte for byte. Only entries with cipher_suite 1 are kept (the suite-independent files have none).

Why .vec and not a JSON reader in the tests: the tests already read `.vec` through one generic reader
(tests/unit/vec_reader.h), and the nested JSON flattens naturally into one record per check (one record per
secret-tree leaf generation, one per key-schedule epoch). Arrays of optional integers (tree-math) are written
comma-separated with `-` for null; byte strings stay hex; text labels are written as given.
"""

import argparse
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from vecfmt import write_vec  # noqa: E402

ROOT = os.path.dirname(HERE)
DEFAULT_SRC = os.path.join(os.path.dirname(ROOT), "shared", "vectors", "mls")
DEFAULT_OUT = os.path.join(ROOT, "tests", "vectors", "mls")
UPSTREAM = "mlswg/mls-implementations test-vectors/ @cfd4502 (via ../shared/vectors/mls, suite-1 reduction)"


def text(value):
    value = str(value)
    assert value == value.strip() and "\n" not in value and "#" not in value[:1], value
    return value


def opt_list(values):
    return ",".join("-" if v is None else str(v) for v in values)


def suite1(entries):
    return [e for e in entries if e.get("cipher_suite", 1) == 1]


def tree_math(data):
    records = []
    for e in data:
        records.append({"n_leaves": str(e["n_leaves"]), "n_nodes": str(e["n_nodes"]), "root": str(e["root"]),
                        "left": opt_list(e["left"]), "right": opt_list(e["right"]),
                        "parent": opt_list(e["parent"]), "sibling": opt_list(e["sibling"])})
    return [("TreeMath", records)], len(records)


def crypto_basics(data):
    sections = {"RefHash": [], "ExpandWithLabel": [], "DeriveSecret": [], "DeriveTreeSecret": [],
                "SignWithLabel": [], "EncryptWithLabel": []}
    keys = {"RefHash": "ref_hash", "ExpandWithLabel": "expand_with_label", "DeriveSecret": "derive_secret",
            "DeriveTreeSecret": "derive_tree_secret", "SignWithLabel": "sign_with_label",
            "EncryptWithLabel": "encrypt_with_label"}
    for e in suite1(data):
        for name, key in keys.items():
            rec = {"cipher_suite": str(e["cipher_suite"])}
            for k, v in sorted(e[key].items()):
                rec[k] = text(v)
            sections[name].append(rec)
    return list(sections.items()), sum(len(v) for v in sections.values())


def secret_tree(data):
    sender, leaves = [], []
    for tc, e in enumerate(suite1(data)):
        sd = e["sender_data"]
        sender.append({"tc": str(tc), "sender_data_secret": sd["sender_data_secret"], "ciphertext": sd["ciphertext"],
                       "key": sd["key"], "nonce": sd["nonce"]})
        for leaf, gens in enumerate(e["leaves"]):
            for g in gens:
                leaves.append({"tc": str(tc), "n_leaves": str(len(e["leaves"])),
                               "encryption_secret": e["encryption_secret"], "leaf": str(leaf),
                               "generation": str(g["generation"]), "handshake_key": g["handshake_key"],
                               "handshake_nonce": g["handshake_nonce"], "application_key": g["application_key"],
                               "application_nonce": g["application_nonce"]})
    return [("SenderData", sender), ("Leaf", leaves)], len(sender) + len(leaves)


KEY_SCHEDULE_FIELDS = ["tree_hash", "commit_secret", "psk_secret", "confirmed_transcript_hash", "group_context",
                       "joiner_secret", "welcome_secret", "init_secret", "sender_data_secret", "encryption_secret",
                       "exporter_secret", "epoch_authenticator", "external_secret", "confirmation_key",
                       "membership_key", "resumption_psk", "external_pub"]


def key_schedule(data):
    records = []
    for tc, e in enumerate(suite1(data)):
        for n, ep in enumerate(e["epochs"]):
            rec = {"tc": str(tc), "group_id": e["group_id"], "initial_init_secret": e["initial_init_secret"],
                   "epoch": str(n)}
            for k in KEY_SCHEDULE_FIELDS:
                rec[k] = ep[k]
            ex = ep["exporter"]
            rec.update(exporter_label=ex["label"], exporter_context=ex["context"],
                       exporter_length=str(ex["length"]), exporter_value=ex["secret"])
            records.append(rec)
    return [("Epoch", records)], len(records)


def transcript_hashes(data):
    records = []
    for e in suite1(data):
        records.append({k: str(e[k]) for k in ["cipher_suite", "confirmation_key", "authenticated_content",
                                               "interim_transcript_hash_before", "confirmed_transcript_hash_after",
                                               "interim_transcript_hash_after"]})
    return [("TranscriptHash", records)], len(records)


def deserialization(data):
    records = [{"vlbytes_header": e["vlbytes_header"], "length": str(e["length"])} for e in data]
    return [("VarInt", records)], len(records)


def message_protection(data):
    records = []
    for e in suite1(data):
        records.append({k: str(e[k]) for k in sorted(e)})
    return [("MessageProtection", records)], len(records)


def tree_validation(data):
    # resolutions: node lists separated by "|", node indices by ","; tree_hashes comma-separated.
    records = []
    for tc, e in enumerate(suite1(data)):
        records.append({"tc": str(tc), "group_id": e["group_id"], "tree": e["tree"],
                        "resolutions": "|".join(",".join(str(n) for n in r) for r in e["resolutions"]),
                        "tree_hashes": ",".join(e["tree_hashes"])})
    return [("TreeValidation", records)], len(records)


def tree_operations(data):
    records = []
    for tc, e in enumerate(suite1(data)):
        records.append({"tc": str(tc), "tree_before": e["tree_before"], "tree_hash_before": e["tree_hash_before"],
                        "proposal": e["proposal"], "proposal_sender": str(e["proposal_sender"]),
                        "tree_after": e["tree_after"], "tree_hash_after": e["tree_hash_after"]})
    return [("TreeOperation", records)], len(records)


def welcome(data):
    records = [{k: str(e[k]) for k in ["cipher_suite", "init_priv", "signer_pub", "key_package", "welcome"]}
               for e in suite1(data)]
    return [("Welcome", records)], len(records)


def treekem(data):
    # path_secrets of a private leaf: "node:secret" comma-separated; of an update path: one entry per leaf index,
    # "-" where the JSON has null.
    groups, leaves, paths = [], [], []
    for tc, e in enumerate(suite1(data)):
        groups.append({"tc": str(tc), "group_id": e["group_id"], "epoch": str(e["epoch"]),
                       "confirmed_transcript_hash": e["confirmed_transcript_hash"], "ratchet_tree": e["ratchet_tree"]})
        for lp in e["leaves_private"]:
            leaves.append({"tc": str(tc), "index": str(lp["index"]), "encryption_priv": lp["encryption_priv"],
                           "signature_priv": lp["signature_priv"],
                           "path_secrets": ",".join(f'{p["node"]}:{p["path_secret"]}' for p in lp["path_secrets"])})
        for up in e["update_paths"]:
            paths.append({"tc": str(tc), "sender": str(up["sender"]), "update_path": up["update_path"],
                          "path_secrets": ",".join("-" if p is None else p for p in up["path_secrets"]),
                          "commit_secret": up["commit_secret"], "tree_hash_after": up["tree_hash_after"]})
    return [("Group", groups), ("LeafPrivate", leaves), ("UpdatePath", paths)], len(groups)


MESSAGE_FIELDS = ["mls_welcome", "mls_group_info", "mls_key_package", "ratchet_tree", "group_secrets",
                  "add_proposal", "update_proposal", "remove_proposal", "pre_shared_key_proposal", "re_init_proposal",
                  "external_init_proposal", "group_context_extensions_proposal", "commit",
                  "public_message_application", "public_message_proposal", "public_message_commit",
                  "private_message"]


def messages(data):
    records = []
    for n, e in enumerate(data):
        rec = {"n": str(n)}
        rec.update({k: e[k] for k in MESSAGE_FIELDS})
        records.append(rec)
    return [("Messages", records)], len(records)


def passive_epochs(data, source):
    # The epochs after the join, for the scenarios without external PSKs only (with PSKs the join is refused, so
    # their epochs cannot be followed): proposals comma-separated (empty when none).
    records = []
    for n, e in enumerate(suite1(data)):
        if e["external_psks"]:
            continue
        for i, ep in enumerate(e["epochs"]):
            records.append({"source": source, "n": str(n), "epoch": str(i), "proposals": ",".join(ep["proposals"]),
                            "commit": ep["commit"], "epoch_authenticator": ep["epoch_authenticator"]})
    return records


def passive_join(data, source):
    # The join part of the passive-client scenarios.
    records = []
    for n, e in enumerate(suite1(data)):
        records.append({"source": source, "n": str(n), "external_psks": str(len(e["external_psks"])),
                        "epochs": str(len(e["epochs"])), "key_package": e["key_package"],
                        "signature_priv": e["signature_priv"], "encryption_priv": e["encryption_priv"],
                        "init_priv": e["init_priv"], "welcome": e["welcome"],
                        "ratchet_tree": "-" if e["ratchet_tree"] is None else e["ratchet_tree"],
                        "initial_epoch_authenticator": e["initial_epoch_authenticator"]})
    return records


JOBS = [
    ("tree-math.json", "tree_math.vec", tree_math),
    ("crypto-basics.json", "crypto_basics.vec", crypto_basics),
    ("secret-tree.json", "secret_tree.vec", secret_tree),
    ("key-schedule.json", "key_schedule.vec", key_schedule),
    ("transcript-hashes.json", "transcript_hashes.vec", transcript_hashes),
    ("deserialization.json", "deserialization.vec", deserialization),
    ("message-protection.json", "message_protection.vec", message_protection),
    ("tree-validation.json", "tree_validation.vec", tree_validation),
    ("tree-operations.json", "tree_operations.vec", tree_operations),
    ("welcome.json", "welcome.vec", welcome),
    ("treekem.json", "treekem.vec", treekem),
    ("messages.json", "messages.vec", messages),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=DEFAULT_SRC)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    # The joins of the three passive-client files go into one .vec.
    join_records, epoch_records, sources = [], [], []
    for src_name in ["passive-client-welcome.json", "passive-client-handling-commit.json",
                     "passive-client-random.json"]:
        with open(os.path.join(args.src, src_name), "rb") as f:
            raw = f.read()
        join_records += passive_join(json.loads(raw), src_name)
        epoch_records += passive_epochs(json.loads(raw), src_name)
        sources.append(f"{src_name} sha256 {hashlib.sha256(raw).hexdigest()}")
    header = ["Generated by scripts/import_mls_vectors.py from the passive-client-*.json files; do not edit.",
              f"Upstream: {UPSTREAM}"] + sources + [
              f"Records: {len(join_records)} joins, {len(epoch_records)} epochs (scenarios without external PSKs)"]
    write_vec(os.path.join(args.out, "passive_client_join.vec"), header,
              [("Join", join_records), ("Epoch", epoch_records)])
    print(f"passive_client_join.vec: {len(join_records)} records")
    for src_name, out_name, fn in JOBS:
        with open(os.path.join(args.src, src_name), "rb") as f:
            raw = f.read()
        sections, count = fn(json.loads(raw))
        header = [
            f"Generated by scripts/import_mls_vectors.py from {src_name}; do not edit.",
            f"Upstream: {UPSTREAM}; source sha256 {hashlib.sha256(raw).hexdigest()}",
            f"Records: {count}",
        ]
        write_vec(os.path.join(args.out, out_name), header, sections)
        print(f"{out_name}: {count} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
