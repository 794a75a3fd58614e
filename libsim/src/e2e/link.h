#pragma once
// Private: linking a new device to an account (docs/architecture.md, "Multi-device accounts"). Pure: the two sides'
// state machines, bytes in and bytes out; the server only carries the messages.
//
// A short authentication string with a commitment (as ZRTP, RFC 6189 section 4.4.1, uses one): the new device N
// commits to its ephemeral key before it sees the approver's, so a server in the middle, which must pick its own keys
// before it learns the other side's, matches the code the user compares with probability 2^-40 per attempt.
//
//   N -> E  request = device u32 | DK_N (32) | SHA-256("libsim link commit" || 0x00 || e_N || DK_N)
//   E -> N  offer   = e_E (32)
//   N -> E  reveal  = e_N (32)                     E checks the commitment
//   both    T = SHA-256("libsim link v1" || 0x00 || request || offer || reveal)
//           okm = HKDF-SHA256(salt = T, ikm = X25519(e_N, e_E), info = "libsim link v1", 37)   (RFC 5869)
//           code = the first 40 bits of okm[32..37] in base32 (RFC 4648 alphabet), shown as XXXX-XXXX
//   E -> N  grant   = AES-256-GCM(key = okm[0..32], nonce = 0 (the key seals one message), ad = T,
//                                 account key seed (32) | signed device list)      after the user typed the code on E

#include "device_list.h"

#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/e2e.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <optional>
#include <string>
#include <string_view>

namespace sim::e2e {

inline constexpr std::size_t link_request_size = 4 + 32 + 32;
inline constexpr std::size_t link_key_size = 32;
/// The code's length in characters, without the separator.
inline constexpr std::size_t link_code_length = 8;

/// What an approving device hands the new one: the account key and the list that admits the new device.
struct LinkGrant {
    SecureBytes account_seed;  ///< the account key's private seed (32 bytes)
    SignedDeviceList list;
};

/// The new device's side. Every call out of turn, or after a failure, is Errc::invalid_state.
class LinkJoiner {
public:
    /// `device`: the pending device id the server gave; `device_key`: this device's public key.
    static Result<LinkJoiner> start(Rng& rng, DeviceId device, ByteView device_key);
    [[nodiscard]] const Bytes& request() const noexcept { return m_request; }
    /// Takes the approver's offer; returns the reveal to send back. After it, code() is the code to show.
    Result<Bytes> reveal(ByteView offer);
    /// The code to show ("ABCD-EFGH"), once reveal() succeeded; empty before.
    [[nodiscard]] const std::string& code() const noexcept { return m_code; }
    /// Open the approver's grant: Errc::auth_failed (not sealed under this link's key), Errc::bad_field (the list
    /// does not admit this device with its key, or is not signed by the key the grant carries), Errc::truncated.
    Result<LinkGrant> accept(std::string_view user, ByteView grant);

private:
    LinkJoiner() = default;
    enum class Step : std::uint8_t { requested, revealed, done };
    Step m_step = Step::requested;
    DeviceId m_device = 0;
    Bytes m_device_key;
    crypto::X25519KeyPair m_ephemeral;
    Bytes m_request;
    Bytes m_transcript;
    SecureBytes m_key;
    std::string m_code;
};

/// An existing device's side. Every call out of turn, or after a failure, is Errc::invalid_state.
class LinkApprover {
public:
    /// Parse the new device's request (Errc::truncated, Errc::trailing_bytes, Errc::bad_field for device 0).
    static Result<LinkApprover> start(Rng& rng, ByteView request);
    [[nodiscard]] DeviceId device() const noexcept { return m_device; }
    [[nodiscard]] const Bytes& device_key() const noexcept { return m_device_key; }
    [[nodiscard]] const Bytes& offer() const noexcept { return m_offer; }
    /// Take the new device's reveal: Errc::auth_failed when it does not match the commitment (the link is over).
    Status reveal(ByteView reveal);
    /// The user typed `typed` (case, spaces and '-' ignored): on a match, the sealed grant to send; otherwise
    /// Errc::auth_failed, and the link is over (one try). Compared in constant time.
    Result<Bytes> approve(std::string_view typed, const LinkGrant& grant);

private:
    LinkApprover() = default;
    enum class Step : std::uint8_t { offered, revealed, done };
    Step m_step = Step::offered;
    DeviceId m_device = 0;
    Bytes m_device_key;
    Bytes m_commitment;
    Bytes m_request;
    crypto::X25519KeyPair m_ephemeral;
    Bytes m_offer;
    Bytes m_transcript;
    SecureBytes m_key;
    std::string m_code;
};

}  // namespace sim::e2e
