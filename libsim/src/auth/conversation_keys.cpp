// Conversation keys sealed at rest under the server master key (docs/accounts.md, "Conversation keys").
#include "rng_util.h"

#include <sim/auth.h>
#include <sim/crypto.h>

#include <algorithm>
#include <array>

namespace sim::auth {
namespace {

constexpr std::uint8_t blob_version = 1;
constexpr std::size_t salt_size = 32;
constexpr std::string_view hkdf_info = "libsim conversation key v1";

void put_u64(Bytes& out, std::uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) {
        out.push_back(static_cast<std::uint8_t>(v >> static_cast<unsigned>(shift)));
    }
}

// The record's identity as associated data: a blob copied to another pair, epoch or time does not open.
Bytes associated_data(const std::string& a, const std::string& b, std::uint64_t epoch, store::WallTime created) {
    Bytes ad;
    ad.reserve(hkdf_info.size() + 2 + a.size() + b.size() + 16);
    const auto append = [&ad](std::string_view s) { ad.insert(ad.end(), s.begin(), s.end()); };
    append(hkdf_info);
    ad.push_back(static_cast<std::uint8_t>(a.size()));
    append(a);
    ad.push_back(static_cast<std::uint8_t>(b.size()));
    append(b);
    put_u64(ad, epoch);
    put_u64(ad, static_cast<std::uint64_t>(created.time_since_epoch().count()));
    return ad;
}

struct Pair {
    std::string a;
    std::string b;
};

Result<Pair> canonical_pair(std::string_view user1, std::string_view user2) {
    SIM_TRY(auto x, canonical_username(user1));
    SIM_TRY(auto y, canonical_username(user2));
    if (x == y) {
        return Error{Errc::invalid_argument, "a conversation needs two different users"};
    }
    if (y < x) {
        std::swap(x, y);
    }
    return Pair{std::move(x), std::move(y)};
}

}  // namespace

struct ConversationKeyVault::Impl {
    Impl(store::ConversationKeyStore& s, ByteView master, Rng& r)
        : store(s), master_key(master.begin(), master.end()), rng(r) {}
    store::ConversationKeyStore& store;
    SecureBytes master_key;
    detail::LockedRng rng;

    Result<std::unique_ptr<crypto::Aead>> record_aead(ByteView salt) const {
        SIM_TRY(const auto key, crypto::hkdf_sha256(salt, master_key, as_bytes(hkdf_info), crypto::aead_key_size));
        return crypto::make_aead(crypto::AeadAlgorithm::chacha20_poly1305, key);
    }
};

ConversationKeyVault::ConversationKeyVault(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
ConversationKeyVault::~ConversationKeyVault() = default;

Result<std::unique_ptr<ConversationKeyVault>> ConversationKeyVault::create(store::ConversationKeyStore& store,
                                                                           ByteView master_key, Rng& rng) {
    if (master_key.size() != master_key_size) {
        return Error{Errc::invalid_key, "master key must be 32 bytes"};
    }
    return std::unique_ptr<ConversationKeyVault>(
        new ConversationKeyVault(std::make_unique<Impl>(store, master_key, rng)));
}

Status ConversationKeyVault::put(std::string_view user1, std::string_view user2, ByteView key, std::uint64_t epoch,
                                 store::WallTime created) {
    SIM_TRY(auto pair, canonical_pair(user1, user2));
    if (key.empty() || key.size() > max_conversation_key_size) {
        return Error{Errc::invalid_argument, "conversation key must be 1..64 bytes"};
    }
    const auto salt = m_impl->rng.bytes(salt_size);
    SIM_TRY(const auto aead, m_impl->record_aead(salt));
    // Each record has its own key, used for this one encryption: a fixed nonce is safe.
    const std::array<std::uint8_t, crypto::aead_nonce_size> nonce{};
    store::SealedConversationKey rec;
    rec.sealed_key.resize(1 + salt_size);
    rec.sealed_key[0] = blob_version;
    std::copy(salt.begin(), salt.end(), rec.sealed_key.begin() + 1);
    rec.sealed_key.reserve(1 + salt_size + key.size() + crypto::aead_tag_size);
    SIM_TRY_STATUS(aead->seal_into(nonce, associated_data(pair.a, pair.b, epoch, created), key, rec.sealed_key));
    rec.user_a = std::move(pair.a);
    rec.user_b = std::move(pair.b);
    rec.epoch = epoch;
    rec.created = created;
    return m_impl->store.put_conversation_key(rec);
}

Result<std::optional<ConversationKey>> ConversationKeyVault::get(std::string_view user1, std::string_view user2) {
    SIM_TRY(const auto pair, canonical_pair(user1, user2));
    SIM_TRY(const auto rec, m_impl->store.find_conversation_key(pair.a, pair.b));
    if (!rec) {
        return std::optional<ConversationKey>{};
    }
    const Error bad{Errc::auth_failed, "stored conversation key does not open under this master key"};
    const auto& blob = rec->sealed_key;
    if (blob.size() < 1 + salt_size + crypto::aead_tag_size || blob[0] != blob_version || rec->user_a != pair.a ||
        rec->user_b != pair.b) {
        return bad;
    }
    const ByteView salt{blob.data() + 1, salt_size};
    SIM_TRY(const auto aead, m_impl->record_aead(salt));
    const std::array<std::uint8_t, crypto::aead_nonce_size> nonce{};
    auto plain = aead->open(nonce, associated_data(pair.a, pair.b, rec->epoch, rec->created),
                            ByteView{blob}.subspan(1 + salt_size));
    if (!plain) {
        return bad;
    }
    ConversationKey out;
    out.user_a = pair.a;
    out.user_b = pair.b;
    out.key.assign(plain->begin(), plain->end());
    secure_zero(plain->data(), plain->size());
    out.epoch = rec->epoch;
    out.created = rec->created;
    return std::optional<ConversationKey>{std::move(out)};
}

Result<bool> ConversationKeyVault::remove(std::string_view user1, std::string_view user2) {
    SIM_TRY(const auto pair, canonical_pair(user1, user2));
    return m_impl->store.delete_conversation_key(pair.a, pair.b);
}

}  // namespace sim::auth
