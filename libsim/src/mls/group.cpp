// The public Group facade (sim/mls.h) over GroupState.
#include "codec.h"
#include "framing.h"
#include "group_state.h"
#include "join.h"
#include "primitives.h"
#include "validation.h"
#include "welcome.h"

#include <sim/crypto.h>
#include <sim/mls.h>

#include <algorithm>
#include <utility>

namespace sim::mls {

namespace {

bool valid_name(std::string_view s) {
    return !s.empty() && s.find('/') == std::string_view::npos;
}

/// The internal validator over the application's CredentialPolicy: basic credentials only, their identity and
/// signature key checked by the policy.
class PolicyValidator final : public CredentialValidator {
public:
    explicit PolicyValidator(std::shared_ptr<const CredentialPolicy> policy) : m_policy(std::move(policy)) {}
    [[nodiscard]] Status validate(const Credential& credential, ByteView signature_key) const override {
        SIM_TRY_STATUS(m_basic.validate(credential, signature_key));
        return m_policy->check(to_string(credential.identity), signature_key);
    }

private:
    AcceptBasicCredentials m_basic;
    std::shared_ptr<const CredentialPolicy> m_policy;
};

std::shared_ptr<const CredentialValidator> validator(const GroupOptions& options) {
    return std::make_shared<PolicyValidator>(options.credentials ? options.credentials
                                                                 : std::make_shared<AcceptUserDevice>());
}

std::vector<GroupMember> members_of(const GroupState& state) {
    std::vector<GroupMember> out;
    const auto& tree = state.tree();
    for (std::uint32_t i = 0; i < tree.leaf_count(); ++i) {
        const auto& leaf = tree.leaf(i);
        if (leaf) {
            out.push_back(
                GroupMember{i, std::string(leaf->credential.identity.begin(), leaf->credential.identity.end())});
        }
    }
    return out;
}

/// Members of `a` that are not in `b` (same leaf and identity).
std::vector<GroupMember> difference(const std::vector<GroupMember>& a, const std::vector<GroupMember>& b) {
    std::vector<GroupMember> out;
    for (const auto& m : a) {
        if (std::find(b.begin(), b.end(), m) == b.end()) {
            out.push_back(m);
        }
    }
    return out;
}

}  // namespace

Status AcceptUserDevice::check(std::string_view identity, ByteView /*signature_key*/) const {
    const auto slash = identity.find('/');
    if (slash == std::string_view::npos || !valid_name(identity.substr(0, slash)) ||
        !valid_name(identity.substr(slash + 1))) {
        return Error{Errc::bad_field, "credential identity is not user/device"};
    }
    return ok();
}

Result<KeyPackageBundle> make_key_package(std::string_view user, std::string_view device, ByteView signature_private,
                                          Rng& rng, KeyPackageLifetime lifetime) {
    if (!valid_name(user) || !valid_name(device)) {
        return Error{Errc::invalid_argument, "user and device must be non-empty and contain no '/'"};
    }
    if (lifetime.not_before > lifetime.not_after) {
        return Error{Errc::invalid_argument, "empty key package lifetime"};
    }
    SIM_TRY(const auto sig, crypto::ed25519_from_seed(signature_private));
    const auto enc = crypto::x25519_generate(rng);
    const auto init = crypto::x25519_generate(rng);
    KeyPackage kp;
    auto& leaf = kp.leaf_node;
    leaf.encryption_key = enc.public_key;
    leaf.signature_key = sig.public_key;
    leaf.credential.type = 1;
    const std::string identity = std::string(user) + "/" + std::string(device);
    leaf.credential.identity = to_bytes(as_bytes(identity));
    leaf.capabilities.versions = {protocol_version};
    leaf.capabilities.cipher_suites = {cipher_suite};
    leaf.capabilities.credentials = {1};
    leaf.source = LeafNodeSource::key_package;
    leaf.not_before = lifetime.not_before;
    leaf.not_after = lifetime.not_after;
    kp.init_key = init.public_key;
    SIM_TRY_STATUS(leaf.sign(sig.private_key, {}, 0));
    SIM_TRY(const auto tbs, kp.to_be_signed());
    SIM_TRY(kp.signature, sign_with_label(sig.private_key, "KeyPackageTBS", tbs));
    KeyPackageBundle out;
    SIM_TRY(out.key_package, encode_key_package_message(kp));
    out.signature_private = sig.private_key;
    out.init_private = init.private_key;
    out.encryption_private = enc.private_key;
    return out;
}

struct Group::Impl {
    Impl(std::shared_ptr<const CredentialValidator> validator, GroupState group, const GroupOptions& options,
         SecureBytes signature_key)
        : credentials(std::move(validator)), state(std::move(group)), signature_private(std::move(signature_key)) {
        state.set_clock(options.now);
    }

    std::shared_ptr<const CredentialValidator> credentials;  // first: `state` keeps a pointer to it
    GroupState state;
    SecureBytes signature_private;
    std::vector<KeyPackage> adds;
    std::vector<std::uint32_t> removes;
};

Group::Group(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
Group::Group(Group&&) noexcept = default;
Group& Group::operator=(Group&&) noexcept = default;
Group::~Group() = default;

Result<Group> Group::create(ByteView group_id, const KeyPackageBundle& own, Rng& rng, const GroupOptions& options) {
    SIM_TRY(const auto kp, decode_key_package_message(own.key_package));
    auto credentials = validator(options);
    SIM_TRY(auto state,
            GroupState::create(to_bytes(group_id), kp.leaf_node, own.encryption_private, *credentials, rng));
    return Group(std::make_unique<Impl>(std::move(credentials), std::move(state), options, own.signature_private));
}

Result<Group> Group::join(ByteView welcome, const KeyPackageBundle& own, const GroupOptions& options) {
    SIM_TRY(const auto w, decode_welcome_message(welcome));
    SIM_TRY(auto kp, decode_key_package_message(own.key_package));
    const JoinKeys keys{std::move(kp), own.init_private, own.encryption_private};
    auto credentials = validator(options);
    SIM_TRY(auto joined, join_from_welcome(w, keys, std::nullopt, *credentials));
    SIM_TRY(auto state, GroupState::from_join(std::move(joined), *credentials));
    return Group(std::make_unique<Impl>(std::move(credentials), std::move(state), options, own.signature_private));
}

Result<SecureBytes> Group::save() const {
    SecureTlsWriter w;
    w.u16(group_state_version);
    SIM_TRY_STATUS(m_impl->state.save(w));
    SIM_TRY_STATUS(w.vector(m_impl->signature_private));
    TlsWriter adds;
    for (const auto& kp : m_impl->adds) {
        SIM_TRY_STATUS(kp.encode_into(adds));
    }
    SIM_TRY_STATUS(w.vector(adds.bytes()));
    TlsWriter removes;
    for (const auto leaf : m_impl->removes) {
        removes.u32(leaf);
    }
    SIM_TRY_STATUS(w.vector(removes.bytes()));
    return std::move(w).bytes();
}

Result<Group> Group::load(ByteView saved, const GroupOptions& options) {
    if (saved.size() > max_saved_state_size) {
        return Error{Errc::frame_too_large, "saved group state too large"};
    }
    TlsReader r(saved);
    SIM_TRY(const auto version, r.u16());
    if (version != group_state_version) {
        return Error{Errc::unsupported_version, "unknown saved group state version"};
    }
    auto credentials = validator(options);
    SIM_TRY(auto state, GroupState::load(r, *credentials));
    SIM_TRY(const auto seed, r.exact_vector(crypto::ed25519_key_size));
    SIM_TRY(auto signature, crypto::ed25519_from_seed(seed));
    if (!constant_time_equal(signature.public_key, state.tree().leaf(state.own_leaf())->signature_key)) {
        return Error{Errc::invalid_key, "saved signature key does not match our leaf"};
    }
    SIM_TRY(auto adds_list, r.sub_reader(max_saved_state_size));
    std::vector<KeyPackage> adds;
    while (!adds_list.empty()) {
        SIM_TRY(auto kp, decode_key_package(adds_list));
        adds.push_back(std::move(kp));
    }
    SIM_TRY(auto removes_list, r.sub_reader(max_saved_state_size));
    std::vector<std::uint32_t> removes;
    while (!removes_list.empty()) {
        SIM_TRY(const auto leaf, removes_list.u32());
        removes.push_back(leaf);
    }
    SIM_TRY_STATUS(r.finish());
    Group g(
        std::make_unique<Impl>(std::move(credentials), std::move(state), options, std::move(signature.private_key)));
    g.m_impl->adds = std::move(adds);
    for (const auto leaf : removes) {
        if (!g.remove(leaf)) {
            return Error{Errc::bad_field, "saved removal of ourselves, a blank leaf or a leaf twice"};
        }
    }
    return g;
}

Status Group::add(ByteView key_package) {
    SIM_TRY(auto kp, decode_key_package_message(key_package));
    m_impl->adds.push_back(std::move(kp));
    return ok();
}

Status Group::remove(std::uint32_t leaf) {
    const auto& st = m_impl->state;
    if (leaf == st.own_leaf() || leaf >= st.tree().leaf_count() || !st.tree().leaf(leaf) ||
        std::find(m_impl->removes.begin(), m_impl->removes.end(), leaf) != m_impl->removes.end()) {
        return Error{Errc::invalid_argument, "cannot remove ourselves, a blank leaf or a leaf twice"};
    }
    m_impl->removes.push_back(leaf);
    return ok();
}

Result<Bytes> Group::propose_update(Rng& rng) {
    return m_impl->state.propose_update(m_impl->signature_private, rng);
}

Result<GroupCommit> Group::commit(Rng& rng) {
    // GroupState::commit applies the new epoch only on success.
    SIM_TRY(auto out, m_impl->state.commit(m_impl->adds, m_impl->removes, m_impl->signature_private, rng));
    m_impl->adds.clear();
    m_impl->removes.clear();
    GroupCommit c;
    c.commit = std::move(out.message);
    if (out.welcome) {
        SIM_TRY(c.welcome, encode_welcome_message(*out.welcome));
    }
    return c;
}

Result<GroupEvent> Group::process(ByteView message) {
    TlsReader header(message);
    SIM_TRY_STATUS(status_of(header.u16()));
    SIM_TRY(const auto wire_format, header.u16());
    ContentType type = ContentType::application;
    if (wire_format == static_cast<std::uint16_t>(WireFormat::public_message)) {
        SIM_TRY(const auto m, decode_public_message(message));
        type = m.content.content.content_type;
    } else if (wire_format == static_cast<std::uint16_t>(WireFormat::private_message)) {
        SIM_TRY(const auto m, decode_private_message(message));
        type = m.content_type;
    } else {
        return Error{Errc::bad_field, "not a PublicMessage or PrivateMessage"};
    }
    auto& st = m_impl->state;
    GroupEvent ev;
    switch (type) {
        case ContentType::application: {
            SIM_TRY(ev.application_data, st.decrypt_application(message));
            ev.kind = GroupEvent::Kind::application;
            break;
        }
        case ContentType::proposal:
            SIM_TRY_STATUS(st.cache_proposal(message));
            ev.kind = GroupEvent::Kind::proposal;
            break;
        case ContentType::commit: {
            const auto before = members_of(st);
            SIM_TRY_STATUS(st.process_commit(message));
            if (!st.member()) {
                ev.kind = GroupEvent::Kind::removed;
                break;
            }
            const auto after = members_of(st);
            ev.kind = GroupEvent::Kind::new_epoch;
            ev.added = difference(after, before);
            ev.removed = difference(before, after);
            // Queued removals of leaves that changed are no longer meaningful.
            m_impl->removes.clear();
            break;
        }
    }
    ev.epoch = st.context().epoch;
    return ev;
}

Result<Bytes> Group::encrypt(ByteView plaintext, Rng& rng) {
    return m_impl->state.encrypt_application(plaintext, m_impl->signature_private, rng);
}

Bytes Group::group_id() const {
    return m_impl->state.context().group_id;
}
std::uint64_t Group::epoch() const noexcept {
    return m_impl->state.context().epoch;
}
std::uint32_t Group::own_leaf() const noexcept {
    return m_impl->state.own_leaf();
}
bool Group::active() const noexcept {
    return m_impl->state.member();
}
std::vector<GroupMember> Group::members() const {
    return members_of(m_impl->state);
}

Bytes Group::epoch_authenticator() const {
    const auto& a = m_impl->state.secrets().epoch_authenticator;
    return Bytes(a.begin(), a.end());
}

Result<SecureBytes> Group::export_secret(std::string_view label, ByteView context, std::size_t length) const {
    return m_impl->state.export_secret(as_bytes(label), context, length);
}

}  // namespace sim::mls
