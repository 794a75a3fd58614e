#pragma once
/// @file
/// The secret tree and its per-sender hash ratchets (RFC 9420 s9), and the sender-data key (s6.3.2). Internal.
///
/// Forward secrecy (s9.2): a node's secret is erased as soon as both children are derived, a leaf's secret as
/// soon as its two ratchets exist, a ratchet secret as soon as the next one is derived, and a key as soon as it
/// is handed out. Keys of skipped generations are kept only for a bounded window (out-of-order delivery); a jump
/// further ahead than `max_generation_jump` is refused before anything is derived or allocated.

#include "codec.h"

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace sim::mls {

/// Largest forward jump of a receiving ratchet in one message (cf. libsignal's 25,000 and OpenMLS's 1,000).
inline constexpr std::uint32_t max_generation_jump = 1000;
/// Keys of skipped generations kept per ratchet for out-of-order messages; older skipped keys are dropped.
inline constexpr std::size_t max_skipped_keys = 64;

/// An AEAD key and nonce for one generation (s9.1).
struct KeyAndNonce {
    std::uint32_t generation = 0;
    SecureBytes key;    ///< AEAD.Nk = 16 bytes
    SecureBytes nonce;  ///< AEAD.Nn = 12 bytes
};

/// One hash ratchet (s9.1): ratchet_secret_[j] -> key_[j], nonce_[j], ratchet_secret_[j+1].
class HashRatchet {
public:
    /// A ratchet whose generation-0 secret is `secret` (Nh bytes).
    explicit HashRatchet(SecureBytes secret) : m_secret(std::move(secret)) {}

    /// For sending: the key of the next unused generation, then advance. Errc::limit_reached after
    /// generation 2^32 - 1.
    Result<KeyAndNonce> next();
    /// For receiving: the key of `generation`, consumed (a second request for it fails).
    /// Errc::replayed for a generation already handed out (or skipped and dropped from the window),
    /// Errc::out_of_window for a generation more than max_generation_jump ahead of the next one,
    /// Errc::limit_reached at the end of the generation space.
    Result<KeyAndNonce> get(std::uint32_t generation);
    /// The generation the next call to next() returns.
    [[nodiscard]] std::uint32_t next_generation() const noexcept { return m_next; }

    /// The saved-state encoding (docs/protocol.md 7.6): current secret, next generation, exhausted flag, the kept
    /// keys of skipped generations. Errc::frame_too_large only for impossible sizes.
    Status save(SecureTlsWriter& w) const;
    /// Read what save() wrote. Errc::bad_length for a secret, key or nonce of the wrong size, Errc::bad_field for
    /// skipped generations that are not increasing, not below the next one, or more than max_skipped_keys; codec
    /// errors.
    static Result<HashRatchet> load(TlsReader& r);

private:
    Result<KeyAndNonce> derive_current() const;
    Status advance();

    SecureBytes m_secret;  // ratchet_secret_[m_next]
    std::uint32_t m_next = 0;
    bool m_exhausted = false;
    std::map<std::uint32_t, KeyAndNonce> m_skipped;
};

/// Which of a leaf's two ratchets (s9.1).
enum class RatchetKind : std::uint8_t { handshake, application };

/// The secret tree of one epoch (s9).
class SecretTree {
public:
    /// A tree of `n_leaves` leaves (a power of two, 1..2^30, else Errc::invalid_argument) rooted at
    /// `encryption_secret` (Nh bytes, else Errc::invalid_argument).
    static Result<SecretTree> create(ByteView encryption_secret, std::uint32_t n_leaves);

    /// The ratchet of `leaf`, derived on first use. Errc::invalid_argument for a leaf outside the tree.
    Result<HashRatchet*> ratchet(std::uint32_t leaf, RatchetKind kind);
    [[nodiscard]] std::uint32_t leaves() const noexcept { return m_leaves; }

    /// The saved-state encoding (docs/protocol.md 7.6): leaf count, the node secrets not yet consumed, the
    /// ratchets derived so far.
    Status save(SecureTlsWriter& w) const;
    /// Read what save() wrote. Errc::bad_field for a leaf count that is not a power of two, a node or leaf outside
    /// the tree or listed twice or out of order; the errors of HashRatchet::load; codec errors.
    static Result<SecretTree> load(TlsReader& r);

private:
    SecretTree(SecureBytes root, std::uint32_t n_leaves);
    Status derive_leaf(std::uint32_t leaf);

    std::uint32_t m_leaves = 0;
    // Node secrets that exist now (sparse: a tree of 2^30 leaves must not allocate 2^31 slots); a missing node
    // is either not derived yet or already consumed.
    std::map<std::uint32_t, SecureBytes> m_nodes;
    std::map<std::uint32_t, HashRatchet> m_handshake;
    std::map<std::uint32_t, HashRatchet> m_application;
};

/// s6.3.2: the key and nonce that protect a PrivateMessage's sender data, from the sender_data_secret and the
/// message's ciphertext (its first Nh bytes, or all of it when shorter). Errc::invalid_argument when the secret
/// is not Nh bytes.
Result<KeyAndNonce> sender_data_key_nonce(ByteView sender_data_secret, ByteView ciphertext);

}  // namespace sim::mls
