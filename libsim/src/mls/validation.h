#pragma once
/// @file
/// Validation of LeafNodes (RFC 9420 s7.3) and KeyPackages (s10.1), with the credential check delegated to a
/// validator the application supplies (who may sign for a user is decided by the multi-device device lists).
/// Internal to libsim.

#include "proposals.h"
#include "ratchet_tree.h"

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstdint>
#include <optional>

namespace sim::mls {

/// Decides whether a credential may be used with a signature key (s5.3.1). Implementations check e.g. that the
/// user's signed device list names this device and key.
class CredentialValidator {
public:
    virtual ~CredentialValidator() = default;
    /// ok() to accept; any error refuses the LeafNode with that error.
    [[nodiscard]] virtual Status validate(const Credential& credential, ByteView signature_key) const = 0;
};

/// Accepts every basic credential (tests, and the place where the device-list check will go).
class AcceptBasicCredentials final : public CredentialValidator {
public:
    [[nodiscard]] Status validate(const Credential& credential, ByteView signature_key) const override;
};

/// Where a LeafNode was found, which decides the checks of s7.3.
struct LeafNodeContext {
    LeafNodeSource expected_source = LeafNodeSource::key_package;
    ByteView group_id;                      ///< for update / commit sources
    std::uint32_t leaf_index = 0;           ///< for update / commit sources
    const RatchetTree* tree = nullptr;      ///< the group's tree, for the uniqueness checks (null: none)
    std::optional<std::uint32_t> replaces;  ///< the leaf this one replaces (update / commit), excluded from them
    bool in_tree = false;                   ///< the leaf is already in `tree` at `replaces` (joining): not a new key
    std::optional<std::uint64_t> now;       ///< seconds since the epoch, to check a key package's lifetime
};

/// s7.3: the source is the expected one (Errc::bad_field); the signature verifies (Errc::auth_failed); the
/// capabilities list MLS 1.0 (Errc::unsupported_version) and ciphersuite 1 (Errc::suite_not_allowed); the credential
/// is basic (Errc::not_implemented) and accepted by `credentials`; every extension is listed in the capabilities
/// (Errc::bad_field); the lifetime covers `now` (Errc::key_expired); signature and encryption keys are unique in the
/// tree (Errc::bad_field) and, for an update not yet in the tree, the encryption key is new (Errc::bad_field).
Status validate_leaf_node(const LeafNode& leaf, const LeafNodeContext& context, const CredentialValidator& credentials);

/// s10.1: version MLS 1.0 (Errc::unsupported_version), ciphersuite 1 (Errc::suite_not_allowed), the leaf valid for
/// a key package (validate_leaf_node), the KeyPackage signature (Errc::auth_failed), init_key a 32-byte key
/// different from the leaf's encryption key (Errc::invalid_key).
Status validate_key_package(const KeyPackage& key_package, const RatchetTree* tree, std::optional<std::uint64_t> now,
                            const CredentialValidator& credentials);

}  // namespace sim::mls
