"""The Noise handshake from Python, checked against the cacophony and snow vectors (tests/vectors/noise/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SOURCE_ROOT

import libsim
from libsim import Action, Errc, HandshakeState, NoiseCipher, Pattern, Role

PROTOCOLS = {
    "Noise_XX_25519_AESGCM_SHA256": (Pattern.XX, NoiseCipher.AESGCM),
    "Noise_XX_25519_ChaChaPoly_SHA256": (Pattern.XX, NoiseCipher.CHACHAPOLY),
    "Noise_IK_25519_AESGCM_SHA256": (Pattern.IK, NoiseCipher.AESGCM),
    "Noise_IK_25519_ChaChaPoly_SHA256": (Pattern.IK, NoiseCipher.CHACHAPOLY),
}
HANDSHAKE_MESSAGES = {Pattern.XX: 3, Pattern.IK: 2}


def read_vec(path: Path) -> list[tuple[str, dict[str, str]]]:
    """The records of a .vec file: ('[Section]', {key: value}) per blank-line separated block."""
    records: list[tuple[str, dict[str, str]]] = []
    section = ""
    current: dict[str, str] = {}
    for raw in path.read_text().splitlines() + [""]:
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if not line:
            if current:
                records.append((section, current))
                current = {}
            continue
        key, _, value = line.partition("=")
        current[key.strip()] = value.strip()
    return records


def vectors(directory: Path) -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for name in ("cacophony.vec", "snow.vec"):
        for section, rec in read_vec(directory / name):
            if section in PROTOCOLS:
                out.append((name, section, rec))
    return out


VECTOR_DIR = Path(os.environ.get("SIM_NOISE_VECTORS") or SOURCE_ROOT / "tests" / "vectors" / "noise")
VECTORS = vectors(VECTOR_DIR) if VECTOR_DIR.is_dir() else []


def h(rec: dict[str, str], key: str) -> bytes:
    return bytes.fromhex(rec[key])


def parties(rec: dict[str, str], pattern: Pattern, cipher: NoiseCipher) -> tuple[HandshakeState, HandshakeState]:
    initiator = HandshakeState(
        pattern=pattern, cipher=cipher, role=Role.INITIATOR, static_private=h(rec, "init_static"),
        prologue=h(rec, "init_prologue"), fixed_ephemeral=h(rec, "init_ephemeral"),
        remote_static=h(rec, "init_remote_static") if "init_remote_static" in rec else None)
    responder = HandshakeState(
        pattern=pattern, cipher=cipher, role=Role.RESPONDER, static_private=h(rec, "resp_static"),
        prologue=h(rec, "resp_prologue"), fixed_ephemeral=h(rec, "resp_ephemeral"))
    return initiator, responder


def test_the_vector_files_are_there(noise_vectors_dir: Path) -> None:
    found = vectors(noise_vectors_dir)
    assert len(found) == 8, [s for _, s, _ in found]


@pytest.mark.parametrize(("section", "rec"), [(section, rec) for _, section, rec in VECTORS],
                         ids=[f"{name[:-4]}-{section}" for name, section, _ in VECTORS])
def test_vector(section: str, rec: dict[str, str]) -> None:
    pattern, cipher = PROTOCOLS[section]
    assert libsim.protocol_name(pattern, cipher) == section
    initiator, responder = parties(rec, pattern, cipher)
    count = int(rec["msg_count"])
    n_handshake = HANDSHAKE_MESSAGES[pattern]
    for i in range(n_handshake):
        sender, receiver = (initiator, responder) if i % 2 == 0 else (responder, initiator)
        assert sender.next_action == Action.WRITE_MESSAGE
        assert receiver.next_action == Action.READ_MESSAGE
        message = sender.write_message(h(rec, f"msg{i}_payload"))
        assert message == h(rec, f"msg{i}_ciphertext"), f"message {i}"
        assert receiver.read_message(message) == h(rec, f"msg{i}_payload")
    assert initiator.next_action == Action.SPLIT and responder.next_action == Action.SPLIT
    assert initiator.handshake_hash == responder.handshake_hash
    if "handshake_hash" in rec:
        assert initiator.handshake_hash == h(rec, "handshake_hash")
    assert initiator.remote_static == responder.local_static
    assert responder.remote_static == initiator.local_static
    i_send, i_recv = initiator.split()
    r_recv, r_send = responder.split()
    assert initiator.next_action == Action.COMPLETE
    for i in range(n_handshake, count):
        # after the handshake the initiator sends the even-numbered messages
        enc, dec = (i_send, r_recv) if i % 2 == 0 else (r_send, i_recv)
        ciphertext = enc.encrypt_with_ad(b"", h(rec, f"msg{i}_payload"))
        assert ciphertext == h(rec, f"msg{i}_ciphertext"), f"message {i}"
        assert dec.decrypt_with_ad(b"", ciphertext) == h(rec, f"msg{i}_payload")


def fresh_xx(cipher: NoiseCipher = NoiseCipher.CHACHAPOLY) -> tuple[HandshakeState, HandshakeState]:
    i_priv, _ = libsim.x25519_keypair()
    r_priv, _ = libsim.x25519_keypair()
    return (HandshakeState(pattern=Pattern.XX, cipher=cipher, role=Role.INITIATOR, static_private=i_priv),
            HandshakeState(pattern=Pattern.XX, cipher=cipher, role=Role.RESPONDER, static_private=r_priv))


def test_a_tampered_message_fails_the_handshake_for_good() -> None:
    initiator, responder = fresh_xx()
    responder.read_message(initiator.write_message())
    msg2 = bytearray(responder.write_message(b"payload"))
    msg2[40] ^= 0x01
    with pytest.raises(libsim.CryptoError) as info:
        initiator.read_message(bytes(msg2))
    assert info.value.code == Errc.AUTH_FAILED
    assert initiator.next_action == Action.FAILED
    assert isinstance(initiator.failure, libsim.CryptoError)
    assert initiator.handshake_hash == b""  # secrets wiped
    with pytest.raises(libsim.StateError):
        initiator.write_message()


def test_wrong_prologue_fails() -> None:
    i_priv, _ = libsim.x25519_keypair()
    r_priv, _ = libsim.x25519_keypair()
    initiator = HandshakeState(pattern=Pattern.XX, cipher=NoiseCipher.AESGCM, role=Role.INITIATOR,
                               static_private=i_priv, prologue=b"one")
    responder = HandshakeState(pattern=Pattern.XX, cipher=NoiseCipher.AESGCM, role=Role.RESPONDER,
                               static_private=r_priv, prologue=b"two")
    responder.read_message(initiator.write_message())
    with pytest.raises(libsim.CryptoError):
        initiator.read_message(responder.write_message())


def test_out_of_turn_and_bad_configuration() -> None:
    initiator, responder = fresh_xx()
    with pytest.raises(libsim.StateError):
        initiator.read_message(b"\x00" * 32)
    initiator2, _ = fresh_xx()
    with pytest.raises(libsim.StateError):
        initiator2.split()
    with pytest.raises(libsim.CryptoError) as info:
        HandshakeState(pattern=Pattern.XX, cipher=NoiseCipher.AESGCM, role=Role.INITIATOR, static_private=b"short")
    assert info.value.code == Errc.INVALID_KEY
    with pytest.raises(libsim.CryptoError):  # the IK initiator needs the responder's key
        HandshakeState(pattern=Pattern.IK, cipher=NoiseCipher.AESGCM, role=Role.INITIATOR, static_private=bytes(32))
    with pytest.raises(TypeError):
        HandshakeState(pattern="XX", cipher=NoiseCipher.AESGCM, role=Role.INITIATOR,  # type: ignore[arg-type]
                       static_private=bytes(32))
    with pytest.raises(libsim.FrameError):
        responder.read_message(b"")


def test_transport_ciphers_and_rekey() -> None:
    initiator, responder = fresh_xx(NoiseCipher.AESGCM)
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    responder.read_message(initiator.write_message())
    i_send, _ = initiator.split()
    r_recv, _ = responder.split()
    c = i_send.encrypt_with_ad(b"ad", b"secret")
    assert r_recv.decrypt_with_ad(b"ad", c) == b"secret"
    assert i_send.nonce == 1 and r_recv.nonce == 1
    with pytest.raises(libsim.CryptoError):
        r_recv.decrypt_with_ad(b"other ad", i_send.encrypt_with_ad(b"ad", b"x"))
    i_send.rekey()
    r_recv.rekey()
    r_recv.nonce = i_send.nonce
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"after rekey")) == b"after rekey"


def test_keys_and_fingerprints() -> None:
    private, public = libsim.x25519_keypair(rng=libsim.Rng.deterministic(b"k"))
    assert len(private) == 32 and len(public) == 32
    assert libsim.x25519_public_key(private) == public
    fp = libsim.fingerprint(public)
    groups = fp.split(" ")
    assert len(groups) == 16 and all(len(g) == 4 for g in groups)
    with pytest.raises(libsim.CryptoError):
        libsim.x25519_public_key(b"\x01" * 31)
