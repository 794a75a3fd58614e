// The end-to-end half of the client core (docs/protocol.md section 6).
#include "e2e_client.h"

#include "state_records.h"

#include <algorithm>
#include <deque>
#include <set>

namespace sim::client_detail {

using detail::WireReader;
using detail::WireWriter;

namespace {

constexpr std::uint8_t record_version = 1;
constexpr std::size_t max_sessions_per_peer = 4;
constexpr std::size_t max_seen_ids = remembered_ids_per_sender;
constexpr std::size_t max_missing = 10000;
constexpr std::size_t max_held = 100;

// State keys (the store hides them behind an HMAC).
const std::string key_identity = "identity";
// device u32 | account key seed (32, a linked device only): docs/protocol.md 6.9. Absent: device 1, and the identity
// is also the account key.
const std::string key_device = "device";
const std::string key_prekeys = "prekeys";
const std::string key_peers = "peers";
std::string key_peer(std::string_view peer) {
    return "peer/" + std::string(peer);
}
std::string key_session(std::string_view peer, ByteView id) {
    return "session/" + std::string(peer) + "/" + to_hex(id);
}

bool read_key(WireReader& r, Bytes& out) {
    ByteView v;
    if (!r.take(e2e::key_size, v)) {
        return false;
    }
    out.assign(v.begin(), v.end());
    return true;
}

bool read_secret(WireReader& r, SecureBytes& out) {
    ByteView v;
    if (!r.take(e2e::key_size, v)) {
        return false;
    }
    out.assign(v.begin(), v.end());
    return true;
}

MessageId random_id(Rng& rng) {
    MessageId id{};
    rng.fill(id);
    return id;
}

}  // namespace

struct E2eClient::Prekeys {
    std::uint32_t next_id = 1;
    e2e::SignedPrekey signed_prekey;
    std::vector<e2e::OneTimePrekey> one_time;

    [[nodiscard]] SecureBytes encode() const {
        SecureBytes out;
        WireWriter w(out);
        w.u8(record_version);
        w.u32(next_id);
        w.u32(signed_prekey.id);
        w.bytes(signed_prekey.private_key);
        w.bytes(signed_prekey.public_key);
        w.bytes(signed_prekey.signature);
        w.u32(static_cast<std::uint32_t>(one_time.size()));
        for (const auto& k : one_time) {
            w.u32(k.id);
            w.bytes(k.private_key);
            w.bytes(k.public_key);
        }
        return out;
    }

    static Result<Prekeys> decode(ByteView data) {
        WireReader r(data);
        Prekeys p;
        std::uint8_t version = 0;
        std::uint32_t count = 0;
        ByteView sig;
        if (!r.u8(version) || version != record_version || !r.u32(p.next_id) || !r.u32(p.signed_prekey.id) ||
            !read_secret(r, p.signed_prekey.private_key) || !read_key(r, p.signed_prekey.public_key) ||
            !r.take(e2e::signature_size, sig) || !r.u32(count) || count > 4 * max_prekeys_stored) {
            return corrupt("prekeys");
        }
        p.signed_prekey.signature.assign(sig.begin(), sig.end());
        for (std::uint32_t i = 0; i < count; ++i) {
            e2e::OneTimePrekey k;
            if (!r.u32(k.id) || !read_secret(r, k.private_key) || !read_key(r, k.public_key)) {
                return corrupt("prekeys");
            }
            p.one_time.push_back(std::move(k));
        }
        if (!r.at_end()) {
            return corrupt("prekeys");
        }
        return p;
    }
};

struct E2eClient::PeerState {
    std::string name;
    Bytes identity;  // pinned; empty = none yet
    bool verified = false;
    std::optional<Bytes> pending_identity;
    std::optional<std::pair<e2e::PrekeyBundle, SuiteId>> pending_bundle;
    std::uint64_t send_seq = 0;
    std::uint64_t recv_high = 0;
    std::set<std::uint64_t> missing;
    std::deque<MessageId> seen_order;
    std::set<MessageId> seen;
    std::vector<e2e::Session> sessions;  // front: the one we send on
    std::vector<Bytes> dropped_sessions;
    std::deque<Delivered> held;  // messages from a changed identity, until accepted (not acknowledged meanwhile)
    bool dirty = false;
    bool persisted = false;
    /// A text message made us step the ratchet and we have not sent since: the next tick answers with a
    /// ratchet-only message. Never set by a ratchet-only message, so two idle clients do not ping-pong.
    bool reply_due = false;  // has a record in the state (listed in the peer index)

    void remember(const MessageId& id) {
        if (!seen.insert(id).second) {
            return;
        }
        seen_order.push_back(id);
        if (seen_order.size() > max_seen_ids) {
            seen.erase(seen_order.front());
            seen_order.pop_front();
        }
    }

    void add_session(e2e::Session s) {
        sessions.insert(sessions.begin(), std::move(s));
        while (sessions.size() > max_sessions_per_peer) {
            const ByteView id = sessions.back().session_id();
            dropped_sessions.emplace_back(id.begin(), id.end());
            sessions.pop_back();
        }
    }

    void drop_all_sessions() {
        for (const auto& s : sessions) {
            const ByteView id = s.session_id();
            dropped_sessions.emplace_back(id.begin(), id.end());
        }
        sessions.clear();
    }

    [[nodiscard]] SecureBytes encode() const {
        SecureBytes out;
        WireWriter w(out);
        w.u8(record_version);
        w.u8(static_cast<std::uint8_t>(identity.size()));
        w.bytes(identity);
        w.u8(verified ? 1 : 0);
        w.u64(send_seq);
        w.u64(recv_high);
        w.u32(static_cast<std::uint32_t>(missing.size()));
        for (const auto n : missing) {
            w.u64(n);
        }
        w.u16(static_cast<std::uint16_t>(seen_order.size()));
        for (const auto& id : seen_order) {
            w.bytes(ByteView{id});
        }
        w.u8(static_cast<std::uint8_t>(sessions.size()));
        for (const auto& s : sessions) {
            w.bytes(s.session_id());
        }
        return out;
    }

    /// Fills everything but the sessions; returns their ids.
    Result<std::vector<Bytes>> decode(ByteView data) {
        WireReader r(data);
        std::uint8_t version = 0;
        std::uint8_t id_len = 0;
        std::uint8_t ver = 0;
        std::uint32_t n_missing = 0;
        std::uint16_t n_seen = 0;
        std::uint8_t n_sessions = 0;
        ByteView ik;
        if (!r.u8(version) || version != record_version || !r.u8(id_len) || (id_len != 0 && id_len != e2e::key_size) ||
            !r.take(id_len, ik) || !r.u8(ver) || ver > 1 || !r.u64(send_seq) || !r.u64(recv_high) ||
            !r.u32(n_missing) || n_missing > max_missing) {
            return corrupt("peer record");
        }
        identity.assign(ik.begin(), ik.end());
        verified = ver == 1;
        for (std::uint32_t i = 0; i < n_missing; ++i) {
            std::uint64_t m = 0;
            if (!r.u64(m)) {
                return corrupt("peer record");
            }
            missing.insert(m);
        }
        if (!r.u16(n_seen) || n_seen > max_seen_ids) {
            return corrupt("peer record");
        }
        for (std::uint16_t i = 0; i < n_seen; ++i) {
            ByteView v;
            if (!r.take(sizeof(MessageId), v)) {
                return corrupt("peer record");
            }
            MessageId id{};
            std::copy(v.begin(), v.end(), id.begin());
            remember(id);
        }
        std::vector<Bytes> ids;
        if (!r.u8(n_sessions) || n_sessions > max_sessions_per_peer) {
            return corrupt("peer record");
        }
        for (std::uint8_t i = 0; i < n_sessions; ++i) {
            ByteView v;
            if (!r.take(e2e::session_id_size, v)) {
                return corrupt("peer record");
            }
            ids.emplace_back(v.begin(), v.end());
        }
        if (!r.at_end()) {
            return corrupt("peer record");
        }
        return ids;
    }
};

E2eClient::E2eClient(const ClientConfig& config, ClientState& state, Rng& rng, DurableOutbox& outbox)
    : m_config(config), m_state(state), m_rng(rng), m_outbox(outbox) {}

E2eClient::~E2eClient() = default;

// ---------------------------------------------------------------- loading

Status E2eClient::set_user(const std::string& user) {
    if (m_user == user) {
        return ok();
    }
    if (!m_user.empty()) {
        return Error{Errc::invalid_state, "the end-to-end state is already in use by another user"};
    }
    SIM_TRY(auto stored, m_state.get(key_identity));
    if (stored) {
        WireReader r(*stored);
        std::string owner;
        ByteView seed;
        if (!read_name(r, owner) || !r.take(e2e::key_size, seed) || !r.at_end()) {
            return corrupt("identity");
        }
        if (owner != user) {
            return Error{Errc::invalid_state, "this client state belongs to another user"};
        }
        SIM_TRY(auto id, e2e::identity_from_private(seed));
        m_identity = std::move(id);
    } else {
        m_identity = e2e::generate_identity(m_rng);
        SecureBytes rec;
        WireWriter w(rec);
        w.u8(static_cast<std::uint8_t>(user.size()));
        w.text(user);
        w.bytes(m_identity->private_key);
        m_writes.push_back({key_identity, std::move(rec)});
    }
    SIM_TRY(auto device, m_state.get(key_device));
    if (device) {
        WireReader r(*device);
        std::uint32_t id = 0;
        ByteView seed;
        if (!r.u32(id) || id == 0 || (!r.at_end() && (!r.take(e2e::key_size, seed) || !r.at_end()))) {
            return corrupt("device record");
        }
        m_device = id;
        if (!seed.empty()) {
            SIM_TRY(auto account, e2e::identity_from_private(seed));
            m_account = std::move(account);
        }
    }
    m_user = user;
    SIM_TRY_STATUS(load_prekeys());
    SIM_TRY(auto index, m_state.get(key_peers));
    if (index) {
        WireReader r(*index);
        std::uint32_t n = 0;
        if (!r.u32(n)) {
            return corrupt("peer index");
        }
        for (std::uint32_t i = 0; i < n; ++i) {
            std::string name;
            if (!read_name(r, name)) {
                return corrupt("peer index");
            }
            SIM_TRY_STATUS(load_peer(name));
        }
    }
    if (!m_outbox.loaded()) {
        SIM_TRY_STATUS(m_outbox.load());
    }
    for (auto& [name, p] : m_peers) {
        seal_pending(*p);  // texts queued while a session was being set up when the last run ended
    }
    SIM_TRY_STATUS(m_inbox.load(m_state, m_user));
    return commit();
}

void E2eClient::preload_outbox() {
    if (ready_to_preload()) {
        m_outbox.preload();
    }
}

bool E2eClient::ready_to_preload() const {
    return has_identity();
}

bool E2eClient::has_identity() const {
    const auto identity = m_state.get(key_identity);
    return identity && identity->has_value();
}

Result<std::optional<DeviceId>> E2eClient::stored_device() const {
    SIM_TRY(const auto device, m_state.get(key_device));
    if (!device) {
        return std::optional<DeviceId>{};
    }
    WireReader r(*device);
    std::uint32_t id = 0;
    if (!r.u32(id) || id == 0) {
        return corrupt("device record");
    }
    return std::optional<DeviceId>{id};
}

Status E2eClient::adopt_link(const std::string& user, DeviceId device, const e2e::IdentityKeyPair& device_key,
                             ByteView account_seed, std::vector<StateWrite> also) {
    if (!m_user.empty() || has_identity()) {
        return Error{Errc::invalid_state, "this client state already holds an identity: link with a new state"};
    }
    SIM_TRY(const auto account, e2e::identity_from_private(account_seed));
    (void)account;  // checked only: the record keeps the seed
    SecureBytes identity;
    WireWriter wi(identity);
    wi.u8(static_cast<std::uint8_t>(user.size()));
    wi.text(user);
    wi.bytes(device_key.private_key);
    SecureBytes record;
    WireWriter wd(record);
    wd.u32(device);
    wd.bytes(account_seed);
    also.push_back({key_identity, std::move(identity)});
    also.push_back({key_device, std::move(record)});
    return m_state.write(also);
}

Status E2eClient::load_prekeys() {
    SIM_TRY(auto stored, m_state.get(key_prekeys));
    if (stored) {
        SIM_TRY(auto p, Prekeys::decode(*stored));
        m_prekeys = std::make_unique<Prekeys>(std::move(p));
        return ok();
    }
    m_prekeys = std::make_unique<Prekeys>();
    m_prekeys->signed_prekey = e2e::generate_signed_prekey(*m_identity, m_prekeys->next_id++, m_rng);
    m_prekeys_dirty = true;
    return ok();
}

Status E2eClient::load_peer(const std::string& peer) {
    SIM_TRY(auto rec, m_state.get(key_peer(peer)));
    if (!rec) {
        return corrupt("peer index entry");
    }
    auto p = std::make_unique<PeerState>();
    p->name = peer;
    p->persisted = true;
    SIM_TRY(auto ids, p->decode(*rec));
    for (const auto& id : ids) {
        SIM_TRY(auto blob, m_state.get(key_session(peer, id)));
        if (!blob) {
            return corrupt("session");
        }
        SIM_TRY(auto s, e2e::Session::deserialize(*blob, m_rng));
        p->sessions.push_back(std::move(s));
    }
    m_peers.emplace(peer, std::move(p));
    return ok();
}

// ---------------------------------------------------------------- committing

bool E2eClient::seen(std::string_view peer, const MessageId& id) const {
    const auto* p = find_peer(peer);
    return p != nullptr && p->seen.contains(id);
}

void E2eClient::remember(const std::string& peer, const MessageId& id) {
    auto& p = peer_state(peer);
    p.remember(id);
    mark_dirty(p);
}

void E2eClient::mark_dirty(PeerState& p) {
    if (!p.persisted) {
        m_peers_index_dirty = true;
    }
    p.dirty = true;
}

Status E2eClient::commit() {
    if (m_prekeys_dirty && m_prekeys) {
        m_writes.push_back({key_prekeys, m_prekeys->encode()});
    }
    for (auto& [name, p] : m_peers) {
        if (!p->dirty) {
            continue;
        }
        m_writes.push_back({key_peer(name), p->encode()});
        for (const auto& s : p->sessions) {
            m_writes.push_back({key_session(name, s.session_id()), s.serialize()});
        }
        for (const auto& id : p->dropped_sessions) {
            m_writes.push_back({key_session(name, id), std::nullopt});
        }
    }
    if (m_peers_index_dirty) {
        SecureBytes index;
        WireWriter w(index);
        std::uint32_t n = 0;
        for (const auto& [name, p] : m_peers) {
            n += (p->dirty || p->persisted) ? 1U : 0U;
        }
        w.u32(n);
        for (const auto& [name, p] : m_peers) {
            if (p->dirty || p->persisted) {
                w.u8(static_cast<std::uint8_t>(name.size()));
                w.text(name);
            }
        }
        m_writes.push_back({key_peers, std::move(index)});
    }
    m_outbox.collect(m_writes);
    if (!m_writes.empty()) {
        auto batch = std::move(m_writes);
        m_writes.clear();
        SIM_TRY_STATUS(m_state.write(batch));
    }
    m_prekeys_dirty = false;
    m_peers_index_dirty = false;
    m_outbox.committed();
    for (auto& [name, p] : m_peers) {
        p->persisted = p->persisted || p->dirty;
        p->dirty = false;
        p->dropped_sessions.clear();
    }
    for (auto& [peer, ids] : m_pending_acks) {
        for (std::size_t i = 0; i < ids.size(); i += max_ids_per_frame) {
            const auto end = std::min(ids.size(), i + max_ids_per_frame);
            const std::vector<MessageId> chunk(ids.begin() + static_cast<std::ptrdiff_t>(i),
                                               ids.begin() + static_cast<std::ptrdiff_t>(end));
            m_ready_frames.push_back(Frame{FrameType::ack, 0, m_user, peer, encode_ack(chunk)});
        }
    }
    m_pending_acks.clear();
    for (auto& f : m_after_commit) {
        m_ready_frames.push_back(std::move(f));
    }
    m_after_commit.clear();
    return ok();
}

std::vector<ClientEvent> E2eClient::take_events() {
    auto out = std::move(m_events);
    m_events.clear();
    return out;
}

std::vector<Frame> E2eClient::take_frames() {
    auto out = std::move(m_ready_frames);
    m_ready_frames.clear();
    return out;
}

void E2eClient::queue_frame(Frame frame, bool after_commit) {
    if (after_commit) {
        m_after_commit.push_back(std::move(frame));
    } else {
        m_ready_frames.push_back(std::move(frame));
    }
}

void E2eClient::error_event(const std::string& peer, const Error& error) {
    event(ErrorEvent{error, peer, std::nullopt});
}

E2eClient::PeerState& E2eClient::peer_state(const std::string& peer) {
    auto it = m_peers.find(peer);
    if (it == m_peers.end()) {
        auto p = std::make_unique<PeerState>();
        p->name = peer;
        it = m_peers.emplace(peer, std::move(p)).first;
        m_peers_index_dirty = true;
    }
    return *it->second;
}

const E2eClient::PeerState* E2eClient::find_peer(std::string_view peer) const {
    const auto it = m_peers.find(peer);
    return it == m_peers.end() ? nullptr : it->second.get();
}

std::string E2eClient::safety_number_with(const PeerState& p, ByteView identity) const {
    return e2e::safety_number(m_user, account_key().public_key, p.name, identity);
}

// ---------------------------------------------------------------- prekeys

void E2eClient::on_prekey_status(const PrekeyStatus& status) {
    if (!ready()) {
        return;
    }
    const bool ours = status.identity_key && constant_time_equal(*status.identity_key, m_identity->public_key);
    if (!ours) {
        upload_prekeys(true);
    } else if (status.one_time_count < prekey_low_water) {
        upload_prekeys(false);
    }
}

void E2eClient::upload_prekeys(bool replace) {
    auto& pk = *m_prekeys;
    if (replace) {
        pk.one_time.clear();
    }
    const std::size_t room = max_prekeys_stored > pk.one_time.size() ? max_prekeys_stored - pk.one_time.size() : 0;
    const std::size_t n = std::min({m_config.one_time_prekeys, max_prekeys_per_upload, room});
    PrekeyUpload up;
    up.replace = replace;
    up.identity_key = m_identity->public_key;
    up.signed_prekey_id = pk.signed_prekey.id;
    up.signed_prekey = pk.signed_prekey.public_key;
    up.signed_prekey_signature = pk.signed_prekey.signature;
    for (std::size_t i = 0; i < n; ++i) {
        auto k = e2e::generate_one_time_prekey(pk.next_id++, m_rng);
        up.one_time_prekeys.emplace_back(k.id, k.public_key);
        pk.one_time.push_back(std::move(k));
    }
    m_prekeys_dirty = true;  // the private halves are committed before the upload leaves
    queue_frame(Frame{FrameType::prekeys, 0, m_user, {}, encode_prekey_upload(up)}, true);
}

// ---------------------------------------------------------------- sessions

void E2eClient::on_bundle(const std::string& peer, const e2e::PrekeyBundle& bundle, SuiteId hint) {
    if (!ready()) {
        return;
    }
    if (const auto st = e2e::verify_bundle(bundle); !st) {
        error_event(peer, Error{st.code(), "prekey bundle refused: " + st.error().message()});
        return;  // a badly signed bundle is never a reason to announce a new identity
    }
    auto& p = peer_state(peer);
    if (!p.identity.empty() && !constant_time_equal(p.identity, bundle.identity_key)) {
        p.pending_bundle.emplace(bundle, hint);
        note_identity_change(p, bundle.identity_key);
        return;
    }
    if (!p.sessions.empty() && !p.pending_identity) {
        // Same identity and a session already: keep it (the ratchet and its sequence numbers go on); the bundle
        // only confirmed that the key has not changed.
        keyed_event(p, p.sessions.front().suite(), false);
        return;
    }
    start_session(p, bundle, hint);
}

void E2eClient::start_session(PeerState& p, const e2e::PrekeyBundle& bundle, SuiteId hint) {
    const auto pref = m_config.end_to_end_suites.preference();
    const SuiteId suite = m_config.end_to_end_suites.allows(hint) || pref.empty() ? hint : pref.front();
    auto s = e2e::Session::initiate(*m_identity, m_user, bundle, p.name, suite, m_rng);
    if (!s) {
        error_event(p.name, Error{s.code(), "prekey bundle refused: " + s.error().message()});
        return;
    }
    adopt_session(p, bundle.identity_key, std::move(*s));
}

void E2eClient::adopt_session(PeerState& p, const Bytes& identity, e2e::Session session) {
    const bool first = p.identity.empty();
    p.identity = identity;
    const SuiteId suite = session.suite();
    p.add_session(std::move(session));
    mark_dirty(p);
    keyed_event(p, suite, first);
    seal_pending(p);
}

void E2eClient::seal_pending(PeerState& p) {
    if (p.sessions.empty() || p.pending_identity) {
        return;
    }
    bool failed = false;
    m_outbox.rewrite(p.name, [&](const MessageId& id, Bytes& payload) {
        const auto unsealed = read_unsealed_text(payload);
        if (failed || !unsealed) {
            return false;
        }
        const auto steps_before = p.sessions.front().dh_steps();
        auto sealed = seal_content(p, E2eContent{ContentKind::text,
                                                 p.send_seq + 1,
                                                 id,
                                                 std::string(unsealed->text.begin(), unsealed->text.end()),
                                                 unsealed->sent_at,
                                                 {}});
        if (!sealed) {
            error_event(p.name, sealed.error());
            failed = true;  // it and the ones behind it stay unsealed (and held): the order is kept
            return false;
        }
        ++p.send_seq;
        if (p.sessions.front().dh_steps() != steps_before) {
            ratchet_event(p, p.sessions.front().dh_steps(), KeyDirection::sending);
        }
        secure_zero(payload.data(), payload.size());
        payload = encode_envelope(*sealed);
        return true;  // the sealed form replaces the text in the same commit as the ratchet state that made it
    });
    if (!failed) {
        m_outbox.release(p.name);
    }
}

void E2eClient::keyed_event(const PeerState& p, SuiteId suite, bool first_contact) {
    event(KeyAssignedEvent{p.name, suite, ConversationMode::end_to_end, safety_number_with(p, p.identity),
                           first_contact});
}

void E2eClient::note_identity_change(PeerState& p, const Bytes& key) {
    if (p.pending_identity && constant_time_equal(*p.pending_identity, key)) {
        return;  // announced already
    }
    p.pending_identity = key;
    event(IdentityChangedEvent{p.name, safety_number_with(p, key)});
}

void E2eClient::ratchet_event(const PeerState& p, std::uint64_t steps, KeyDirection direction) {
    event(KeyRotatedEvent{p.name, ConversationMode::end_to_end, static_cast<std::uint32_t>(steps), direction});
}

bool E2eClient::has_session(std::string_view peer) const {
    const auto* p = find_peer(peer);
    return p != nullptr && (!p->sessions.empty() || p->pending_identity);
}

std::vector<std::string> E2eClient::peers_with_sessions() const {
    std::vector<std::string> out;
    for (const auto& [name, p] : m_peers) {
        if (!p->sessions.empty()) {
            out.push_back(name);
        }
    }
    return out;
}

std::optional<SuiteId> E2eClient::session_suite(std::string_view peer) const {
    const auto* p = find_peer(peer);
    if (p == nullptr || p->sessions.empty()) {
        return std::nullopt;
    }
    return p->sessions.front().suite();
}

// ---------------------------------------------------------------- receiving

void E2eClient::ack(const std::string& peer, const MessageId& id) {
    m_pending_acks[peer].push_back(id);
}

std::uint64_t E2eClient::keep_received(const InboxEntry& entry) {
    std::uint64_t index = 0;
    for (auto& w : m_inbox.add(entry, index)) {
        m_writes.push_back(std::move(w));
    }
    return index;
}

Result<std::vector<InboxEntry>> E2eClient::inbox(std::uint64_t from, std::size_t limit, std::string_view peer) const {
    if (!ready()) {
        return Error{Errc::not_authenticated, "log in first: the inbox belongs to the logged-in user"};
    }
    return m_inbox.read(m_state, from, limit, peer);
}

Status E2eClient::mark_read(std::uint64_t up_to) {
    if (!ready()) {
        return Error{Errc::not_authenticated, "log in first: the inbox belongs to the logged-in user"};
    }
    for (auto& w : m_inbox.mark_read(up_to)) {
        m_writes.push_back(std::move(w));
    }
    return commit();
}

void E2eClient::on_message(const std::string& peer, const Delivered& d) {
    const auto& envelope = d.envelope;
    if (!ready()) {
        return;
    }
    auto& p = peer_state(peer);
    if (p.seen.contains(envelope.id)) {
        ack(peer, envelope.id);  // a retry or a replay: acknowledged again, not shown again
        return;
    }
    if (p.pending_identity) {
        // Nothing is shown from a peer whose identity is in question until the user decides; not acknowledged,
        // so the server keeps it meanwhile.
        if (p.held.size() < max_held) {
            p.held.push_back(d);
        }
        return;
    }
    auto info = e2e::inspect(envelope.body);
    if (!info) {
        error_event(peer, Error{info.code(), "malformed end-to-end message dropped"});
        ack(peer, envelope.id);
        return;
    }
    const auto it = std::find_if(p.sessions.begin(), p.sessions.end(), [&](const e2e::Session& s) {
        return constant_time_equal(s.session_id(), info->session_id);
    });
    if (it == p.sessions.end()) {
        open_initial(p, d, *info);
        return;
    }
    if (it != p.sessions.begin()) {
        std::rotate(p.sessions.begin(), it, it + 1);  // the session that last received is the one we send on
    }
    open_with_session(p, d);
}

void E2eClient::open_with_session(PeerState& p, const Delivered& d) {
    const auto& envelope = d.envelope;
    auto& s = p.sessions.front();
    const auto before = s.dh_steps();
    auto plain = s.open(envelope.body);
    if (!plain) {
        // Forged, replayed (its key is gone) or corrupted: never shown. Acknowledged so the server drops it.
        error_event(p.name, Error{plain.code(), "end-to-end message did not open: dropped"});
        ack(p.name, envelope.id);
        return;
    }
    mark_dirty(p);
    deliver_content(p, d, before, s.dh_steps(), std::move(*plain));
}

void E2eClient::open_initial(PeerState& p, const Delivered& d, const e2e::MessageInfo& info) {
    const auto& envelope = d.envelope;
    if (!info.initial) {
        error_event(p.name, Error{Errc::auth_failed, "message of an unknown session dropped"});
        ack(p.name, envelope.id);
        return;
    }
    const auto& init = *info.initial;
    if (!p.identity.empty() && !constant_time_equal(p.identity, init.identity_key)) {
        if (p.held.size() < max_held) {
            // not acknowledged: the server keeps it until the user decides
            p.held.push_back(d);
        }
        note_identity_change(p, init.identity_key);
        return;
    }
    if (!m_config.end_to_end_suites.allows(init.suite)) {
        error_event(p.name, Error{Errc::suite_not_allowed, "end-to-end suite refused by our policy"});
        ack(p.name, envelope.id);
        return;
    }
    auto& pk = *m_prekeys;
    if (init.signed_prekey_id != pk.signed_prekey.id) {
        error_event(p.name, Error{Errc::invalid_key, "unknown signed prekey"});
        ack(p.name, envelope.id);
        return;
    }
    const e2e::OneTimePrekey* opk = nullptr;
    auto opk_it = pk.one_time.end();
    if (init.one_time_prekey_id != e2e::no_one_time_prekey) {
        opk_it = std::find_if(pk.one_time.begin(), pk.one_time.end(),
                              [&](const e2e::OneTimePrekey& k) { return k.id == init.one_time_prekey_id; });
        if (opk_it == pk.one_time.end()) {
            error_event(p.name, Error{Errc::invalid_key, "one-time prekey unknown or already used"});
            ack(p.name, envelope.id);
            return;
        }
        opk = &*opk_it;
    }
    auto s = e2e::Session::respond(*m_identity, m_user, pk.signed_prekey, opk, init, p.name, m_rng);
    if (!s) {
        error_event(p.name, Error{s.code(), "end-to-end session refused"});
        ack(p.name, envelope.id);
        return;
    }
    auto plain = s->open(envelope.body);
    if (!plain) {
        error_event(p.name, Error{plain.code(), "end-to-end message did not open: dropped"});
        ack(p.name, envelope.id);
        return;
    }
    if (opk != nullptr) {
        pk.one_time.erase(opk_it);  // used once, then gone
        m_prekeys_dirty = true;
    }
    const auto steps = s->dh_steps();
    adopt_session(p, init.identity_key, std::move(*s));
    deliver_content(p, d, 0, steps, std::move(*plain));  // the first message's DH step counts too
}

void E2eClient::deliver_content(PeerState& p, const Delivered& d, std::uint64_t steps_before, std::uint64_t steps_after,
                                SecureBytes plaintext) {
    const auto& envelope = d.envelope;
    const auto received_at = d.received_at;
    auto content = decode_e2e_content(plaintext);
    secure_zero(plaintext.data(), plaintext.size());
    p.remember(envelope.id);
    ack(p.name, envelope.id);
    if (!content || content->id != envelope.id) {
        error_event(p.name, Error{Errc::auth_failed, "message id does not match its sealed id: dropped"});
        return;
    }
    // The address sealed inside against the one the server delivered it with: a server that moved the message to
    // another conversation or device, or claims another sending device, is caught here (6.3). Contents sealed
    // before addresses existed (kinds 1-3) have none to compare.
    if (content->address && *content->address != ContentAddress{d.conversation, d.sender_device, m_device}) {
        error_event(p.name, Error{Errc::auth_failed,
                                  "message re-addressed (its sealed conversation or devices differ from its "
                                  "delivery): dropped"});
        return;
    }
    if (steps_after != steps_before) {
        ratchet_event(p, steps_after, KeyDirection::receiving);
    }
    if (content->kind == ContentKind::ratchet_only) {
        return;
    }
    p.reply_due = p.reply_due || steps_after != steps_before;
    const std::uint64_t seq = content->seq;
    if (seq <= p.recv_high && !p.missing.contains(seq)) {
        return;  // this sequence number was shown already: a replay under a new id
    }
    if (seq > p.recv_high + 1) {
        const std::uint64_t gap = seq - p.recv_high - 1;
        for (std::uint64_t n = p.recv_high + 1; n < seq && p.missing.size() < max_missing; ++n) {
            p.missing.insert(n);
        }
        event(GapEvent{p.name, gap});
    }
    p.missing.erase(seq);
    p.recv_high = std::max(p.recv_high, seq);
    MessageEvent e;
    e.peer = p.name;
    e.text = std::move(content->text);
    e.message_id = envelope.id;
    e.seq = seq;
    e.mode = ConversationMode::end_to_end;
    e.sent_at = content->sent_at;
    e.received_at = received_at;
    e.conversation = d.conversation;
    e.sender_device = d.sender_device;
    e.inbox_index = keep_received(InboxEntry{0, p.name, envelope.id, seq, e.text, ConversationMode::end_to_end, false,
                                             e.sent_at, e.received_at, e.conversation, e.sender_device});
    event(std::move(e));
}

// ---------------------------------------------------------------- sending

Result<Envelope> E2eClient::seal_content(PeerState& p, E2eContent content) {
    content.address = ContentAddress{pair_conversation_id(m_user, p.name), m_device, first_device};
    auto plain = encode_e2e_content(content);
    auto body = p.sessions.front().seal(plain);
    secure_zero(plain.data(), plain.size());
    SIM_TRY(auto sealed, std::move(body));
    p.reply_due = false;
    mark_dirty(p);
    return Envelope{content.id, ConversationMode::end_to_end, std::move(sealed)};
}

Result<MessageId> E2eClient::send_text(const std::string& peer, std::string_view text, WallTime sent_at,
                                       std::size_t max_inner) {
    if (!ready()) {
        return Error{Errc::not_authenticated, "log in first"};
    }
    const auto it = m_peers.find(peer);
    if (it != m_peers.end() && it->second->pending_identity) {
        return Error{Errc::identity_changed, "the peer's identity key changed: accept it before sending"};
    }
    // Message to one device (46) + ratchet message header (at most 1 + 8 + 73 + 40) + content header with its
    // address and timestamp (57) + suite overhead.
    const std::size_t overhead =
        single_device_message_overhead + 122 + 57 + 48 + min_frame_size + m_user.size() + peer.size();
    if (text.size() + overhead > max_inner) {
        return Error{Errc::frame_too_large, "message too long"};
    }
    if (it == m_peers.end() || it->second->sessions.empty()) {
        // No session yet (the peer has not published keys, or it was never opened): the text waits in the outbox
        // and is sealed when the session exists (seal_pending); the client core asks for the peer's keys.
        const auto id = random_id(m_rng);
        SIM_TRY_STATUS(enqueue(id, peer, make_unsealed_text(id, sent_at, text)));
        return id;
    }
    auto& p = *it->second;
    const auto steps_before = p.sessions.front().dh_steps();
    E2eContent content{ContentKind::text, p.send_seq + 1, random_id(m_rng), std::string(text), sent_at, {}};
    SIM_TRY(const auto envelope, seal_content(p, content));
    ++p.send_seq;
    if (p.sessions.front().dh_steps() != steps_before) {
        ratchet_event(p, p.sessions.front().dh_steps(), KeyDirection::sending);
    }
    SIM_TRY_STATUS(enqueue(content.id, peer, encode_envelope(envelope)));
    return content.id;
}

Status E2eClient::enqueue(const MessageId& id, const std::string& peer, Bytes payload) {
    m_outbox.add(id, peer, std::move(payload));
    if (auto st = commit(); !st) {
        m_outbox.forget(id);  // not durable here: not sent either (the caller hears of the failure)
        return st;
    }
    return ok();
}

void E2eClient::tick() {
    if (!ready()) {
        return;
    }
    for (auto& [name, p] : m_peers) {
        if (!p->reply_due || p->sessions.empty() || p->pending_identity || !p->sessions.front().reply_pending()) {
            continue;
        }
        // Our ratchet key changed when the peer's last message arrived: send it back so the peer can step too.
        E2eContent content{ContentKind::ratchet_only, 0, random_id(m_rng), {}, {}, {}};
        if (const auto envelope = seal_content(*p, content)) {
            queue_frame(Frame{FrameType::message, 0, m_user, name, encode_pair_submission(*envelope, m_user, name, m_device)},
                        true);
        }
    }
}

// ---------------------------------------------------------------- identity

Result<PeerIdentity> E2eClient::peer_identity(std::string_view peer) const {
    const auto* p = find_peer(peer);
    if (p == nullptr || p->identity.empty() || !ready()) {
        return Error{Errc::no_conversation, "no identity key known for this peer"};
    }
    PeerIdentity out;
    out.peer = p->name;
    out.identity_key = p->identity;
    out.safety_number = safety_number_with(*p, p->identity);
    out.verified = p->verified;
    out.change_pending = p->pending_identity.has_value();
    return out;
}

Status E2eClient::verify_peer(std::string_view peer) {
    const auto it = m_peers.find(peer);
    if (it == m_peers.end() || it->second->identity.empty()) {
        return Error{Errc::no_conversation, "no identity key known for this peer"};
    }
    if (it->second->pending_identity) {
        return Error{Errc::identity_changed, "accept the changed identity key first"};
    }
    it->second->verified = true;
    mark_dirty(*it->second);
    return ok();
}

Status E2eClient::accept_identity(std::string_view peer) {
    const auto it = m_peers.find(peer);
    if (it == m_peers.end() || !it->second->pending_identity) {
        return Error{Errc::invalid_state, "no identity change pending for this peer"};
    }
    auto& p = *it->second;
    p.identity = std::move(*p.pending_identity);
    p.pending_identity.reset();
    p.verified = false;
    p.drop_all_sessions();
    // A new identity is a new client state (docs/protocol.md 6.8): its sequence numbers start again from 1, and so
    // must ours to it; otherwise its first messages look like replays and ours like a gap.
    p.send_seq = 0;
    p.recv_high = 0;
    p.missing.clear();
    mark_dirty(p);
    if (p.pending_bundle) {
        auto pending = std::move(*p.pending_bundle);
        p.pending_bundle.reset();
        start_session(p, pending.first, pending.second);
    }
    auto held = std::move(p.held);
    p.held.clear();
    for (const auto& d : held) {
        on_message(p.name, d);
    }
    return ok();
}

}  // namespace sim::client_detail
