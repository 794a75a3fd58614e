#pragma once
/// @file
/// Groups with MLS (RFC 9420, ciphersuite 1 MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519): a sans-IO `Group`
/// object over libsim's internal MLS core. The caller moves the bytes (a Delivery Service relays them; simd does not
/// carry groups yet). Wire formats, limits and errors: docs/protocol.md section 7; what it protects:
/// docs/security.md.
///
/// Every member is a device; its basic credential's identity is "user/device". Every credential is accepted for now
/// (the multi-device issue will check them against signed device lists). Left out, refused with
/// Errc::not_implemented when met: PSKs, external commits and senders, ReInit, GroupContextExtensions.
///
/// Not yet here: serialisation of a Group for the client's encrypted store.

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sim::mls {

/// A device's KeyPackage and its private keys. Publish `key_package`; keep the rest secret, and use a bundle for
/// one group only (its init key is single-use).
struct KeyPackageBundle {
    Bytes key_package;               ///< MLSMessage(KeyPackage)
    SecureBytes signature_private;   ///< the Ed25519 seed that signs for this member
    SecureBytes init_private;        ///< X25519 key the Welcome is encrypted to
    SecureBytes encryption_private;  ///< X25519 key of the member's leaf
};

/// A KeyPackage for `user`/`device` (identity "user/device", unlimited lifetime) signed with the Ed25519 seed
/// `signature_private`. Errc::invalid_argument for an empty user or device or one containing '/';
/// Errc::invalid_key for a bad seed.
Result<KeyPackageBundle> make_key_package(std::string_view user, std::string_view device, ByteView signature_private,
                                          Rng& rng);

/// One member: its leaf index and its credential's identity ("user/device").
struct GroupMember {
    std::uint32_t leaf = 0;
    std::string identity;
    friend bool operator==(const GroupMember&, const GroupMember&) = default;
};

/// What `Group::process` did.
struct GroupEvent {
    enum class Kind : std::uint8_t {
        application,  ///< `application_data` from `sender`
        proposal,     ///< a proposal was kept for the next commit
        new_epoch,    ///< a commit was applied: `added` and `removed` members, the group is at `epoch`
        removed,      ///< a commit removed us: the group can no longer be used
    };
    Kind kind = Kind::application;
    Bytes application_data;
    std::uint64_t epoch = 0;
    std::vector<GroupMember> added;
    std::vector<GroupMember> removed;
};

/// What `Group::commit` produced: send `commit` to the group and `welcome` (when members were added) to them.
struct GroupCommit {
    Bytes commit;                  ///< MLSMessage(PublicMessage)
    std::optional<Bytes> welcome;  ///< MLSMessage(Welcome) carrying the ratchet tree
};

/// One member's view of a group. Move-only; secrets are wiped when it is destroyed. A failed call changes nothing.
class Group {
public:
    /// A new group `group_id` (1 to 256 bytes) whose only member is `own` (leaf 0), at epoch 0.
    /// Errc::invalid_argument; decoding errors of `own.key_package`.
    static Result<Group> create(ByteView group_id, const KeyPackageBundle& own, Rng& rng);
    /// Join from a Welcome addressed to `own`. Errc::invalid_argument when the Welcome is not for `own`; the
    /// decoding, validation and authentication errors of docs/protocol.md 7.4.
    static Result<Group> join(ByteView welcome, const KeyPackageBundle& own);

    Group(Group&&) noexcept;
    Group& operator=(Group&&) noexcept;
    Group(const Group&) = delete;
    Group& operator=(const Group&) = delete;
    ~Group();

    /// Queue the addition of the KeyPackage `key_package` (an MLSMessage) for the next commit. Decoding errors;
    /// the KeyPackage is validated by commit().
    Status add(ByteView key_package);
    /// Queue the removal of the member at `leaf` for the next commit. Errc::invalid_argument for ourselves, a
    /// blank or unknown leaf, or a leaf already queued. Queued removals are dropped when process() applies
    /// another member's commit (leaves may have changed); queued additions are kept.
    Status remove(std::uint32_t leaf);
    /// An Update proposal for our own leaf (fresh key) to send to the group; the next commit (ours or another
    /// member's) applies it. Errc::invalid_state after removal.
    Result<Bytes> propose_update(Rng& rng);
    /// Commit the queued additions and removals and every proposal received in this epoch, with a fresh path for
    /// our leaf. The new epoch applies here at once; the queue is emptied. On failure nothing changes and the queue
    /// is kept. Errc::invalid_state after removal; validation errors of queued KeyPackages.
    Result<GroupCommit> commit(Rng& rng);
    /// Process one message of the group (PublicMessage or PrivateMessage). Errc::bad_field for other wire
    /// formats; the errors of docs/protocol.md 7.4. Nothing changes on failure.
    Result<GroupEvent> process(ByteView message);
    /// `plaintext` as an application message (PrivateMessage) to the group. Errc::invalid_state after removal.
    Result<Bytes> encrypt(ByteView plaintext, Rng& rng);

    [[nodiscard]] Bytes group_id() const;
    [[nodiscard]] std::uint64_t epoch() const noexcept;
    [[nodiscard]] std::uint32_t own_leaf() const noexcept;
    /// False once a commit removed us.
    [[nodiscard]] bool active() const noexcept;
    /// The members in leaf order.
    [[nodiscard]] std::vector<GroupMember> members() const;
    /// The epoch authenticator (s8.7): equal for every member of the epoch; can be compared out of band.
    [[nodiscard]] Bytes epoch_authenticator() const;
    /// MLS-Exporter(label, context, length) of this epoch (s8.5). Errc::invalid_state after removal.
    [[nodiscard]] Result<SecureBytes> export_secret(std::string_view label, ByteView context, std::size_t length) const;

private:
    struct Impl;
    explicit Group(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace sim::mls
