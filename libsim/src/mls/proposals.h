#pragma once
/// @file
/// KeyPackage (RFC 9420 s10) and the decoded Proposal (s12.1). Internal to libsim.
///
/// Add, Update and Remove are decoded in full; the left-out proposal types (PreSharedKey, ReInit,
/// ExternalInit, GroupContextExtensions) are checked structurally and kept as their type and encoding so that
/// the group layer refuses them by name.

#include "codec.h"
#include "key_schedule.h"
#include "ratchet_tree.h"

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstdint>
#include <optional>

namespace sim::mls {

/// s10 KeyPackage.
struct KeyPackage {
    std::uint16_t version = 1;
    std::uint16_t cipher_suite = 1;
    Bytes init_key;
    LeafNode leaf_node;
    std::vector<Extension> extensions;
    Bytes signature;

    Status encode_into(TlsWriter& w) const;
    /// s10 KeyPackageTBS (everything but the signature).
    [[nodiscard]] Result<Bytes> to_be_signed() const;
    /// True when `signature` is SignWithLabel(leaf_node.signature_key, "KeyPackageTBS", to_be_signed()).
    [[nodiscard]] bool verify() const;
    /// s5.2 KeyPackageRef = RefHash("MLS 1.0 KeyPackage Reference", KeyPackage).
    [[nodiscard]] Result<Bytes> ref() const;
};

/// Decode a KeyPackage. Errors of decode_leaf_node and the codec.
Result<KeyPackage> decode_key_package(TlsReader& r);

/// s12.1 ProposalType values.
enum class ProposalType : std::uint16_t {
    add = 1,
    update = 2,
    remove = 3,
    psk = 4,
    reinit = 5,
    external_init = 6,
    group_context_extensions = 7,
};

/// A decoded Proposal: exactly one of `add` / `update` / `removed` is set for those types; `encoding` always holds
/// the Proposal's exact bytes.
struct Proposal {
    ProposalType type = ProposalType::add;
    std::optional<KeyPackage> add;
    std::optional<LeafNode> update;
    std::uint32_t removed = 0;
    Bytes encoding;
};

/// Decode one Proposal. Errc::bad_field for unknown types; errors of the nested decoders.
Result<Proposal> decode_proposal(TlsReader& r);

}  // namespace sim::mls
