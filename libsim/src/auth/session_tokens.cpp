// Session tokens: random 256-bit tokens, stored only as SHA-256 (docs/accounts.md, "Session tokens").
#include "rng_util.h"

#include <algorithm>
#include <sim/auth.h>
#include <sim/crypto.h>

namespace sim::auth {

struct SessionTokens::Impl {
    Impl(store::SessionTokenStore& s, Rng& r) : store(s), rng(r) {}
    store::SessionTokenStore& store;
    detail::LockedRng rng;
};

SessionTokens::SessionTokens(store::SessionTokenStore& store, Rng& rng) : m_impl(std::make_unique<Impl>(store, rng)) {}
SessionTokens::~SessionTokens() = default;

Result<IssuedToken> SessionTokens::issue(std::string_view username, DeviceId device, store::WallTime now,
                                         Duration ttl) {
    if (ttl <= Duration::zero()) {
        return Error{Errc::invalid_argument, "token lifetime must be positive"};
    }
    SIM_TRY(const auto name, canonical_username(username));
    IssuedToken issued;
    issued.token = m_impl->rng.secure_bytes(session_token_size);
    issued.expires = now + std::chrono::ceil<std::chrono::milliseconds>(ttl);
    SIM_TRY_STATUS(m_impl->store.put_token(crypto::sha256(issued.token), name, device, issued.expires));
    return issued;
}

Result<store::SessionRecord> SessionTokens::validate(ByteView token, store::WallTime now) {
    const Error invalid{Errc::token_invalid, "session token unknown, expired or revoked"};
    if (token.size() != session_token_size) {
        return invalid;
    }
    const auto digest = crypto::sha256(token);
    SIM_TRY(auto record, m_impl->store.find_token(digest));
    if (!record) {
        return invalid;
    }
    if (now >= record->expires) {
        (void)m_impl->store.revoke_token(digest);  // tidy up; the answer is the same either way
        return invalid;
    }
    return std::move(*record);
}

Result<bool> SessionTokens::revoke(ByteView token) {
    if (token.size() != session_token_size) {
        return false;
    }
    return m_impl->store.revoke_token(crypto::sha256(token));
}

Result<std::size_t> SessionTokens::revoke_all(std::string_view username) {
    SIM_TRY(const auto name, canonical_username(username));
    return m_impl->store.revoke_user_tokens(name);
}

Status SessionEndFollower::start() {
    SIM_TRY(m_start, m_store.last_session_end());
    m_high = m_start;
    m_seen.clear();
    return ok();
}

Result<std::vector<store::SessionEnd>> SessionEndFollower::poll() {
    constexpr std::size_t page = 1000;
    std::vector<store::SessionEnd> ended;
    std::uint64_t from = std::max(m_start, m_high > margin ? m_high - margin : 0);
    for (;;) {
        SIM_TRY(const auto entries, m_store.session_ends_after(from, page));
        for (const auto& e : entries) {
            if (m_seen.insert(e.seq).second) {
                ended.push_back(e);
            }
            m_high = std::max(m_high, e.seq);
        }
        if (entries.size() < page) {
            break;
        }
        from = entries.back().seq;
    }
    const std::uint64_t keep_from = m_high > margin ? m_high - margin : 0;
    m_seen.erase(m_seen.begin(), m_seen.lower_bound(keep_from + 1));
    return ended;
}

}  // namespace sim::auth
