#pragma once
// Private: offline storage and in-order delivery of conversation messages (docs/protocol.md 6.6, 6.7).
// A message goes straight to an online recipient with nothing stored; otherwise it is appended through the group
// commit and the sender gets `receipt stored` once it is durable. A recipient who logs in gets its stored
// messages in store order, at most `window` unacknowledged at a time; an `ack` deletes them and tells the sender
// (`receipt delivered`). When a served recipient has nothing stored any more, the router hears of it (`drained`:
// server-assigned conversations kept only for that delivery end). Thread-safe; lock order: connection receive lock -> delivery lock -> router lock ->
// connection send lock. The router never calls in here.

#include "group_commit.h"
#include "router.h"

#include <sim/messages.h>
#include <sim/store.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace sim::server_detail {

class Delivery : public std::enable_shared_from_this<Delivery> {
public:
    struct Limits {
        std::size_t max_stored_per_recipient = 100'000;
        std::size_t window = 1000;
    };
    using WallClock = std::function<store::WallTime()>;
    using Log = std::function<void(LogLevel, std::string_view)>;

    Delivery(store::MessageStore& store, std::shared_ptr<GroupCommit> commit, Router& router, Limits limits,
             WallClock wall, Log log);

    /// A message frame (source = sender, destination = recipient, payload = the envelope with `id`): forwarded
    /// now, or stored (the receipt follows the commit). Errc::queue_full (recipient's limit), Errc::busy,
    /// Errc::storage_error.
    Status submit(const std::string& from, const std::string& to, const MessageId& id, const Frame& frame);
    /// `peer` is the user's new connection: deliver what is stored, from the start (unacknowledged messages of an
    /// earlier connection are sent again).
    void login(const std::string& user, const Peer* peer);
    /// The connection `peer` of `user` went away (ignored when a newer connection took over).
    void logout(const std::string& user, const Peer* peer);
    /// `recipient` has stored these messages from `sender`: delete them, tell the sender, send more.
    /// Errc::storage_error.
    Status ack(const std::string& recipient, const std::string& sender, const std::vector<MessageId>& ids);

    /// Messages known to be stored or being stored for `user` (tests, monitoring). Errc::storage_error.
    Result<std::size_t> backlog(const std::string& user);

private:
    struct Box {
        std::size_t backlog = 0;     // in the store or being committed
        const Peer* peer = nullptr;  // the connection being served, or null when offline
        std::uint64_t after_seq = 0;
        std::set<std::pair<std::string, MessageId>> in_flight;
        bool more = false;  // the store may hold messages after after_seq
    };

    Result<Box*> box_locked(const std::string& user);
    void committed(const std::string& from, const std::string& to, const MessageId& id, const Result<bool>& r);
    void pump_locked(const std::string& user, Box& box);
    void forget_if_idle_locked(const std::string& user);
    void send_receipt(const std::string& sender, const std::string& peer, ReceiptStatus status,
                      const std::vector<MessageId>& ids);

    store::MessageStore& m_store;
    std::shared_ptr<GroupCommit> m_commit;
    Router& m_router;
    Limits m_limits;
    WallClock m_wall;
    Log m_log;

    std::mutex m_mutex;
    std::map<std::string, Box> m_boxes;  // users with a backlog or online since their backlog was counted
};

}  // namespace sim::server_detail
