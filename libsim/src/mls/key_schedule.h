#pragma once
/// @file
/// GroupContext (RFC 9420 s8.1) and the key schedule (s8) of ciphersuite 1. Internal to libsim.

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sim::mls {

/// Bound on a GroupContext's variable fields (group id, hashes, extensions) when decoding.
inline constexpr std::size_t max_group_id_size = 256;
inline constexpr std::size_t max_extensions_size = 64 * 1024;

/// The `ratchet_tree` extension type (s12.4.3.3).
inline constexpr std::uint16_t extension_ratchet_tree = 0x0002;

/// One extension (s13.4): its type and its opaque data.
struct Extension {
    std::uint16_t type = 0;
    Bytes data;
    friend bool operator==(const Extension&, const Extension&) = default;
};

/// s8.1 GroupContext. `version` and `cipher_suite` are fixed to mls10 and suite 1 by encode() and checked by
/// decode().
struct GroupContext {
    Bytes group_id;
    std::uint64_t epoch = 0;
    Bytes tree_hash;
    Bytes confirmed_transcript_hash;
    std::vector<Extension> extensions;

    /// The TLS encoding. Errc::frame_too_large when a field is longer than an MLS vector can be.
    [[nodiscard]] Result<Bytes> encode() const;
    /// Decode a whole GroupContext. Errc::unsupported_version for another version, Errc::suite_not_allowed
    /// for another cipher suite, Errc::bad_field for a duplicate extension type, codec errors (truncated,
    /// bad_field, frame_too_large, trailing_bytes).
    static Result<GroupContext> decode(ByteView data);
};

/// Encode / decode a `Extension extensions<V>` list. decode(): each extension's data is at most
/// max_extensions_size bytes, except a `ratchet_tree` extension when `max_ratchet_tree_data` is larger (a
/// GroupInfo's); Errc::bad_field for a repeated type (s13.4), codec errors otherwise.
Status encode_extensions(const std::vector<Extension>& extensions, Bytes& out);
Result<std::vector<Extension>> decode_extensions(ByteView vector_body, std::size_t max_ratchet_tree_data = 0);

/// The secrets of one epoch (s8, table in s8.2 "Epoch-derived secrets"), plus the next epoch's init_secret.
struct EpochSecrets {
    SecureBytes joiner_secret;
    SecureBytes welcome_secret;
    SecureBytes epoch_secret;
    SecureBytes sender_data_secret;
    SecureBytes encryption_secret;
    SecureBytes exporter_secret;
    SecureBytes epoch_authenticator;
    SecureBytes external_secret;
    SecureBytes confirmation_key;
    SecureBytes membership_key;
    SecureBytes resumption_psk;
    SecureBytes init_secret;  ///< init_secret_[n], input of the next epoch
};

/// s8: the epoch secrets from the previous epoch's init_secret, this epoch's commit_secret (zeros without a
/// path), psk_secret (zeros without PSKs) and the encoded GroupContext_[n]. All three secrets must be Nh = 32
/// bytes, else Errc::invalid_argument.
Result<EpochSecrets> derive_epoch_secrets(ByteView init_secret, ByteView commit_secret, ByteView psk_secret,
                                          ByteView group_context);
/// s8 from the joiner_secret on (what a new member gets from a Welcome). Errc::invalid_argument for sizes.
Result<EpochSecrets> derive_epoch_secrets_from_joiner(ByteView joiner_secret, ByteView psk_secret,
                                                      ByteView group_context);

/// s8.5 MLS-Exporter(label, context, length) = ExpandWithLabel(DeriveSecret(exporter_secret, label), "exported",
/// Hash(context), length). Errc::invalid_argument for a length over 255 * Nh or a label over 255 bytes.
Result<SecureBytes> mls_exporter(ByteView exporter_secret, ByteView label, ByteView context, std::size_t length);

}  // namespace sim::mls
