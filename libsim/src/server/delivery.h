#pragma once
// Private: the mailboxes: storage and in-order delivery of conversation messages (docs/protocol.md 6.6, 6.7).
// Every message takes one path, online recipient or not: it is appended to the recipient's mailbox through the group
// commit (the sender gets `receipt stored` once it is durable), and the mailbox is drained into the connection it
// is attached to, in mailbox order, at most `window` sent and not deleted at a time: from the store (at login, and
// after commits and acks while it is behind), or, while it is caught up, as it fills: the message goes to the
// connection when it is queued for the commit, so an online recipient does not wait for the disk. An `ack` deletes
// messages (after their append, in the same or a later commit) and tells the sender (`receipt delivered`). When a
// served recipient has nothing stored any more, the router hears of it (`drained`:
// server-assigned conversations kept only for that delivery end). Connections are reached through the routing bus.
//
// Thread-safe, serialised per mailbox: each device's mailbox has its own lock, held while its state changes and
// while frames are handed to its connection (so they go out in mailbox order); each sender connection's streams
// have theirs; the quota sums a short one. No lock is held across another mailbox's work, and no store read happens
// on the caller's thread except a mailbox's first count since the start: a mailbox is drained from the store at
// login (a worker) and after commits and deletions (the commit thread), never after an `ack` (an I/O thread: an
// acknowledged message holds its place in the window until its deletion commits). Lock order: connection receive lock
// -> mailbox locks (in mailbox order: user, then device) -> the sender's streams lock -> quota lock -> group commit /
// executor; mailbox lock -> router lock -> bus lock -> connection send lock. The router never calls in here. Wake-ups
// to other nodes (RoutingBus::wake) are sent with no lock held.

#include "device_directory.h"
#include "group_commit.h"
#include "router.h"
#include "stream_order.h"

#include <sim/messages.h>
#include <sim/store.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace sim::server_detail {

class Delivery : public std::enable_shared_from_this<Delivery> {
public:
    /// Quotas of the store (ServerConfig documents each) and the delivery window.
    struct Limits {
        std::size_t max_stored_per_recipient = 100'000;
        std::uint64_t max_mailbox_bytes = 256ULL << 20U;
        std::uint64_t max_sender_bytes = 128ULL << 20U;
        std::uint64_t max_store_bytes = 4ULL << 30U;
        std::uint64_t min_free_bytes = 1ULL << 30U;
        std::size_t window = 1000;
    };
    using WallClock = std::function<store::WallTime()>;
    using Log = std::function<void(LogLevel, std::string_view)>;
    /// Bytes free on the file system the store writes to; nullopt when unknown (then only the byte caps apply).
    using FreeSpace = std::function<std::optional<std::uint64_t>()>;

    /// `devices`: the active devices of each user (null: every account has device 1 only).
    Delivery(store::MessageStore& store, std::shared_ptr<GroupCommit> commit, Router& router, RoutingBus& bus,
             Limits limits, WallClock wall, Log log, FreeSpace free_space = {}, DeviceDirectory* devices = nullptr);

    /// The streams of one sender connection (stream_order.h), owned by the connection and by its messages still in
    /// the group commit: they end with the last of them.
    struct Streams {
        std::mutex mutex;
        StreamOrder order;
    };
    /// Where a message comes from: the sender and its device, its connection and that connection's streams, and
    /// the message's number in its stream (the frame's sid; 0 = unsequenced). See stream_order.h.
    struct Origin {
        std::string from;
        DeviceId device = first_device;
        std::uint64_t connection = 0;
        std::weak_ptr<Peer> sender;  ///< told of a refusal that happens after submit() returned (a failed commit)
        std::uint32_t seq = 0;
        std::shared_ptr<Streams> streams = std::make_shared<Streams>();
    };

    /// 0 when message `seq` of the stream (origin, `to`) may go ahead, else the number the stream expects first.
    /// A stream runs from a sender's connection to a recipient user (one message covers all the user's devices).
    [[nodiscard]] std::uint32_t expected(const Origin& origin, const std::string& to);
    /// The message was refused before submit() (rate, no conversation...): its stream expects it again. Returns the
    /// number the stream now expects.
    std::uint32_t refused(const Origin& origin, const std::string& to);
    /// One copy of a message: the envelope (6.5) stored in, and delivered from, one device's mailbox: a device of
    /// the recipient, or (`own`) one of the sender's own other devices, whose envelope is the stored form of
    /// fanout.h's encode_own_copy (delivered with `source` = the sender, `destination` = the recipient).
    struct Copy {
        DeviceId device = first_device;
        Bytes envelope;
        bool own = false;
    };
    /// The mailbox a copy goes to.
    static MailboxId mailbox_of(const Origin& origin, const std::string& to, const Copy& copy) {
        return MailboxId{copy.own ? origin.from : to, copy.device};
    }
    /// A message of the conversation `conversation` for the user `to`, one copy per device (in increasing mailbox
    /// order, mailbox_of()): queued for those mailboxes, all appended in one commit, after which the sender gets one
    /// `receipt stored` (a failed commit sends the sender a refusal instead); an attached mailbox is drained into its
    /// connection. Errc::out_of_order (an earlier number of the stream must come first), Errc::queue_full (a
    /// recipient mailbox is at its message or byte limit), Errc::quota_exceeded (the sender has too much stored for
    /// others), Errc::store_full (the store's byte cap or the file system's free-space reserve), Errc::busy,
    /// Errc::storage_error; on an error nothing is queued and `expected` is set to the number the stream now expects.
    Status submit(const Origin& origin, const std::string& to, const ConversationId& conversation,
                  const MessageId& id, std::vector<Copy> copies, std::uint32_t& expected);
    /// `peer` is the device's new connection: deliver what is stored, from the start (unacknowledged messages of an
    /// earlier connection are sent again).
    void login(const MailboxId& device, const Peer* peer);
    /// Another node committed messages for `device` (RoutingBus::on_woken): if a connection of this node is served
    /// from it, drain it from the store on `executor`, as after a local commit. Takes no mailbox lock and never
    /// waits (it runs on the bus's thread); wake-ups that arrive while one is queued for the mailbox join it.
    void woken(const MailboxId& device, Executor& executor);
    /// The connection `peer` of the device went away (ignored when a newer connection took over).
    void logout(const MailboxId& device, const Peer* peer);
    /// The device `recipient` has stored these messages from `sender`: tell the sender (`receipt delivered` naming
    /// the device), send more, and delete them
    /// from its mailbox through the group commit (a failed deletion is logged; the messages are sent again at the
    /// next login). Errc::busy when the commit executor refuses the job (the same ack may be sent again).
    Status ack(const MailboxId& recipient, const std::string& sender, const std::vector<MessageId>& ids);

    /// The senders of the messages stored for any device of `user` (read from the store). Errc::storage_error.
    Result<std::set<std::string>> senders(const std::string& user);

    /// What is known to be stored or being stored for a device (tests, monitoring). Errc::storage_error.
    Result<store::StoredUsage> backlog(const MailboxId& device);
    /// The sum of backlog() over every device of `user`. Errc::storage_error.
    Result<store::StoredUsage> backlog(const std::string& user);
    /// Bytes stored or being stored from `sender` for others, and for everyone (tests, monitoring).
    /// Errc::storage_error.
    Result<std::uint64_t> sender_bytes(const std::string& sender);
    /// Messages and bytes in the store or being stored, for everyone (monitoring). Errc::storage_error.
    Result<store::StoredUsage> store_usage();

private:
    using Key = std::pair<std::string, MessageId>;  // sender, id (unique in one mailbox)
    struct Box {
        std::mutex mutex;
        bool gone = false;                              // no longer in m_boxes: look the mailbox up again
        store::StoredUsage backlog;                     // in the store or being committed
        std::atomic<std::uint64_t> backlog_messages{0};  // backlog.messages, for a look without the lock
        const Peer* peer = nullptr;    // the connection being served, or null when offline
        std::uint64_t generation = 0;  // which login `peer` is (0: none yet); a message sent early names it
        std::uint64_t after_seq = 0;
        std::set<Key> in_flight;        // sent to `peer`, not acknowledged
        std::set<Key> acked;            // acknowledged, deletion not committed yet (the store still returns them)
        bool more = false;              // the store may hold messages after after_seq that `peer` has not been sent
        std::size_t queued = 0;         // messages being committed
        std::size_t unsent_queued = 0;  // of those, the ones `peer` has not been sent (they come from the store)
        std::atomic<bool> wake_queued{false};  // a drain asked by another node is queued on a worker
    };
    /// Messages sent to the mailbox's connection and not deleted yet: unacknowledged, or acknowledged with the
    /// deletion not committed. At most `window`: after a crash at most that many are sent again, all of them within
    /// the ids a client remembers per sender (docs/protocol.md 6.7), so none is shown twice.
    static std::size_t undeleted(const Box& box) { return box.in_flight.size() + box.acked.size(); }
    /// A mailbox's state with its lock held (box null: not known, when not created).
    struct Locked {
        std::shared_ptr<Box> box;
        std::unique_lock<std::mutex> lock;
    };

    /// The mailbox, locked. `create`: on first contact since the start its backlog is read from the store (under the
    /// map's lock, so that no other thread can have it half-counted). Errc::storage_error.
    Result<Locked> lock_box(const MailboxId& mailbox, bool create = true);
    /// Reads what every sender has stored, once (the sums are kept here from then on); quota lock held.
    /// Errc::storage_error.
    Status load_usage_locked();
    /// Why a copy of `bytes` may not go into `box` now, if it may not.
    std::optional<Error> mailbox_full_locked(const Box& box, std::uint64_t bytes) const;
    /// Why `from` may not store `bytes` more now (the sender's quota, the store's cap, the disk), if it may not;
    /// quota lock held.
    std::optional<Error> over_quota_locked(const std::string& from, std::uint64_t bytes);
    /// Count messages in (`add`) or out of a mailbox (its lock held) and of the sender's and the store's sums.
    static void account_box(Box& box, const store::StoredUsage& usage, bool add);
    void account_sender(const std::string& from, const store::StoredUsage& usage, bool add);
    /// A copy being committed: its size, and the generation of the connection it was sent to as it was queued (0:
    /// none).
    struct Queued {
        MailboxId mailbox;
        std::uint64_t bytes = 0;
        std::uint64_t sent_to = 0;
    };
    void committed(const Origin& origin, const std::string& to, const MessageId& id, const std::vector<Queued>& copies,
                   const Result<std::vector<GroupCommit::Written>>& r);
    /// Tell the router when `device.user`, online on `device` (whose mailbox `box` is locked), has nothing stored on
    /// any device any more.
    void tell_if_drained_locked(const MailboxId& device, const Box& box);
    /// The devices of `user` (the directory, or device 1 only without one). Errc::storage_error.
    Result<std::vector<DeviceId>> devices_of(const std::string& user);
    /// The connection a message queued for `box` now may be sent to at once (attached here, caught up, window
    /// open), or null.
    std::shared_ptr<Peer> caught_up_locked(const MailboxId& mailbox, const Box& box);
    /// The connection of this node serving the device, if it is `box`'s.
    std::shared_ptr<Peer> served_locked(const MailboxId& mailbox, const Box& box);
    bool admit(const Origin& origin, const std::string& to);
    void removed(const MailboxId& recipient, const std::string& sender, const std::vector<MessageId>& ids,
                 const Result<store::StoredUsage>& r);
    static StreamOrder::Key key(const Origin& origin, const std::string& to) {
        return {origin.from, origin.connection, to};
    }
    /// Send the served connection what the store holds for it, up to the window. Runs on a worker or the commit
    /// thread (login, commits, deletions), never on an I/O thread.
    void pump_locked(const MailboxId& mailbox, Box& box);
    /// The drain woken() queued: re-read the mailbox's usage and send what the store holds. On a worker.
    void drain_woken(const MailboxId& mailbox);
    /// Forget a mailbox with nothing stored and no connection (its lock held).
    void forget_if_idle_locked(const MailboxId& mailbox, Box& box);
    /// To every device of `sender` that is attached. `device`: the recipient's device that acknowledged
    /// (delivered), 0 for stored.
    void send_receipt(const std::string& sender, const std::string& peer, DeviceId device, ReceiptStatus status,
                      const std::vector<MessageId>& ids);

    store::MessageStore& m_store;
    std::shared_ptr<GroupCommit> m_commit;
    Router& m_router;
    RoutingBus& m_bus;
    Limits m_limits;
    WallClock m_wall;
    Log m_log;
    FreeSpace m_free_space;
    DeviceDirectory* m_devices;

    std::mutex m_boxes_mutex;
    std::map<MailboxId, std::shared_ptr<Box>> m_boxes;  // devices with a backlog or online since it was counted

    std::mutex m_quota_mutex;
    bool m_usage_loaded = false;
    std::map<std::string, std::uint64_t> m_sender_bytes;  // senders with something stored or being stored
    std::uint64_t m_store_bytes = 0;
    std::uint64_t m_store_messages = 0;
    std::optional<std::uint64_t> m_free;  // free bytes at the last look, less what was stored since
    store::WallTime m_free_checked{};
    store::WallTime m_full_logged{};
};

}  // namespace sim::server_detail
