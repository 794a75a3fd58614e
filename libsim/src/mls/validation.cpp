// RFC 9420 s7.3 LeafNode validation, s10.1 KeyPackage validation.
#include "validation.h"

#include "primitives.h"

#include <sim/crypto.h>

#include <algorithm>

namespace sim::mls {

namespace {

constexpr std::uint16_t credential_basic = 1;

bool listed(const std::vector<std::uint16_t>& list, std::uint16_t value) {
    return std::find(list.begin(), list.end(), value) != list.end();
}

}  // namespace

Status AcceptBasicCredentials::validate(const Credential& credential, ByteView signature_key) const {
    if (credential.type != credential_basic || signature_key.empty()) {
        return Error{Errc::not_implemented, "only basic credentials are supported"};
    }
    return ok();
}

Status validate_leaf_node(const LeafNode& leaf, const LeafNodeContext& context,
                          const CredentialValidator& credentials) {
    if (leaf.source != context.expected_source) {
        return Error{Errc::bad_field, "leaf node source does not fit where the leaf node was found"};
    }
    if (!leaf.verify(context.group_id, context.leaf_index)) {
        return Error{Errc::auth_failed, "leaf node signature does not verify"};
    }
    if (!listed(leaf.capabilities.versions, protocol_version)) {
        return Error{Errc::unsupported_version, "leaf node does not support MLS 1.0"};
    }
    if (!listed(leaf.capabilities.cipher_suites, cipher_suite)) {
        return Error{Errc::suite_not_allowed, "leaf node does not support the group's ciphersuite"};
    }
    if (leaf.credential.type != credential_basic) {
        return Error{Errc::not_implemented, "only basic credentials are supported"};
    }
    SIM_TRY_STATUS(credentials.validate(leaf.credential, leaf.signature_key));
    for (const auto& e : leaf.extensions) {
        if (!listed(leaf.capabilities.extensions, e.type)) {
            return Error{Errc::bad_field, "leaf node extension not listed in its capabilities"};
        }
    }
    if (leaf.source == LeafNodeSource::key_package && context.now &&
        (*context.now < leaf.not_before || *context.now > leaf.not_after)) {
        return Error{Errc::key_expired, "key package lifetime does not cover the current time"};
    }
    if (context.tree != nullptr) {
        const auto& tree = *context.tree;
        for (std::uint32_t i = 0; i < tree.leaf_count(); ++i) {
            const auto& other = tree.leaf(i);
            if (!other) {
                continue;
            }
            if (context.replaces && *context.replaces == i) {
                if (leaf.source == LeafNodeSource::update && !context.in_tree &&
                    constant_time_equal(other->encryption_key, leaf.encryption_key)) {
                    return Error{Errc::bad_field, "an update must change the encryption key"};
                }
                continue;
            }
            if (constant_time_equal(other->signature_key, leaf.signature_key) ||
                constant_time_equal(other->encryption_key, leaf.encryption_key)) {
                return Error{Errc::bad_field, "signature or encryption key already used in the group"};
            }
        }
        for (std::uint32_t x = 1; x < tree.node_count(); x += 2) {
            const auto& p = tree.parent_node(x);
            if (p && constant_time_equal(p->encryption_key, leaf.encryption_key)) {
                return Error{Errc::bad_field, "encryption key already used in the group"};
            }
        }
    }
    return ok();
}

Status validate_key_package(const KeyPackage& key_package, const RatchetTree* tree, std::optional<std::uint64_t> now,
                            const CredentialValidator& credentials) {
    if (key_package.version != protocol_version) {
        return Errc::unsupported_version;
    }
    if (key_package.cipher_suite != cipher_suite) {
        return Errc::suite_not_allowed;
    }
    LeafNodeContext context;
    context.expected_source = LeafNodeSource::key_package;
    context.tree = tree;
    context.now = now;
    SIM_TRY_STATUS(validate_leaf_node(key_package.leaf_node, context, credentials));
    if (!key_package.verify()) {
        return Error{Errc::auth_failed, "key package signature does not verify"};
    }
    if (key_package.init_key.size() != crypto::hpke_public_key_size ||
        constant_time_equal(key_package.init_key, key_package.leaf_node.encryption_key)) {
        return Error{Errc::invalid_key, "init key must be a 32-byte key different from the leaf's encryption key"};
    }
    return ok();
}

}  // namespace sim::mls
