// The routing bus over NATS (routing.h, docs/architecture.md "Routing over NATS").
//
// Connections attached on this node are kept by an in-process bus, so everything local behaves as on one node.
// What the other nodes hold is learnt from announcements on one subject, `sim.presence`:
//   attach / detach = kind u8 | instance u64 | stamp u64 | user len u8 | user | device u32
//   heartbeat       = 3 | instance u64 | stamp u64 | node len u8 | node
//   sync            = 4 | instance u64 | stamp u64            (every node announces its attachments again)
// `instance` is random per start of a node, `stamp` the announcer's wall clock (ms). A device attached on two nodes
// stays with the newer attachment (stamp, then instance): the older node closes its connection ("displaced").
// A node not heard from for three heartbeats is gone, and so are its devices. The same three heartbeats are this
// node's lease on its own connections: a node that finds it has not sent a heartbeat for that long (SIGSTOP, a
// stalled machine) may have lost any of its devices to another node meanwhile, and cannot tell which before the
// others have answered it, so it serves nothing more on any connection (no frame, no drain, no wake-up handled),
// closes them all, forgets what it knew of the others and asks them to announce again. Frames for a device attached on
// another node are published to that device's subject, `sim.d.<32 hex digits of SHA-256 of its mailbox id>`, which
// only its node subscribes to: payload = 1 | user len u8 | user | device u32 | frame (sim/frame.h). Publishing
// never blocks the caller (who may hold locks) on the network; a frame for a device that has just left is dropped,
// as on one node; what is stored stays stored.
// A wake-up (after a commit on this node for a device not attached here) is a request on the same subject:
// payload = 2 | user len u8 | user | device u32, reply subject `<this node's inbox>.<n>`. The holding node hands the
// mailbox to the delivery core (which drains it from SQL) and answers with an empty message; when nobody holds the
// device the NATS server answers "no responders" at once. Answers are counted (round trip, no responders), and a
// request without any answer after `wake_timeout` counts as timed out. Nothing waits for them.
#include "routing.h"

#include "histogram.h"

#include "../proto/wire.h"

#include <sim/crypto.h>
#include <sim/rng.h>

#if SIM_HAVE_NATS
#include <nats/nats.h>
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace sim::server_detail {
#if SIM_HAVE_NATS
namespace {

constexpr const char* presence_subject = "sim.presence";

enum class Kind : std::uint8_t { attach = 1, detach = 2, heartbeat = 3, sync = 4 };
/// What a message on a device's subject carries.
enum class DeviceKind : std::uint8_t { frame = 1, wake = 2 };

std::string device_subject(const MailboxId& m) {
    Bytes in;
    detail::WireWriter w(in);
    w.text("libsim mailbox");
    w.u8(0);
    w.text(m.user);
    w.u8(0);
    w.u32(m.device);
    const Bytes digest = crypto::sha256(in);
    static constexpr char hex[] = "0123456789abcdef";
    std::string out = "sim.d.";
    for (std::size_t i = 0; i < 16; ++i) {
        out.push_back(hex[digest[i] >> 4U]);
        out.push_back(hex[digest[i] & 15U]);
    }
    return out;
}

std::uint64_t wall_ms() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
}

void write_mailbox(detail::WireWriter<Bytes>& w, const MailboxId& m) {
    w.u8(static_cast<std::uint8_t>(m.user.size()));
    w.text(m.user);
    w.u32(m.device);
}

bool read_mailbox(detail::WireReader& r, MailboxId& m) {
    std::uint8_t len = 0;
    ByteView user;
    if (!r.u8(len) || len == 0 || !r.take(len, user) || !r.u32(m.device)) {
        return false;
    }
    m.user.assign(user.begin(), user.end());
    return true;
}

std::string nats_error(natsStatus s) {
    return std::string(natsStatus_GetText(s));
}

class NatsBus final : public RoutingBus {
public:
    explicit NatsBus(NatsBusOptions options) : m_options(std::move(options)), m_local(make_local_bus()) {
        auto rng = make_system_rng();
        Bytes id(8);
        rng->fill(id);
        detail::WireReader r(id);
        (void)r.u64(m_instance);
    }

    ~NatsBus() override {
        {
            const std::lock_guard lock(m_timer_mutex);
            m_stopping = true;
        }
        m_timer_cv.notify_all();
        if (m_heartbeat.joinable()) {
            m_heartbeat.join();
        }
        if (m_conn != nullptr) {
            // Drain: the subscriptions stop, what they hold is handled, then the connection closes; after the
            // closed callback no handler of ours runs any more.
            if (natsConnection_DrainTimeout(m_conn, 2000) == NATS_OK) {
                std::unique_lock lock(m_timer_mutex);
                m_timer_cv.wait_for(lock, std::chrono::seconds(3), [this] { return m_closed; });
            } else {
                natsConnection_Close(m_conn);
            }
            for (auto& [mailbox, sub] : m_subs) {
                natsSubscription_Destroy(sub);
            }
            natsSubscription_Destroy(m_presence);
            natsSubscription_Destroy(m_replies);
            natsConnection_Destroy(m_conn);
        }
        natsOptions_Destroy(m_opts);
    }

    Status start() {
        if (m_options.servers.empty() || m_options.node_id.empty() || m_options.node_id.size() > 255) {
            return Error{Errc::invalid_argument, "a NATS bus needs servers and a node id (1 to 255 bytes)"};
        }
        const auto check = [](natsStatus s, const char* what) -> Status {
            if (s != NATS_OK) {
                return Error{Errc::io_error, std::string("NATS: ") + what + ": " + nats_error(s)};
            }
            return {};
        };
        SIM_TRY_STATUS(check(natsOptions_Create(&m_opts), "options"));
        SIM_TRY_STATUS(check(natsOptions_SetURL(m_opts, m_options.servers.c_str()), "server list"));
        SIM_TRY_STATUS(check(natsOptions_SetName(m_opts, ("simd " + m_options.node_id).c_str()), "name"));
        SIM_TRY_STATUS(check(natsOptions_SetNoEcho(m_opts, true), "no echo"));
        // One pool delivers every subscription's messages: no thread per attached device.
        SIM_TRY_STATUS(check(natsOptions_UseGlobalMessageDelivery(m_opts, true), "global delivery"));
        SIM_TRY_STATUS(check(natsOptions_SetTimeout(m_opts, m_options.connect_timeout.count()), "timeout"));
        SIM_TRY_STATUS(check(natsOptions_SetMaxReconnect(m_opts, -1), "reconnect"));
        SIM_TRY_STATUS(check(natsOptions_SetReconnectWait(m_opts, 200), "reconnect wait"));
        SIM_TRY_STATUS(check(natsOptions_SetPingInterval(m_opts, m_options.ping_interval.count()), "ping interval"));
        SIM_TRY_STATUS(check(natsOptions_SetMaxPingsOut(m_opts, m_options.max_pings_out), "max pings out"));
        SIM_TRY_STATUS(check(natsOptions_SetReconnectedCB(m_opts, &NatsBus::on_reconnected, this), "callback"));
        SIM_TRY_STATUS(check(natsOptions_SetDisconnectedCB(m_opts, &NatsBus::on_disconnected, this), "callback"));
        SIM_TRY_STATUS(check(natsOptions_SetClosedCB(m_opts, &NatsBus::on_closed, this), "callback"));
        SIM_TRY_STATUS(check(natsConnection_Connect(&m_conn, m_opts), "connect"));
        SIM_TRY_STATUS(check(natsConnection_Subscribe(&m_presence, m_conn, presence_subject, &NatsBus::on_presence,
                                                      this),
                             "subscribe"));
        m_inbox = "_INBOX.simd." + std::to_string(m_instance);
        SIM_TRY_STATUS(check(natsConnection_Subscribe(&m_replies, m_conn, (m_inbox + ".*").c_str(),
                                                      &NatsBus::on_reply, this),
                             "subscribe"));
        SIM_TRY_STATUS(check(natsConnection_FlushTimeout(m_conn, m_options.connect_timeout.count()), "flush"));
        announce_node(Kind::sync);
        announce_node(Kind::heartbeat);
        m_beat.store(steady_ns());
        m_heartbeat = std::thread([this] { heartbeats(); });
        return {};
    }

    std::shared_ptr<Peer> attach(const MailboxId& mailbox, const std::shared_ptr<Peer>& peer) override {
        auto displaced = m_local->attach(mailbox, peer);
        const std::uint64_t stamp = wall_ms();
        {
            const std::lock_guard lock(m_mutex);
            m_local_stamp[mailbox] = stamp;
            m_remote.erase(mailbox);
            subscribe_locked(mailbox);
            m_second_look[mailbox] = std::chrono::steady_clock::now() + m_options.second_look;
        }
        announce(Kind::attach, mailbox, stamp);  // a node that held it closes its connection
        return displaced;
    }

    bool detach(const MailboxId& mailbox, const Peer* peer) override {
        if (!m_local->detach(mailbox, peer)) {
            return false;
        }
        forget_local(mailbox);
        return true;
    }

    bool deliver(const MailboxId& mailbox, const Frame& frame) override {
        if (lease_lost()) {
            return false;  // what is stored stays stored; the connection is closed in a moment
        }
        if (m_local->deliver(mailbox, frame)) {
            return true;
        }
        {
            const std::lock_guard lock(m_mutex);
            if (m_remote.count(mailbox) == 0) {
                return false;
            }
        }
        auto encoded = encode_frame(frame);
        if (!encoded) {
            log(LogLevel::error, "frame for another node not encoded: " + encoded.error().message());
            return false;
        }
        Bytes payload;
        detail::WireWriter w(payload);
        w.u8(static_cast<std::uint8_t>(DeviceKind::frame));
        write_mailbox(w, mailbox);
        w.bytes(*encoded);
        const auto s = natsConnection_Publish(m_conn, device_subject(mailbox).c_str(), payload.data(),
                                              static_cast<int>(payload.size()));
        return s == NATS_OK;
    }

    bool attached(const MailboxId& mailbox) override {
        if (m_local->attached(mailbox)) {
            return true;
        }
        const std::lock_guard lock(m_mutex);
        return m_remote.count(mailbox) != 0;
    }

    std::vector<DeviceId> attached_devices(const std::string& user) override {
        auto out = m_local->attached_devices(user);
        {
            const std::lock_guard lock(m_mutex);
            for (auto it = m_remote.lower_bound(MailboxId{user, 0}); it != m_remote.end() && it->first.user == user;
                 ++it) {
                out.push_back(it->first.device);
            }
        }
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
        return out;
    }

    std::shared_ptr<Peer> local(const MailboxId& mailbox) override {
        if (lease_lost()) {
            return nullptr;  // no drain into a connection that another node may serve by now
        }
        return m_local->local(mailbox);
    }

    void sync_attachments() override {
        // A PING and its PONG: the NATS server has the subscriptions sent before it.
        if (const auto s = natsConnection_FlushTimeout(m_conn, 500); s != NATS_OK) {
            log(LogLevel::warning, "NATS: attachments not confirmed: " + nats_error(s));
        }
    }

    void on_woken(Woken handler) override {
        const std::lock_guard lock(m_mutex);
        m_woken = std::move(handler);
    }

    void wake(const MailboxId& mailbox) override {
        if (!lease_lost() && m_local->attached(mailbox)) {
            return;  // held here: the commit's completion drains it (not while the lease is lost: another node may)
        }
        Bytes payload;
        detail::WireWriter w(payload);
        w.u8(static_cast<std::uint8_t>(DeviceKind::wake));
        write_mailbox(w, mailbox);
        std::uint64_t id = 0;
        {
            const std::lock_guard lock(m_mutex);
            id = ++m_next_wake;
            m_pending_wakes.emplace(id, std::chrono::steady_clock::now());
        }
        m_wakes.fetch_add(1);
        const auto s = natsConnection_PublishRequest(m_conn, device_subject(mailbox).c_str(),
                                                     (m_inbox + "." + std::to_string(id)).c_str(), payload.data(),
                                                     static_cast<int>(payload.size()));
        if (s != NATS_OK) {
            // Not sent (NATS down and its reconnect buffer full): the device drains the store when it reconnects.
            {
                const std::lock_guard lock(m_mutex);
                m_pending_wakes.erase(id);
            }
            m_timeouts.fetch_add(1);
            log(LogLevel::warning, "NATS: wake-up not sent: " + nats_error(s));
        }
    }

    BusStats stats() override {
        BusStats out;
        out.wakes = m_wakes.load();
        out.wakes_answered = m_answered.load();
        out.no_responders = m_no_responders.load();
        out.timeouts = m_timeouts.load();
        out.woken = m_woken_count.load();
        out.round_trip = m_round_trip.snapshot();
        return out;
    }

    std::vector<MailboxId> attached_here() override { return m_local->attached_here(); }

    std::vector<std::shared_ptr<Peer>> detach_all() override {
        const auto here = m_local->attached_here();
        auto all = m_local->detach_all();
        for (const auto& mailbox : here) {
            forget_local(mailbox);
        }
        return all;
    }

private:
    struct Holder {
        std::uint64_t instance = 0;
        std::uint64_t stamp = 0;
    };

    void log(LogLevel level, const std::string& text) const {
        if (m_options.log) {
            m_options.log(level, text);
        }
    }

    void subscribe_locked(const MailboxId& mailbox) {
        if (m_subs.count(mailbox) != 0) {
            return;
        }
        natsSubscription* sub = nullptr;
        const auto s = natsConnection_Subscribe(&sub, m_conn, device_subject(mailbox).c_str(), &NatsBus::on_frame,
                                                this);
        if (s != NATS_OK) {
            log(LogLevel::error, "NATS: no subscription for an attached device: " + nats_error(s));
            return;
        }
        m_subs.emplace(mailbox, sub);
    }

    /// The mailbox is no longer attached here: stop listening for it and tell the others.
    void forget_local(const MailboxId& mailbox) {
        natsSubscription* sub = nullptr;
        {
            const std::lock_guard lock(m_mutex);
            m_local_stamp.erase(mailbox);
            if (const auto it = m_subs.find(mailbox); it != m_subs.end()) {
                sub = it->second;
                m_subs.erase(it);
            }
        }
        if (sub != nullptr) {
            natsSubscription_Unsubscribe(sub);
            natsSubscription_Destroy(sub);
        }
        announce(Kind::detach, mailbox, wall_ms());
    }

    void announce(Kind kind, const MailboxId& mailbox, std::uint64_t stamp) {
        Bytes payload;
        detail::WireWriter w(payload);
        w.u8(static_cast<std::uint8_t>(kind));
        w.u64(m_instance);
        w.u64(stamp);
        write_mailbox(w, mailbox);
        publish_presence(payload);
    }

    void announce_node(Kind kind) {
        Bytes payload;
        detail::WireWriter w(payload);
        w.u8(static_cast<std::uint8_t>(kind));
        w.u64(m_instance);
        w.u64(wall_ms());
        if (kind == Kind::heartbeat) {
            w.u8(static_cast<std::uint8_t>(m_options.node_id.size()));
            w.text(m_options.node_id);
        }
        publish_presence(payload);
    }

    void publish_presence(const Bytes& payload) {
        const auto s =
            natsConnection_Publish(m_conn, presence_subject, payload.data(), static_cast<int>(payload.size()));
        if (s != NATS_OK) {
            log(LogLevel::warning, "NATS: presence not announced: " + nats_error(s));
        }
    }

    /// Every attachment of this node, announced again (after a reconnect, or when a node asks).
    void announce_all() {
        std::vector<std::pair<MailboxId, std::uint64_t>> mine;
        {
            const std::lock_guard lock(m_mutex);
            mine.assign(m_local_stamp.begin(), m_local_stamp.end());
        }
        for (const auto& [mailbox, stamp] : mine) {
            announce(Kind::attach, mailbox, stamp);
        }
    }

    static std::int64_t steady_ns() {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

    /// Whether this node's lease on its connections ran out: no heartbeat sent for three intervals. Checked on every
    /// path that serves a connection; the heartbeat thread then closes them (give_up_connections).
    bool lease_lost() {
        if (m_fenced.load()) {
            return true;
        }
        const auto lease = std::chrono::duration_cast<std::chrono::nanoseconds>(3 * m_options.heartbeat).count();
        if (steady_ns() - m_beat.load() > lease) {
            m_fenced.store(true);
            return true;
        }
        return false;
    }

    /// After a lapse of the lease: every connection here is closed (its client connects again, to this node or
    /// another, and drains from SQL), and what this node knew of the others is relearnt from their announcements.
    void give_up_connections(std::chrono::milliseconds silent) {
        auto peers = detach_all();
        {
            const std::lock_guard lock(m_mutex);
            m_remote.clear();
            m_heard.clear();
        }
        log(LogLevel::warning, "NATS: this node sent no heartbeat for " + std::to_string(silent.count()) +
                                   " ms (stopped or starved); closing its " + std::to_string(peers.size()) +
                                   " connections, whose devices may be served elsewhere by now");
        announce_node(Kind::sync);
        for (const auto& peer : peers) {
            peer->kick(Errc::closed, "this server node was unresponsive; connect again");
        }
    }

    void heartbeats() {
        const auto tick = std::min(m_options.heartbeat, m_options.second_look / 2);
        auto next_beat = std::chrono::steady_clock::now() + m_options.heartbeat;
        std::unique_lock lock(m_timer_mutex);
        while (!m_timer_cv.wait_for(lock, tick, [this] { return m_stopping; })) {
            lock.unlock();
            look_again();
            if (std::chrono::steady_clock::now() >= next_beat) {
                beat();
                next_beat = std::chrono::steady_clock::now() + m_options.heartbeat;
            }
            lock.lock();
        }
    }

    /// Hands `mailboxes` (those still attached here) to the delivery core, which drains them from SQL.
    void drain(const std::vector<MailboxId>& mailboxes) {
        Woken woken;
        {
            const std::lock_guard lock(m_mutex);
            woken = m_woken;
        }
        for (const auto& mailbox : mailboxes) {
            if (woken && m_local->attached(mailbox)) {
                woken(mailbox);
            }
        }
    }

    /// Looks again at the mailboxes whose second look is due (see `second_look` in routing.h).
    void look_again() {
        const auto now = std::chrono::steady_clock::now();
        std::vector<MailboxId> due;
        {
            const std::lock_guard lock(m_mutex);
            for (auto it = m_second_look.begin(); it != m_second_look.end();) {
                if (it->second <= now) {
                    due.push_back(it->first);
                    it = m_second_look.erase(it);
                } else {
                    ++it;
                }
            }
        }
        drain(due);
    }

    void look_again_later(const std::vector<MailboxId>& mailboxes) {
        const auto when = std::chrono::steady_clock::now() + m_options.second_look;
        const std::lock_guard lock(m_mutex);
        for (const auto& mailbox : mailboxes) {
            m_second_look[mailbox] = when;
        }
    }

    void beat() {
        const auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::nanoseconds(steady_ns() - m_beat.load()));
        if (lease_lost()) {
            give_up_connections(silent);
            m_beat.store(steady_ns());
            m_fenced.store(false);
        } else if (silent > 2 * m_options.heartbeat) {
            // Late, though within the lease: the others may have counted this node gone and forgotten its
            // devices; announcing them again costs little.
            m_beat.store(steady_ns());
            announce_all();
        } else {
            m_beat.store(steady_ns());
        }
        announce_node(Kind::heartbeat);
        expire_silent_nodes();
        expire_wakes();
    }

    void expire_silent_nodes() {
        const auto now = std::chrono::steady_clock::now();
        const std::lock_guard lock(m_mutex);
        for (auto it = m_heard.begin(); it != m_heard.end();) {
            if (now - it->second > 3 * m_options.heartbeat) {
                log(LogLevel::warning, "NATS: a node went silent; its devices count as offline");
                std::erase_if(m_remote, [&](const auto& e) { return e.second.instance == it->first; });
                it = m_heard.erase(it);
            } else {
                ++it;
            }
        }
    }

    /// Wake-ups without an answer for longer than wake_timeout are counted as timed out and forgotten.
    void expire_wakes() {
        const auto oldest = std::chrono::steady_clock::now() - m_options.wake_timeout;
        std::uint64_t expired = 0;
        {
            const std::lock_guard lock(m_mutex);
            for (auto it = m_pending_wakes.begin(); it != m_pending_wakes.end() && it->second < oldest;) {
                it = m_pending_wakes.erase(it);  // ids grow with time: the oldest come first
                ++expired;
            }
        }
        m_timeouts.fetch_add(expired);
    }

    void on_reply_message(natsMsg* msg) {
        const std::string_view subject = natsMsg_GetSubject(msg);
        if (subject.size() <= m_inbox.size() + 1) {
            return;
        }
        std::uint64_t id = 0;
        for (const char c : subject.substr(m_inbox.size() + 1)) {
            if (c < '0' || c > '9') {
                return;
            }
            id = id * 10 + static_cast<std::uint64_t>(c - '0');
        }
        std::chrono::steady_clock::time_point sent;
        {
            const std::lock_guard lock(m_mutex);
            const auto it = m_pending_wakes.find(id);
            if (it == m_pending_wakes.end()) {
                return;  // counted as timed out already
            }
            sent = it->second;
            m_pending_wakes.erase(it);
        }
        if (natsMsg_IsNoResponders(msg)) {
            m_no_responders.fetch_add(1);
        } else {
            m_answered.fetch_add(1);
            m_round_trip.observe(std::chrono::steady_clock::now() - sent);
        }
    }

    void on_presence_message(ByteView data) {
        detail::WireReader r(data);
        std::uint8_t kind = 0;
        std::uint64_t instance = 0;
        std::uint64_t stamp = 0;
        if (!r.u8(kind) || !r.u64(instance) || !r.u64(stamp) || instance == m_instance) {
            return;
        }
        std::shared_ptr<Peer> displaced;
        natsSubscription* displaced_sub = nullptr;
        bool reannounce = false;
        {
            const std::lock_guard lock(m_mutex);
            m_heard[instance] = std::chrono::steady_clock::now();
            if (kind == static_cast<std::uint8_t>(Kind::sync)) {
                reannounce = true;
            } else if (kind == static_cast<std::uint8_t>(Kind::attach) ||
                       kind == static_cast<std::uint8_t>(Kind::detach)) {
                MailboxId mailbox;
                if (!read_mailbox(r, mailbox)) {
                    return;
                }
                if (kind == static_cast<std::uint8_t>(Kind::detach)) {
                    if (const auto it = m_remote.find(mailbox); it != m_remote.end() && it->second.instance == instance) {
                        m_remote.erase(it);
                    }
                } else if (const auto mine = m_local_stamp.find(mailbox); mine != m_local_stamp.end()) {
                    // Held here too: the newer attachment keeps it.
                    if (std::pair(stamp, instance) > std::pair(mine->second, m_instance)) {
                        displaced = m_local->local(mailbox);
                        m_local_stamp.erase(mine);
                        if (const auto sub = m_subs.find(mailbox); sub != m_subs.end()) {
                            displaced_sub = sub->second;
                            m_subs.erase(sub);
                        }
                        m_remote[mailbox] = Holder{instance, stamp};
                    } else {
                        reannounce = true;  // ours is newer: the other node hears it and lets go
                    }
                } else {
                    m_remote[mailbox] = Holder{instance, stamp};
                }
                if (displaced) {
                    (void)m_local->detach(mailbox, displaced.get());
                }
            }
        }
        if (displaced_sub != nullptr) {
            natsSubscription_Unsubscribe(displaced_sub);
            natsSubscription_Destroy(displaced_sub);
        }
        if (displaced) {
            displaced->kick(Errc::closed, "logged in on another server node");
        }
        if (reannounce) {
            announce_all();
        }
    }

    void on_device_message(natsMsg* msg) {
        detail::WireReader r(data_of(msg));
        std::uint8_t kind = 0;
        MailboxId mailbox;
        if (!r.u8(kind) || !read_mailbox(r, mailbox)) {
            return;
        }
        if (lease_lost()) {
            return;  // this node may no longer serve the device: the node that does answers, or the store keeps it
        }
        if (kind == static_cast<std::uint8_t>(DeviceKind::wake)) {
            // Answered whether or not the device is still here: the answer says only that the request arrived.
            if (const char* reply = natsMsg_GetReply(msg); reply != nullptr) {
                (void)natsConnection_Publish(m_conn, reply, nullptr, 0);
            }
            Woken woken;
            {
                const std::lock_guard lock(m_mutex);
                woken = m_woken;
            }
            if (woken && m_local->attached(mailbox)) {
                m_woken_count.fetch_add(1);
                woken(mailbox);  // hands the drain to a worker: this thread delivers every subscription
            }
            return;
        }
        if (kind != static_cast<std::uint8_t>(DeviceKind::frame)) {
            return;
        }
        auto frame = decode_frame(r.rest());
        if (!frame) {
            log(LogLevel::warning, "NATS: a frame from another node does not decode: " + frame.error().message());
            return;
        }
        (void)m_local->deliver(mailbox, *frame);  // gone meanwhile: dropped, as on one node
    }

    static ByteView data_of(natsMsg* msg) {
        return ByteView(reinterpret_cast<const std::uint8_t*>(natsMsg_GetData(msg)),
                        static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    }
    static void on_presence(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
        static_cast<NatsBus*>(self)->on_presence_message(data_of(msg));
        natsMsg_Destroy(msg);
    }
    static void on_frame(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
        static_cast<NatsBus*>(self)->on_device_message(msg);
        natsMsg_Destroy(msg);
    }
    static void on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
        static_cast<NatsBus*>(self)->on_reply_message(msg);
        natsMsg_Destroy(msg);
    }
    static void on_reconnected(natsConnection*, void* self) {
        auto* bus = static_cast<NatsBus*>(self);
        bus->log(LogLevel::info, "NATS: reconnected; announcing this node's devices again");
        bus->announce_node(Kind::sync);
        bus->announce_all();
        // Wake-ups for them while this node was away found nobody (or nobody answering); and those of the next
        // moments may still, until its subscriptions have spread over the NATS cluster: drain now and once more.
        const auto here = bus->m_local->attached_here();
        bus->drain(here);
        bus->look_again_later(here);
    }
    static void on_disconnected(natsConnection*, void* self) {
        static_cast<NatsBus*>(self)->log(LogLevel::warning, "NATS: disconnected; reconnecting");
    }
    static void on_closed(natsConnection*, void* self) {
        auto* bus = static_cast<NatsBus*>(self);
        {
            const std::lock_guard lock(bus->m_timer_mutex);
            bus->m_closed = true;
        }
        bus->m_timer_cv.notify_all();
    }

    NatsBusOptions m_options;
    std::unique_ptr<RoutingBus> m_local;
    std::uint64_t m_instance = 0;
    natsOptions* m_opts = nullptr;
    natsConnection* m_conn = nullptr;
    natsSubscription* m_presence = nullptr;
    natsSubscription* m_replies = nullptr;  // answers to this node's wake-ups
    std::string m_inbox;

    std::mutex m_mutex;  // a leaf, like the in-process bus's: no Peer and no NATS call that waits is made under it
    std::map<MailboxId, std::uint64_t> m_local_stamp;  // attached here, with the stamp announced
    std::map<MailboxId, natsSubscription*> m_subs;
    std::map<MailboxId, Holder> m_remote;  // attached on other nodes
    std::map<std::uint64_t, std::chrono::steady_clock::time_point> m_heard;
    Woken m_woken;
    std::uint64_t m_next_wake = 0;
    std::map<std::uint64_t, std::chrono::steady_clock::time_point> m_pending_wakes;  // by request id
    std::map<MailboxId, std::chrono::steady_clock::time_point> m_second_look;        // when it is due

    std::atomic<std::uint64_t> m_wakes{0};
    std::atomic<std::uint64_t> m_answered{0};
    std::atomic<std::uint64_t> m_no_responders{0};
    std::atomic<std::uint64_t> m_timeouts{0};
    std::atomic<std::uint64_t> m_woken_count{0};
    // a loopback round trip is ~0.1 ms; a wide-area one 100 ms: 10 us .. 10 s
    LatencyHistogram m_round_trip{
        LatencyHistogram::steps_1_2_5(std::chrono::microseconds(10), std::chrono::seconds(10))};

    std::mutex m_timer_mutex;
    std::condition_variable m_timer_cv;
    bool m_stopping = false;
    bool m_closed = false;
    std::thread m_heartbeat;
    std::atomic<std::int64_t> m_beat{0};  // steady clock (ns) of this node's last heartbeat
    std::atomic<bool> m_fenced{false};    // the lease ran out: nothing is served until the connections are closed
};

}  // namespace

Result<std::unique_ptr<RoutingBus>> make_nats_bus(const NatsBusOptions& options) {
    auto bus = std::make_unique<NatsBus>(options);
    SIM_TRY_STATUS(bus->start());
    return std::unique_ptr<RoutingBus>(std::move(bus));
}
#else
Result<std::unique_ptr<RoutingBus>> make_nats_bus(const NatsBusOptions& /*options*/) {
    return Error{Errc::not_implemented, "this libsim was built without NATS (libnats-dev)"};
}
#endif

}  // namespace sim::server_detail
