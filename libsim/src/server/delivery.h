#pragma once
// Private: offline storage and in-order delivery of conversation messages (docs/protocol.md 6.6, 6.7).
// A message goes straight to an online recipient with nothing stored; otherwise it is appended through the group
// commit and the sender gets `receipt stored` once it is durable. A recipient who logs in gets its stored
// messages in store order, at most `window` unacknowledged at a time; an `ack` deletes them and tells the sender
// (`receipt delivered`). When a served recipient has nothing stored any more, the router hears of it (`drained`:
// server-assigned conversations kept only for that delivery end). Thread-safe; lock order: connection receive lock ->
// delivery lock -> router lock -> connection send lock. The router never calls in here.

#include "group_commit.h"
#include "router.h"
#include "stream_order.h"

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

    /// Where a message comes from: the sender, its connection, and the message's number in its stream (the frame's
    /// sid; 0 = unsequenced). See stream_order.h.
    struct Origin {
        std::string from;
        std::uint64_t connection = 0;
        std::weak_ptr<Peer> sender;  ///< told of a refusal that happens after submit() returned (a failed commit)
        std::uint32_t seq = 0;
    };

    /// 0 when message `seq` of the stream (origin, `to`) may go ahead, else the number the stream expects first.
    [[nodiscard]] std::uint32_t expected(const Origin& origin, const std::string& to);
    /// The message was refused before submit() (rate, no conversation...): its stream expects it again. Returns the
    /// number the stream now expects.
    std::uint32_t refused(const Origin& origin, const std::string& to);
    /// A message frame (source = sender, destination = recipient, payload = the envelope with `id`): forwarded
    /// now, or stored (the receipt follows the commit; a failed commit sends the sender a refusal). Errc::out_of_order
    /// (an earlier number of the stream must come first), Errc::queue_full (recipient's limit), Errc::busy,
    /// Errc::storage_error; on an error `expected` is set to the number the stream now expects.
    Status submit(const Origin& origin, const std::string& to, const MessageId& id, const Frame& frame,
                  std::uint32_t& expected);
    /// The sender's connection is gone: its streams end (once nothing of them is being committed).
    void sender_closed(const std::string& from, std::uint64_t connection);
    /// `peer` is the user's new connection: deliver what is stored, from the start (unacknowledged messages of an
    /// earlier connection are sent again).
    void login(const std::string& user, const Peer* peer);
    /// The connection `peer` of `user` went away (ignored when a newer connection took over).
    void logout(const std::string& user, const Peer* peer);
    /// `recipient` has stored these messages from `sender`: tell the sender, send more, and delete them through the
    /// group commit (a failed deletion is logged; the messages are sent again at the next login). Errc::busy when
    /// the commit executor refuses the job.
    Status ack(const std::string& recipient, const std::string& sender, const std::vector<MessageId>& ids);

    /// The senders of the messages stored for `user` (read from the store). Errc::storage_error.
    Result<std::set<std::string>> senders(const std::string& user);

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
    void committed(const Origin& origin, const std::string& to, const MessageId& id, const Result<bool>& r);
    bool admit(const Origin& origin, const std::string& to);
    void removed(const std::string& recipient, const Result<std::size_t>& r);
    static StreamOrder::Key key(const Origin& origin, const std::string& to) {
        return {origin.from, origin.connection, to};
    }
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
    StreamOrder m_streams;
};

}  // namespace sim::server_detail
