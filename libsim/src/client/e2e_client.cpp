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
constexpr std::uint8_t peer_record_version = 2;  // with devices (record_version: before them)
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

struct E2eClient::DeviceState {
    Bytes key;  // the device key its sessions use (from the list, or the pinned identity for device 1)
    std::vector<e2e::Session> sessions;  // front: the one we send on
    std::uint64_t recv_high = 0;
    std::set<std::uint64_t> missing;
    /// A text message made us step the ratchet and we have not sent since: the next tick answers with a
    /// ratchet-only message. Never set by a ratchet-only message, so two idle clients do not ping-pong.
    bool reply_due = false;
};

// Peer records: version 2 holds the account-level part and one part per device; version 1 (before devices) is
// read as device 1 of the peer, whose key is the pinned identity.
struct E2eClient::PeerState {
    std::string name;
    Bytes identity;  // the pinned account key (device 1's key before devices); empty = none yet
    bool verified = false;
    std::optional<Bytes> pending_identity;
    std::optional<KeyAssignment> pending_keys;
    std::uint64_t send_seq = 0;
    std::deque<MessageId> seen_order;
    std::set<MessageId> seen;
    std::map<DeviceId, DeviceState> devices;
    std::vector<Bytes> dropped_sessions;
    /// Not acknowledged meanwhile: messages from a changed identity (until accepted), and from a device whose key
    /// we cannot check yet (until its list comes).
    std::deque<std::pair<Delivered, std::string>> held;
    std::optional<e2e::DeviceList> list;  // in force, once read (list_loaded)
    bool list_loaded = false;
    bool dirty = false;
    bool persisted = false;  // has a record in the state (listed in the peer index)

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

    void add_session(DeviceId device, e2e::Session s) {
        auto& sessions = devices[device].sessions;
        sessions.insert(sessions.begin(), std::move(s));
        while (sessions.size() > max_sessions_per_peer) {
            const ByteView id = sessions.back().session_id();
            dropped_sessions.emplace_back(id.begin(), id.end());
            sessions.pop_back();
        }
    }

    void drop_device(DeviceId device) {
        const auto it = devices.find(device);
        if (it == devices.end()) {
            return;
        }
        for (const auto& s : it->second.sessions) {
            const ByteView id = s.session_id();
            dropped_sessions.emplace_back(id.begin(), id.end());
        }
        devices.erase(it);
    }

    void drop_all_sessions() {
        while (!devices.empty()) {
            drop_device(devices.begin()->first);
        }
    }

    [[nodiscard]] bool has_sessions() const {
        return std::any_of(devices.begin(), devices.end(), [](const auto& d) { return !d.second.sessions.empty(); });
    }

    [[nodiscard]] SecureBytes encode() const {
        SecureBytes out;
        WireWriter w(out);
        w.u8(peer_record_version);
        w.u8(static_cast<std::uint8_t>(identity.size()));
        w.bytes(identity);
        w.u8(verified ? 1 : 0);
        w.u64(send_seq);
        w.u16(static_cast<std::uint16_t>(seen_order.size()));
        for (const auto& id : seen_order) {
            w.bytes(ByteView{id});
        }
        w.u8(static_cast<std::uint8_t>(devices.size()));
        for (const auto& [device, d] : devices) {
            w.u32(device);
            w.u8(static_cast<std::uint8_t>(d.key.size()));
            w.bytes(d.key);
            w.u64(d.recv_high);
            w.u32(static_cast<std::uint32_t>(d.missing.size()));
            for (const auto n : d.missing) {
                w.u64(n);
            }
            w.u8(static_cast<std::uint8_t>(d.sessions.size()));
            for (const auto& s : d.sessions) {
                w.bytes(s.session_id());
            }
        }
        return out;
    }

    /// Fills everything but the sessions; returns their ids with their devices.
    Result<std::vector<std::pair<DeviceId, Bytes>>> decode(ByteView data) {
        WireReader r(data);
        std::uint8_t version = 0;
        std::uint8_t id_len = 0;
        std::uint8_t ver = 0;
        ByteView ik;
        if (!r.u8(version) || (version != record_version && version != peer_record_version) || !r.u8(id_len) ||
            (id_len != 0 && id_len != e2e::key_size) || !r.take(id_len, ik) || !r.u8(ver) || ver > 1 ||
            !r.u64(send_seq)) {
            return corrupt("peer record");
        }
        identity.assign(ik.begin(), ik.end());
        verified = ver == 1;
        std::vector<std::pair<DeviceId, Bytes>> ids;
        if (version == record_version) {
            // Before devices: device 1's receiving state, the ids seen, its sessions.
            auto& d = devices[first_device];
            d.key = identity;
            if (!read_receiving(r, d) || !read_seen(r) || !read_session_ids(r, first_device, ids) || !r.at_end()) {
                return corrupt("peer record");
            }
            return ids;
        }
        std::uint8_t n_devices = 0;
        if (!read_seen(r) || !r.u8(n_devices)) {
            return corrupt("peer record");
        }
        for (std::uint8_t i = 0; i < n_devices; ++i) {
            std::uint32_t device = 0;
            std::uint8_t key_len = 0;
            ByteView key;
            if (!r.u32(device) || device == 0 || devices.contains(device) || !r.u8(key_len) ||
                (key_len != 0 && key_len != e2e::key_size) || !r.take(key_len, key)) {
                return corrupt("peer record");
            }
            auto& d = devices[device];
            d.key.assign(key.begin(), key.end());
            if (!read_receiving(r, d) || !read_session_ids(r, device, ids)) {
                return corrupt("peer record");
            }
        }
        if (!r.at_end()) {
            return corrupt("peer record");
        }
        return ids;
    }

private:
    static bool read_receiving(WireReader& r, DeviceState& d) {
        std::uint32_t n_missing = 0;
        if (!r.u64(d.recv_high) || !r.u32(n_missing) || n_missing > max_missing) {
            return false;
        }
        for (std::uint32_t i = 0; i < n_missing; ++i) {
            std::uint64_t m = 0;
            if (!r.u64(m)) {
                return false;
            }
            d.missing.insert(m);
        }
        return true;
    }

    bool read_seen(WireReader& r) {
        std::uint16_t n_seen = 0;
        if (!r.u16(n_seen) || n_seen > max_seen_ids) {
            return false;
        }
        for (std::uint16_t i = 0; i < n_seen; ++i) {
            ByteView v;
            if (!r.take(sizeof(MessageId), v)) {
                return false;
            }
            MessageId id{};
            std::copy(v.begin(), v.end(), id.begin());
            remember(id);
        }
        return true;
    }

    static bool read_session_ids(WireReader& r, DeviceId device, std::vector<std::pair<DeviceId, Bytes>>& ids) {
        std::uint8_t n_sessions = 0;
        if (!r.u8(n_sessions) || n_sessions > max_sessions_per_peer) {
            return false;
        }
        for (std::uint8_t i = 0; i < n_sessions; ++i) {
            ByteView v;
            if (!r.take(e2e::session_id_size, v)) {
                return false;
            }
            ids.emplace_back(device, Bytes(v.begin(), v.end()));
        }
        return true;
    }
};

E2eClient::E2eClient(const ClientConfig& config, ClientState& state, Rng& rng, DurableOutbox& outbox)
    : m_config(config), m_state(state), m_rng(rng), m_outbox(outbox), m_lists(state) {}

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
    SIM_TRY_STATUS(m_inbox.load(m_state, m_user));
    complete_all();  // texts queued while a session was being set up when the last run ended
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
    for (const auto& [device, id] : ids) {
        SIM_TRY(auto blob, m_state.get(key_session(peer, id)));
        if (!blob) {
            return corrupt("session");
        }
        SIM_TRY(auto s, e2e::Session::deserialize(*blob, m_rng));
        p->devices[device].sessions.push_back(std::move(s));
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
        for (const auto& [device, d] : p->devices) {
            for (const auto& s : d.sessions) {
                m_writes.push_back({key_session(name, s.session_id()), s.serialize()});
            }
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

Result<const e2e::DeviceList*> E2eClient::list_of(PeerState& p) {
    if (!p.list_loaded) {
        SIM_TRY(auto known, m_lists.known(p.name));
        p.list = std::move(known);
        p.list_loaded = true;
    }
    return p.list ? &*p.list : nullptr;
}

Result<std::vector<DeviceId>> E2eClient::targets(PeerState& p) {
    SIM_TRY(const auto* list, list_of(p));
    const bool self = p.name == m_user;
    std::vector<DeviceId> out;
    if (list == nullptr) {
        if (!self) {
            out.push_back(first_device);
        }
        return out;
    }
    for (const auto& d : list->devices) {
        if (!self || d.device != m_device) {
            out.push_back(d.device);
        }
    }
    return out;
}

Result<Bytes> E2eClient::expected_key(PeerState& p, DeviceId device) {
    SIM_TRY(const auto* list, list_of(p));
    if (list != nullptr) {
        for (const auto& d : list->devices) {
            if (d.device == device) {
                return d.key;
            }
        }
        return Bytes{};
    }
    return device == first_device && p.name != m_user ? p.identity : Bytes{};
}

void E2eClient::on_keys(const KeyAssignment& keys) {
    if (!ready()) {
        return;
    }
    const bool self = keys.peer == m_user;
    const auto& peer = keys.peer;
    const Bytes& account = keys.bundle ? keys.bundle->identity_key : keys.account_key;
    if (keys.bundle) {
        if (const auto st = e2e::verify_bundle(*keys.bundle); !st) {
            error_event(peer, Error{st.code(), "prekey bundle refused: " + st.error().message()});
            return;  // a badly signed bundle is never a reason to announce a new identity
        }
    }
    if (self && (keys.bundle || !constant_time_equal(account, account_key().public_key))) {
        error_event(peer, Error{Errc::auth_failed, "keys for our own devices under another account key: refused"});
        return;
    }
    auto& p = peer_state(peer);
    if (!self && !p.identity.empty() && !constant_time_equal(p.identity, account)) {
        p.pending_keys = keys;
        note_identity_change(p, account);
        return;
    }
    apply_keys(p, keys);
}

void E2eClient::want_keys(const std::string& name) {
    if (name != m_applying) {  // the keys of `name` just came: asking again would loop while a device has none
        m_wanted_keys.push_back(name);
    }
}

void E2eClient::apply_keys(PeerState& p, const KeyAssignment& keys) {
    const auto applying = std::exchange(m_applying, p.name);
    struct Restore {
        std::string& target;
        std::string value;
        ~Restore() { target = std::move(value); }
    } restore{m_applying, applying};
    const bool first_contact = p.identity.empty();
    if (p.name == m_user) {
        p.identity = account_key().public_key;
        p.verified = true;
    }
    const Bytes account = keys.bundle ? keys.bundle->identity_key : keys.account_key;
    std::vector<DeviceBundle> bundles;
    if (keys.bundle) {
        bundles.push_back({first_device, *keys.bundle});
    } else {
        auto accepted = m_lists.accept(p.name, account, keys.device_list);
        if (!accepted) {
            error_event(p.name, Error{accepted.code(), "the device list of " + p.name +
                                                           " was refused: " + accepted.error().message()});
            return;
        }
        if (accepted->record) {
            m_writes.push_back(std::move(*accepted->record));
            p.list = accepted->list;
            p.list_loaded = true;
        }
        bundles = keys.device_bundles;
    }
    p.identity = account;
    mark_dirty(p);
    drop_unlisted(p);
    std::optional<SuiteId> suite;
    for (const auto& [device, bundle] : bundles) {
        const auto expected = expected_key(p, device);
        if (!expected) {
            error_event(p.name, expected.error());
            return;
        }
        if (!keys.bundle && (expected->empty() || !constant_time_equal(*expected, bundle.identity_key))) {
            error_event(p.name, Error{Errc::auth_failed, "a prekey bundle of device " + std::to_string(device) +
                                                             " does not carry its listed key: refused"});
            continue;
        }
        if (keys.bundle || e2e::verify_bundle(bundle)) {
            auto& d = p.devices[device];
            d.key = bundle.identity_key;
            if (!d.sessions.empty()) {
                suite = d.sessions.front().suite();  // kept: the ratchet and its sequence numbers go on
            } else if (start_session(p, device, bundle, keys.suite)) {
                suite = d.sessions.front().suite();
            }
        } else {
            error_event(p.name, Error{Errc::auth_failed, "prekey bundle of device " + std::to_string(device) +
                                                             " refused: its signed prekey does not verify"});
        }
    }
    if (suite && p.name != m_user) {
        keyed_event(p, *suite, first_contact);
    }
    replay_held(p);
    if (p.name == m_user) {
        complete_all();
    } else {
        complete(p.name);
    }
}

void E2eClient::drop_unlisted(PeerState& p) {
    const auto wanted = targets(p);
    if (!wanted) {
        return;
    }
    std::vector<DeviceId> gone;
    for (const auto& [device, d] : p.devices) {
        if (std::find(wanted->begin(), wanted->end(), device) == wanted->end()) {
            gone.push_back(device);
        }
    }
    for (const auto device : gone) {
        p.drop_device(device);  // a removed device cannot read what we send from now on
    }
    if (!gone.empty()) {
        mark_dirty(p);
    }
}

bool E2eClient::start_session(PeerState& p, DeviceId device, const e2e::PrekeyBundle& bundle, SuiteId hint) {
    const auto pref = m_config.end_to_end_suites.preference();
    const SuiteId suite = m_config.end_to_end_suites.allows(hint) || pref.empty() ? hint : pref.front();
    auto s = e2e::Session::initiate(*m_identity, m_user, bundle, p.name, suite, m_rng);
    if (!s) {
        error_event(p.name, Error{s.code(), "prekey bundle refused: " + s.error().message()});
        return false;
    }
    p.add_session(device, std::move(*s));
    mark_dirty(p);
    return true;
}

void E2eClient::list_changed(const std::string& whose) {
    if (!ready()) {
        return;
    }
    const auto it = m_peers.find(whose);
    if (it == m_peers.end()) {
        if (whose == m_user) {
            complete_all();
        }
        return;
    }
    auto& p = *it->second;
    p.list_loaded = false;  // read again: Devices wrote the newer one
    drop_unlisted(p);
    replay_held(p);
    if (whose == m_user) {
        complete_all();
    } else {
        complete(whose);
    }
}

void E2eClient::devices_refused(const std::string& peer) {
    if (!ready()) {
        return;
    }
    for (const auto& name : {peer, m_user}) {
        if (const auto it = m_peers.find(name); it != m_peers.end()) {
            it->second->list_loaded = false;
        }
    }
    complete(peer);
}

void E2eClient::complete_all() {
    std::vector<std::string> names;
    for (const auto& [name, p] : m_peers) {
        if (name != m_user) {
            names.push_back(name);
        }
    }
    for (const auto& name : names) {
        complete(name);
    }
}

void E2eClient::complete(const std::string& peer) {
    if (peer == m_user) {
        return;
    }
    // Only end-to-end texts: queued ones, and older unsealed ones of a peer we have sessions with (a text of a
    // server-assigned conversation is sealed by it when it goes).
    const auto* known = find_peer(peer);
    const bool legacy_ok = known != nullptr && known->has_sessions();
    bool any = false;
    m_outbox.rewrite(peer, [&](const MessageId&, Bytes& payload) {
        any = any || read_queued_text(payload) || (legacy_ok && read_unsealed_text(payload));
        return false;
    });
    if (!any) {
        return;
    }
    auto& p = peer_state(peer);
    if (p.pending_identity) {
        return;
    }
    auto& me = peer_state(m_user);
    const auto theirs = targets(p);
    const auto mine = targets(me);
    if (!theirs || !mine) {
        error_event(peer, (theirs ? mine.error() : theirs.error()));
        return;
    }
    const auto missing = [&](PeerState& whose, const std::vector<DeviceId>& devices) {
        return std::any_of(devices.begin(), devices.end(), [&](DeviceId d) {
            const auto it = whose.devices.find(d);
            return it == whose.devices.end() || it->second.sessions.empty();
        });
    };
    // Bodies for every device in force; one whose session is missing holds the text and those behind it (the order
    // of the stream is kept), and its keys are asked for.
    const bool lacks_theirs = missing(p, *theirs);
    const bool lacks_mine = missing(me, *mine);
    bool held = false;
    const auto fill = [&](PeerState& whose, const std::vector<DeviceId>& devices, std::vector<DeviceBody>& bodies,
                          const QueuedText& q) -> bool {
        bool changed = std::erase_if(bodies, [&](const DeviceBody& b) {
                           return std::find(devices.begin(), devices.end(), b.device) == devices.end();
                       }) != 0;
        for (const auto d : devices) {
            const auto at = std::find_if(bodies.begin(), bodies.end(), [&](const DeviceBody& b) { return b.device >= d; });
            if (at != bodies.end() && at->device == d) {
                continue;
            }
            auto body = seal_body(whose, d, E2eContent{ContentKind::text, q.seq, q.id, q.text, q.sent_at, {}}, peer);
            if (!body) {
                error_event(peer, body.error());
                held = true;
                return changed;
            }
            bodies.insert(at, DeviceBody{d, std::move(*body)});
            changed = true;
        }
        return changed;
    };
    m_outbox.rewrite(peer, [&](const MessageId& id, Bytes& payload) {
        if (held) {
            return false;
        }
        auto q = read_queued_text(payload);
        if (!q) {
            const auto unsealed = read_unsealed_text(payload);
            if (!unsealed || !legacy_ok) {
                return false;  // sealed once before devices, or a server-assigned text: sent as it is
            }
            q = QueuedText{id, ++p.send_seq, unsealed->sent_at,
                           std::string(unsealed->text.begin(), unsealed->text.end()), {}, {}};
            mark_dirty(p);
        }
        if (lacks_theirs || lacks_mine) {
            held = true;
            if (read_queued_text(payload)) {
                return false;
            }
            secure_zero(payload.data(), payload.size());
            payload = encode_queued_text(*q);
            return true;
        }
        bool changed = fill(p, *theirs, q->bodies, *q);
        changed = fill(me, *mine, q->own_bodies, *q) || changed;
        if (!changed && read_queued_text(payload)) {
            return false;
        }
        secure_zero(payload.data(), payload.size());
        payload = encode_queued_text(*q);
        return true;  // the bodies go into the same commit as the ratchet states that sealed them
    });
    if (lacks_theirs) {
        want_keys(peer);
    }
    if (lacks_mine) {
        want_keys(m_user);
    }
    if (!held) {
        m_outbox.release(peer);
    }
}

std::optional<Submission> E2eClient::submission(const std::string& peer, ByteView payload) {
    const auto q = read_queued_text(payload);
    if (!q || !ready()) {
        return std::nullopt;
    }
    const auto theirs = targets(peer_state(peer));
    const auto mine = targets(peer_state(m_user));
    if (!theirs || !mine) {
        return std::nullopt;
    }
    const auto covers = [](const std::vector<DeviceBody>& bodies, const std::vector<DeviceId>& devices) {
        return bodies.size() == devices.size() &&
               std::equal(bodies.begin(), bodies.end(), devices.begin(),
                          [](const DeviceBody& b, DeviceId d) { return b.device == d; });
    };
    if (!covers(q->bodies, *theirs) || !covers(q->own_bodies, *mine)) {
        // Held; sealed for the devices in force at the next tick (not here: what is sealed must be committed
        // before it is sent), which releases the stream.
        m_to_complete.insert(peer);
        return std::nullopt;
    }
    return Submission{q->id, ConversationMode::end_to_end, pair_conversation_id(m_user, peer), m_device, q->bodies,
                      q->own_bodies};
}

void E2eClient::replay_held(PeerState& p) {
    if (p.pending_identity || p.held.empty()) {
        return;
    }
    auto held = std::move(p.held);
    p.held.clear();
    for (const auto& [d, conversation_peer] : held) {
        if (p.name == m_user) {
            on_message(conversation_peer, d, true);
        } else {
            on_message(p.name, d);
        }
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

void E2eClient::ratchet_event(const std::string& peer, std::uint64_t steps, KeyDirection direction) {
    event(KeyRotatedEvent{peer, ConversationMode::end_to_end, static_cast<std::uint32_t>(steps), direction});
}

bool E2eClient::has_session(std::string_view peer) const {
    const auto* p = find_peer(peer);
    return p != nullptr && (p->has_sessions() || p->pending_identity);
}

std::vector<std::string> E2eClient::peers_with_sessions() const {
    std::vector<std::string> out;
    for (const auto& [name, p] : m_peers) {
        if (name != m_user && p->has_sessions()) {
            out.push_back(name);
        }
    }
    return out;
}

std::optional<SuiteId> E2eClient::session_suite(std::string_view peer) const {
    const auto* p = find_peer(peer);
    if (p == nullptr) {
        return std::nullopt;
    }
    for (const auto& [device, d] : p->devices) {
        if (!d.sessions.empty()) {
            return d.sessions.front().suite();
        }
    }
    return std::nullopt;
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

void E2eClient::on_message(const std::string& peer, const Delivered& d, bool own_copy) {
    const auto& envelope = d.envelope;
    if (!ready()) {
        return;
    }
    // An own copy is opened with the session of our device that sent it, and acknowledged to ourselves (6.5).
    auto& p = peer_state(own_copy ? m_user : peer);
    const auto hold = [&] {
        if (p.held.size() < max_held) {
            p.held.emplace_back(d, peer);  // not acknowledged: the server keeps it meanwhile
        }
    };
    if (p.seen.contains(envelope.id)) {
        ack(p.name, envelope.id);  // a retry or a replay: acknowledged again, not shown again
        return;
    }
    if (p.pending_identity) {
        // Nothing is shown from a peer whose identity is in question until the user decides.
        hold();
        return;
    }
    auto info = e2e::inspect(envelope.body);
    if (!info) {
        error_event(peer, Error{info.code(), "malformed end-to-end message dropped"});
        ack(p.name, envelope.id);
        return;
    }
    const auto device = d.sender_device;
    const auto of_session = [&](const e2e::Session& s) { return constant_time_equal(s.session_id(), info->session_id); };
    const auto dit = p.devices.find(device);
    if (dit == p.devices.end() || std::none_of(dit->second.sessions.begin(), dit->second.sessions.end(), of_session)) {
        const bool elsewhere = std::any_of(p.devices.begin(), p.devices.end(), [&](const auto& kv) {
            return std::any_of(kv.second.sessions.begin(), kv.second.sessions.end(), of_session);
        });
        if (elsewhere) {
            // A session of another device of the sender: the server changed the sending device (6.5).
            error_event(peer, Error{Errc::auth_failed, "message re-addressed (its session is another sending "
                                                       "device's): dropped"});
            ack(p.name, envelope.id);
            return;
        }
        open_initial(p, device, d, *info, peer);
        return;
    }
    auto& sessions = dit->second.sessions;
    const auto it = std::find_if(sessions.begin(), sessions.end(), of_session);
    if (it != sessions.begin()) {
        std::rotate(sessions.begin(), it, it + 1);  // the session that last received is the one we send on
    }
    open_with_session(p, device, d, peer);
}

void E2eClient::open_with_session(PeerState& p, DeviceId device, const Delivered& d,
                                  const std::string& conversation_peer) {
    const auto& envelope = d.envelope;
    auto& s = p.devices[device].sessions.front();
    const auto before = s.dh_steps();
    auto plain = s.open(envelope.body);
    if (!plain) {
        // Forged, replayed (its key is gone) or corrupted: never shown. Acknowledged so the server drops it.
        error_event(conversation_peer, Error{plain.code(), "end-to-end message did not open: dropped"});
        ack(p.name, envelope.id);
        return;
    }
    mark_dirty(p);
    deliver_content(p, device, d, before, s.dh_steps(), std::move(*plain), conversation_peer);
}

void E2eClient::open_initial(PeerState& p, DeviceId device, const Delivered& d, const e2e::MessageInfo& info,
                             const std::string& conversation_peer) {
    const auto& envelope = d.envelope;
    const auto drop = [&](Errc code, const std::string& why) {
        error_event(conversation_peer, Error{code, why});
        ack(p.name, envelope.id);
    };
    if (!info.initial) {
        drop(Errc::auth_failed, "message of an unknown session dropped");
        return;
    }
    const auto& init = *info.initial;
    const auto expected = expected_key(p, device);
    if (!expected) {
        error_event(conversation_peer, expected.error());
        return;
    }
    const bool legacy = device == first_device && p.name != m_user && !p.list;  // device 1 of a peer, no list
    if (expected->empty() && !(legacy && p.identity.empty())) {
        // A device we cannot check yet (no list names it): held, not acknowledged, until its list comes with the
        // peer's keys (asked for now). A device the list does not name stays held until the server drops it.
        if (p.held.size() < max_held) {
            p.held.emplace_back(d, conversation_peer);
        }
        want_keys(p.name);
        return;
    }
    if (!expected->empty() && !constant_time_equal(*expected, init.identity_key)) {
        if (!legacy) {
            drop(Errc::auth_failed, "a device's message under a key its signed list does not give it: dropped");
            return;
        }
        if (p.held.size() < max_held) {
            p.held.emplace_back(d, conversation_peer);  // not acknowledged: kept until the user decides
        }
        note_identity_change(p, init.identity_key);
        return;
    }
    if (!m_config.end_to_end_suites.allows(init.suite)) {
        drop(Errc::suite_not_allowed, "end-to-end suite refused by our policy");
        return;
    }
    auto& pk = *m_prekeys;
    if (init.signed_prekey_id != pk.signed_prekey.id) {
        drop(Errc::invalid_key, "unknown signed prekey");
        return;
    }
    const e2e::OneTimePrekey* opk = nullptr;
    auto opk_it = pk.one_time.end();
    if (init.one_time_prekey_id != e2e::no_one_time_prekey) {
        opk_it = std::find_if(pk.one_time.begin(), pk.one_time.end(),
                              [&](const e2e::OneTimePrekey& k) { return k.id == init.one_time_prekey_id; });
        if (opk_it == pk.one_time.end()) {
            drop(Errc::invalid_key, "one-time prekey unknown or already used");
            return;
        }
        opk = &*opk_it;
    }
    auto s = e2e::Session::respond(*m_identity, m_user, pk.signed_prekey, opk, init, p.name, m_rng);
    if (!s) {
        drop(s.code(), "end-to-end session refused");
        return;
    }
    auto plain = s->open(envelope.body);
    if (!plain) {
        drop(plain.code(), "end-to-end message did not open: dropped");
        return;
    }
    if (opk != nullptr) {
        pk.one_time.erase(opk_it);  // used once, then gone
        m_prekeys_dirty = true;
    }
    const auto steps = s->dh_steps();
    const bool first = p.identity.empty();
    if (first) {
        p.identity = init.identity_key;  // first contact with a peer's device 1 (trust on first use, 6.4)
    }
    p.devices[device].key = init.identity_key;
    const SuiteId suite = s->suite();
    p.add_session(device, std::move(*s));
    mark_dirty(p);
    if (p.name != m_user) {
        keyed_event(p, suite, first);
    }
    deliver_content(p, device, d, 0, steps, std::move(*plain), conversation_peer);  // its DH step counts too
    if (p.name == m_user) {
        complete_all();
    } else {
        complete(p.name);
    }
}

void E2eClient::deliver_content(PeerState& p, DeviceId device, const Delivered& d, std::uint64_t steps_before,
                                std::uint64_t steps_after, SecureBytes plaintext,
                                const std::string& conversation_peer) {
    const auto& envelope = d.envelope;
    const bool own_copy = p.name == m_user;
    auto content = decode_e2e_content(plaintext);
    secure_zero(plaintext.data(), plaintext.size());
    p.remember(envelope.id);
    ack(p.name, envelope.id);
    if (!content || content->id != envelope.id) {
        error_event(conversation_peer, Error{Errc::auth_failed, "message id does not match its sealed id: dropped"});
        return;
    }
    // The address sealed inside against the one the server delivered it with: a server that moved the message to
    // another conversation or device, or claims another sending device, is caught here (6.3). Contents sealed
    // before addresses existed (kinds 1-3) have none to compare.
    if (content->address && *content->address != ContentAddress{d.conversation, d.sender_device, m_device}) {
        error_event(conversation_peer, Error{Errc::auth_failed,
                                             "message re-addressed (its sealed conversation or devices differ from "
                                             "its delivery): dropped"});
        return;
    }
    auto& ds = p.devices[device];
    if (steps_after != steps_before) {
        ratchet_event(conversation_peer, steps_after, KeyDirection::receiving);
    }
    if (content->kind == ContentKind::ratchet_only) {
        return;
    }
    ds.reply_due = ds.reply_due || steps_after != steps_before;
    const std::uint64_t seq = content->seq;
    if (!own_copy) {
        // Sequence numbers count one sender device's texts to us (an own copy carries the number of its
        // conversation, which our other conversations share with it: only its id is checked).
        if (ds.recv_high == 0 && ds.missing.empty() && m_device != first_device && seq > 0) {
            // A linked device joins conversations in progress: it counts from the first text it gets from each
            // sender device (the ones before it were never sealed for it); later jumps are gaps.
            ds.recv_high = seq - 1;
        }
        if (seq <= ds.recv_high && !ds.missing.contains(seq)) {
            return;  // this sequence number was shown already: a replay under a new id
        }
        if (seq > ds.recv_high + 1) {
            const std::uint64_t gap = seq - ds.recv_high - 1;
            for (std::uint64_t n = ds.recv_high + 1; n < seq && ds.missing.size() < max_missing; ++n) {
                ds.missing.insert(n);
            }
            event(GapEvent{p.name, gap});
        }
        ds.missing.erase(seq);
        ds.recv_high = std::max(ds.recv_high, seq);
    }
    MessageEvent e;
    e.peer = conversation_peer;
    e.text = std::move(content->text);
    e.message_id = envelope.id;
    e.seq = seq;
    e.mode = ConversationMode::end_to_end;
    e.sent_at = content->sent_at;
    e.received_at = d.received_at;
    e.conversation = d.conversation;
    e.sender_device = d.sender_device;
    e.from_me = own_copy;
    InboxEntry entry{0, conversation_peer, envelope.id, seq, e.text, ConversationMode::end_to_end, false,
                     e.sent_at, e.received_at, e.conversation, e.sender_device};
    entry.from_me = own_copy;
    e.inbox_index = keep_received(entry);
    event(std::move(e));
}

// ---------------------------------------------------------------- sending

Result<Bytes> E2eClient::seal_body(PeerState& p, DeviceId device, E2eContent content,
                                   const std::string& conversation_peer) {
    auto& ds = p.devices[device];
    if (ds.sessions.empty()) {
        return Error{Errc::no_conversation, "no session with device " + std::to_string(device) + " of " + p.name};
    }
    content.address = ContentAddress{pair_conversation_id(m_user, conversation_peer), m_device, device};
    auto& session = ds.sessions.front();
    const auto steps_before = session.dh_steps();
    auto plain = encode_e2e_content(content);
    auto body = session.seal(plain);
    secure_zero(plain.data(), plain.size());
    SIM_TRY(auto sealed, std::move(body));
    ds.reply_due = false;
    mark_dirty(p);
    if (p.name != m_user && session.dh_steps() != steps_before && content.kind == ContentKind::text) {
        ratchet_event(p.name, session.dh_steps(), KeyDirection::sending);
    }
    return sealed;
}

Result<MessageId> E2eClient::send_text(const std::string& peer, std::string_view text, WallTime sent_at,
                                       std::size_t max_inner) {
    if (!ready()) {
        return Error{Errc::not_authenticated, "log in first"};
    }
    if (peer == m_user) {
        return Error{Errc::bad_destination, "cannot talk to yourself"};
    }
    auto& p = peer_state(peer);
    if (p.pending_identity) {
        return Error{Errc::identity_changed, "the peer's identity key changed: accept it before sending"};
    }
    SIM_TRY(const auto theirs, targets(p));
    SIM_TRY(const auto mine, targets(peer_state(m_user)));
    // Per body: device and length (8) + ratchet message header (at most 1 + 8 + 73 + 40) + content header with
    // its address and timestamp (57) + suite overhead (48); and the message, the frame and the names around them.
    const std::size_t bodies = theirs.size() + mine.size();
    const std::size_t overhead = single_device_message_overhead + 1 + min_frame_size + m_user.size() + peer.size() +
                                 bodies * (8 + 122 + 57 + 48);
    if (text.size() * bodies + overhead > max_inner) {
        return Error{Errc::frame_too_large, bodies > 1 ? "message too long for every device it goes to"
                                                       : "message too long"};
    }
    if (!p.has_sessions()) {
        // No session yet (the peer has not published keys, or it was never opened): the text waits in the outbox
        // unsealed, for the conversation the server keys (end to end: complete() takes it over when the session
        // exists; the client core asks for the peer's keys).
        const auto id = random_id(m_rng);
        SIM_TRY_STATUS(enqueue(id, peer, make_unsealed_text(id, sent_at, text)));
        return id;
    }
    // Numbered now, sealed now if every device has a session (complete()), else when the keys come; its place in
    // the outbox keeps its order either way.
    const QueuedText q{random_id(m_rng), ++p.send_seq, sent_at, std::string(text), {}, {}};
    mark_dirty(p);
    m_outbox.add(q.id, peer, encode_queued_text(q));
    complete(peer);
    if (auto st = commit(); !st) {
        m_outbox.forget(q.id);  // not durable here: not sent either (the caller hears of the failure)
        return st.error();
    }
    return q.id;
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
    for (const auto& peer : std::exchange(m_to_complete, {})) {
        complete(peer);
    }
    for (auto& [name, p] : m_peers) {
        if (name == m_user || p->pending_identity) {
            continue;
        }
        const bool due = std::any_of(p->devices.begin(), p->devices.end(), [](const auto& kv) {
            return kv.second.reply_due && !kv.second.sessions.empty() && kv.second.sessions.front().reply_pending();
        });
        if (!due) {
            continue;
        }
        // Our ratchet key changed when the peer's last message arrived: send it back so the peer can step too. A
        // message goes to every device (the server refuses one that does not cover them), so it needs them all.
        auto& me = peer_state(m_user);
        const auto theirs = targets(*p);
        const auto mine = targets(me);
        if (!theirs || !mine) {
            continue;
        }
        const E2eContent content{ContentKind::ratchet_only, 0, random_id(m_rng), {}, {}, {}};
        Submission s{content.id, ConversationMode::end_to_end, pair_conversation_id(m_user, name), m_device, {}, {}};
        bool sealed = true;
        for (const auto d : *theirs) {
            auto body = seal_body(*p, d, content, name);
            sealed = sealed && body.has_value();
            if (body) {
                s.bodies.push_back({d, std::move(*body)});
            }
        }
        for (const auto d : *mine) {
            auto body = seal_body(me, d, content, name);
            sealed = sealed && body.has_value();
            if (body) {
                s.own_bodies.push_back({d, std::move(*body)});
            }
        }
        for (auto& [device, ds] : p->devices) {
            ds.reply_due = false;
        }
        if (sealed) {
            queue_frame(Frame{FrameType::message, 0, m_user, name, encode_submission(s)}, true);
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
    // must ours to it; otherwise its first messages look like replays and ours like a gap. Its old list is not
    // the new identity's.
    p.send_seq = 0;
    p.list.reset();
    p.list_loaded = true;
    m_writes.push_back(m_lists.forget(p.name));
    mark_dirty(p);
    if (p.pending_keys) {
        auto pending = std::move(*p.pending_keys);
        p.pending_keys.reset();
        apply_keys(p, pending);
    }
    replay_held(p);
    return ok();
}

}  // namespace sim::client_detail
