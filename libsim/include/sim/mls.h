#pragma once
/// @file
/// Groups with MLS (RFC 9420, ciphersuite 1 MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519): a sans-IO `Group`
/// object over libsim's internal MLS core. The caller moves the bytes (a Delivery Service relays them; simd does not
/// carry groups yet). Wire formats, limits and errors: docs/protocol.md section 7; what it protects:
/// docs/security.md.
///
/// Every member is a device; its basic credential's identity is "user/device". Which credentials a group accepts
/// is decided by the CredentialPolicy in GroupOptions (the multi-device issue will check them against signed device
/// lists). Left out, refused with Errc::not_implemented when met: PSKs, external commits and senders, ReInit,
/// GroupContextExtensions.

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstddef>
#include <cstdint>
#include <functional>
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

/// The validity period of a KeyPackage (RFC 9420 s7.2), in seconds since the Unix epoch, both ends included.
struct KeyPackageLifetime {
    std::uint64_t not_before = 0;
    std::uint64_t not_after = ~std::uint64_t{0};
};

/// A KeyPackage for `user`/`device` (identity "user/device") valid during `lifetime` (default: unlimited), signed
/// with the Ed25519 seed `signature_private`. Errc::invalid_argument for an empty user or device or one containing
/// '/', or an empty lifetime; Errc::invalid_key for a bad seed.
Result<KeyPackageBundle> make_key_package(std::string_view user, std::string_view device, ByteView signature_private,
                                          Rng& rng, KeyPackageLifetime lifetime = {});

/// Decides whether a member's credential may be used with its signature key (RFC 9420 s5.3.1). A group consults it
/// for every leaf it accepts: every member of the tree when joining from a Welcome, every added KeyPackage (ours
/// and other members' commits), every Update and every committer's new leaf.
class CredentialPolicy {
public:
    virtual ~CredentialPolicy() = default;
    /// ok() to accept the basic credential `identity` with the Ed25519 public key `signature_key`; any error
    /// refuses the leaf (and with it the Welcome, commit or message that carries it) with that error.
    [[nodiscard]] virtual Status check(std::string_view identity, ByteView signature_key) const = 0;
};

/// The default policy: accepts any identity of the form "user/device" (both non-empty, one '/'), whatever the key.
/// Errc::bad_field otherwise.
class AcceptUserDevice final : public CredentialPolicy {
public:
    [[nodiscard]] Status check(std::string_view identity, ByteView signature_key) const override;
};

/// What a Group checks the leaves it accepts against. The core reads no clock: the time comes from `now`.
struct GroupOptions {
    /// Null: AcceptUserDevice.
    std::shared_ptr<const CredentialPolicy> credentials;
    /// The current time in seconds since the Unix epoch, for the lifetime of added KeyPackages (RFC 9420 s7.2: a
    /// lifetime that does not cover now is refused with Errc::key_expired). Empty: only KeyPackages with the
    /// unlimited lifetime [0, 2^64-1] (what make_key_package creates) can be added; any other is refused with
    /// Errc::key_expired, since without a clock it cannot be shown to cover now.
    std::function<std::uint64_t()> now;
};

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

/// The format version of Group::save(); Group::load() reads this version only.
inline constexpr std::uint16_t group_state_version = 1;

/// One member's view of a group. Move-only; secrets are wiped when it is destroyed. A failed call changes nothing.
class Group {
public:
    /// A new group `group_id` (1 to 256 bytes) whose only member is `own` (leaf 0), at epoch 0.
    /// Errc::invalid_argument; decoding errors of `own.key_package`.
    static Result<Group> create(ByteView group_id, const KeyPackageBundle& own, Rng& rng,
                                const GroupOptions& options = {});
    /// Join from a Welcome addressed to `own`. Errc::invalid_argument when the Welcome is not for `own`; the
    /// decoding, validation and authentication errors of docs/protocol.md 7.4; the error of `options.credentials`
    /// when it refuses any member of the tree.
    static Result<Group> join(ByteView welcome, const KeyPackageBundle& own, const GroupOptions& options = {});

    /// A group from a state written by save(), with the policy and clock of `options` (they are not saved). The
    /// loaded group behaves exactly as the saved one did. Errc::frame_too_large for more than 64 MiB;
    /// Errc::unsupported_version for another format version than group_state_version; Errc::truncated,
    /// Errc::trailing_bytes, Errc::bad_length and Errc::bad_field for malformed or internally inconsistent input
    /// (a tree that does not match the group context, our leaf not in the tree, a secret tree of another size);
    /// Errc::invalid_key when our private keys do not match the tree. Never trusts the input further than that:
    /// decrypt it from storage the caller controls.
    static Result<Group> load(ByteView saved, const GroupOptions& options = {});

    Group(Group&&) noexcept;
    Group& operator=(Group&&) noexcept;
    Group(const Group&) = delete;
    Group& operator=(const Group&) = delete;
    ~Group();

    /// Queue the addition of the KeyPackage `key_package` (an MLSMessage) for the next commit. Decoding errors;
    /// the KeyPackage is validated by commit() (signatures, credential policy, lifetime).
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
    /// is kept. Errc::invalid_state after removal; validation errors of queued KeyPackages (the credential
    /// policy's error, Errc::key_expired for a lifetime that does not cover now).
    Result<GroupCommit> commit(Rng& rng);
    /// Process one message of the group (PublicMessage or PrivateMessage). Errc::bad_field for other wire
    /// formats; the errors of docs/protocol.md 7.4; a commit whose added, updated or committer's leaf the
    /// credential policy refuses fails with the policy's error, one adding a KeyPackage whose lifetime does not
    /// cover now with Errc::key_expired. Nothing changes on failure.
    Result<GroupEvent> process(ByteView message);
    /// `plaintext` as an application message (PrivateMessage) to the group. Errc::invalid_state after removal.
    Result<Bytes> encrypt(ByteView plaintext, Rng& rng);

    /// The whole state, for the client's store (format: docs/protocol.md 7.6): the epoch's secrets, the secret
    /// tree with its ratchets, our private keys including the signature key, the cached proposals and the queued
    /// additions and removals. It is as secret as the group itself: encrypt it at rest, and replace the stored copy
    /// after every call that changes the group (a stale copy would reuse keys that are already used).
    /// Errc::invalid_state after removal.
    [[nodiscard]] Result<SecureBytes> save() const;

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
