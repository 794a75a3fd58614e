#include "delivery.h"

#include <algorithm>

namespace sim::server_detail {

Delivery::Delivery(store::MessageStore& store, std::shared_ptr<GroupCommit> commit, Router& router, RoutingBus& bus,
                   Limits limits, WallClock wall, Log log, FreeSpace free_space)
    : m_store(store),
      m_commit(std::move(commit)),
      m_router(router),
      m_bus(bus),
      m_limits(limits),
      m_wall(std::move(wall)),
      m_log(std::move(log)),
      m_free_space(std::move(free_space)) {}

Result<Delivery::Box*> Delivery::box_locked(const MailboxId& mailbox) {
    const auto it = m_boxes.find(mailbox);
    if (it != m_boxes.end()) {
        return &it->second;
    }
    // First contact since the start: count what an earlier run left in the store. From then on the count is kept
    // here (this server is the store's only writer).
    SIM_TRY(const auto stored, m_store.usage(mailbox.user, mailbox.device));
    Box& box = m_boxes[mailbox];
    box.backlog = stored;
    return &box;
}

Status Delivery::load_usage_locked() {
    if (m_usage_loaded) {
        return ok();
    }
    SIM_TRY(const auto by_sender, m_store.usage_by_sender());
    for (const auto& [sender, usage] : by_sender) {
        m_sender_bytes[sender] += usage.bytes;
        m_store_bytes += usage.bytes;
        m_store_messages += usage.messages;
    }
    m_usage_loaded = true;
    return ok();
}

std::optional<Error> Delivery::mailbox_full_locked(const Box& box, std::uint64_t bytes) const {
    if (box.backlog.messages >= m_limits.max_stored_per_recipient) {
        return Error{Errc::queue_full, "the recipient has too many stored messages"};
    }
    if (box.backlog.bytes + bytes > m_limits.max_mailbox_bytes) {
        return Error{Errc::queue_full, "the recipient's mailbox is full"};
    }
    return std::nullopt;
}

std::optional<Error> Delivery::over_quota_locked(const std::string& from, std::uint64_t bytes) {
    const auto it = m_sender_bytes.find(from);
    if ((it == m_sender_bytes.end() ? 0 : it->second) + bytes > m_limits.max_sender_bytes) {
        return Error{Errc::quota_exceeded, "you have too much stored for recipients who have not read it yet"};
    }
    const auto now = m_wall();
    std::optional<Error> full;
    if (m_store_bytes + bytes > m_limits.max_store_bytes) {
        full = Error{Errc::store_full, "the server's message store is full"};
    } else if (m_free_space) {
        // The file system is asked at most once a second (also when it could not answer); in between, what was
        // stored since is taken off the last answer.
        if (m_free_checked == store::WallTime{} || now < m_free_checked ||
            now - m_free_checked >= std::chrono::seconds(1)) {
            m_free = m_free_space();
            m_free_checked = now;
        }
        if (m_free && *m_free < m_limits.min_free_bytes + bytes) {
            full = Error{Errc::store_full, "the server's disk is nearly full"};
        }
    }
    if (full && (m_full_logged == store::WallTime{} || now - m_full_logged >= std::chrono::minutes(1))) {
        m_full_logged = now;
        m_log(LogLevel::warning, "offline messages refused: " + full->detail);
    }
    return full;
}

void Delivery::account_locked(Box* box, const std::string& from, const store::StoredUsage& usage, bool add) {
    if (box != nullptr) {
        if (add) {
            box->backlog += usage;
        } else {
            box->backlog -= usage;
        }
    }
    auto& sender = m_sender_bytes[from];
    if (add) {
        sender += usage.bytes;
        m_store_bytes += usage.bytes;
        m_store_messages += usage.messages;
        if (m_free) {
            *m_free -= std::min(*m_free, usage.bytes);
        }
    } else {
        sender -= std::min(sender, usage.bytes);
        m_store_bytes -= std::min(m_store_bytes, usage.bytes);
        m_store_messages -= std::min(m_store_messages, usage.messages);
    }
    if (sender == 0) {
        m_sender_bytes.erase(from);
    }
}

std::uint32_t Delivery::expected(const Origin& origin, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    return m_streams.check(key(origin, to), origin.seq);
}

std::uint32_t Delivery::refused(const Origin& origin, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    const auto k = key(origin, to);
    m_streams.refused(k, origin.seq);
    return m_streams.next(k);
}

void Delivery::sender_closed(const std::string& from, std::uint64_t connection) {
    const std::lock_guard lock(m_mutex);
    m_streams.connection_closed(from, connection);
}

Status Delivery::submit(const Origin& origin, const std::string& to, const ConversationId& conversation,
                        const MessageId& id, std::vector<Copy> copies, std::uint32_t& expected) {
    const std::lock_guard lock(m_mutex);
    const auto k = key(origin, to);
    // Checked again under the lock: a failed commit may have moved the stream back since the caller asked.
    if (const auto want = m_streams.check(k, origin.seq); want != 0) {
        expected = want;
        return Error{Errc::out_of_order, "an earlier message of this conversation must come first"};
    }
    auto refuse = [&](Error e) -> Status {
        m_streams.refused(k, origin.seq);
        expected = origin.seq;
        for (const auto& c : copies) {
            forget_if_idle_locked(MailboxId{to, c.device});
        }
        return e;
    };
    if (copies.empty()) {
        return refuse(Error{Errc::bad_field, "a message for no device"});
    }
    if (const auto st = load_usage_locked(); !st) {
        return refuse(st.error());
    }
    // Every copy fits its mailbox, and all of them the sender's quota and the store: all or none.
    std::vector<Box*> boxes;
    boxes.reserve(copies.size());
    std::uint64_t total = 0;
    for (const auto& c : copies) {
        auto box = box_locked(MailboxId{to, c.device});
        if (!box) {
            return refuse(box.error());
        }
        if (auto full = mailbox_full_locked(**box, c.envelope.size())) {
            return refuse(std::move(*full));
        }
        boxes.push_back(*box);
        total += c.envelope.size();
    }
    if (auto over = over_quota_locked(origin.from, total)) {
        return refuse(std::move(*over));
    }
    const store::WallTime received_at = m_wall();
    // Drained as it fills: a caught-up attached mailbox gets its copy now, while it is being committed.
    std::vector<std::pair<std::shared_ptr<Peer>, Frame>> early;
    std::vector<Queued> queued(copies.size());
    std::vector<store::StoredMessage> rows(copies.size());
    for (std::size_t i = 0; i < copies.size(); ++i) {
        const MailboxId mailbox{to, copies[i].device};
        queued[i] = Queued{copies[i].device, copies[i].envelope.size(), 0};
        if (auto peer = caught_up_locked(mailbox, *boxes[i])) {
            queued[i].sent_to = boxes[i]->generation;
            early.emplace_back(std::move(peer), Frame{FrameType::message, 0, origin.from, to,
                                                      encode_delivered(received_at, conversation, origin.device,
                                                                       copies[i].envelope)});
        }
        auto& m = rows[i];
        m.recipient = to;
        m.recipient_device = copies[i].device;
        m.sender = origin.from;
        m.sender_device = origin.device;
        m.id = id;
        m.envelope = std::move(copies[i].envelope);
        m.stored_at = received_at;
    }
    std::weak_ptr<Delivery> weak = weak_from_this();
    const bool enqueued = m_commit->enqueue(
        std::move(rows),
        [weak, origin, to, id, queued](Result<std::vector<GroupCommit::Written>> r) {
            if (auto self = weak.lock()) {
                self->committed(origin, to, id, queued, r);
            }
        },
        [weak, origin, to] {
            auto self = weak.lock();
            return !self || self->admit(origin, to);
        });
    if (!enqueued) {
        return refuse(Error{Errc::busy, "server busy: message not stored, send it again later"});
    }
    m_streams.accepted(k, origin.seq);
    for (std::size_t i = 0; i < boxes.size(); ++i) {
        account_locked(boxes[i], origin.from, store::StoredUsage{1, queued[i].bytes}, true);
        ++boxes[i]->queued;
        if (queued[i].sent_to != 0) {
            boxes[i]->in_flight.emplace(origin.from, id);
        } else if (boxes[i]->peer != nullptr) {
            ++boxes[i]->unsent_queued;
        }
    }
    for (const auto& [peer, frame] : early) {
        peer->deliver(frame);
        m_router.count_routed();
    }
    return ok();
}

std::shared_ptr<Peer> Delivery::caught_up_locked(const MailboxId& mailbox, const Box& box) {
    if (box.peer == nullptr || box.more || box.unsent_queued != 0 || box.in_flight.size() >= m_limits.window) {
        return nullptr;
    }
    return served_locked(mailbox, box);
}

std::shared_ptr<Peer> Delivery::served_locked(const MailboxId& mailbox, const Box& box) {
    auto peer = m_bus.local(mailbox);
    return peer && peer.get() == box.peer ? peer : nullptr;
}

bool Delivery::admit(const Origin& origin, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    return m_streams.admit(key(origin, to), origin.seq) == 0;
}

void Delivery::committed(const Origin& origin, const std::string& to, const MessageId& id,
                         const std::vector<Queued>& copies, const Result<std::vector<GroupCommit::Written>>& r) {
    const std::lock_guard lock(m_mutex);
    using Written = GroupCommit::Written;
    bool stored = false;  // some copy is in the store now (fresh or a duplicate), not all were acknowledged first
    std::vector<std::pair<Box*, bool>> boxes;  // each copy's mailbox (null: forgotten) and whether it was sent early
    boxes.reserve(copies.size());
    for (std::size_t i = 0; i < copies.size(); ++i) {
        const auto it = m_boxes.find(MailboxId{to, copies[i].device});
        Box* box = it == m_boxes.end() ? nullptr : &it->second;
        // Sent to the connection that is attached now, as it was queued: nothing to drain for it.
        const bool sent = box != nullptr && box->peer != nullptr && copies[i].sent_to != 0 &&
                          copies[i].sent_to == box->generation;
        if (box != nullptr) {
            box->queued -= std::min<std::size_t>(box->queued, 1);
            if (box->peer != nullptr && !sent) {
                box->unsent_queued -= std::min<std::size_t>(box->unsent_queued, 1);
            }
        }
        const auto written = r ? (*r)[i] : Written::cancelled;
        if (written != Written::fresh) {
            // Not stored, or counted before (a duplicate), or not written (cancelled: acknowledged first).
            account_locked(box, origin.from, store::StoredUsage{1, copies[i].bytes}, false);
        }
        stored = stored || written != Written::cancelled;
        boxes.emplace_back(box, sent);
    }
    const auto k = key(origin, to);
    const bool skipped = !r && r.code() == Errc::out_of_order;
    m_streams.committed(
        k, origin.seq,
        r ? StreamOrder::Outcome::written : (skipped ? StreamOrder::Outcome::skipped : StreamOrder::Outcome::failed));
    if (skipped) {
        // An earlier message of the stream failed and its sender was told to send again from there; this one is
        // among those it sends again.
    } else if (!r) {
        m_router.count_refused(Errc::storage_error);
        m_log(LogLevel::error, "offline message not stored: " + r.error().message());
        if (origin.seq == 0) {
            (void)m_bus.deliver(MailboxId{origin.from, origin.device},
                                make_error_frame(Errc::storage_error, "message not stored, send it again later"));
        } else if (const auto sender = origin.sender.lock(); sender && m_streams.next(k) == origin.seq) {
            // One refusal per failed run of the stream: the first (lowest) number; the client sends again from it.
            const Refusal refusal{to, id, Errc::storage_error, origin.seq};
            sender->deliver(Frame{FrameType::receipt, static_cast<std::uint32_t>(ReceiptStatus::refused),
                                  std::string(server_name), origin.from, encode_refusal(refusal)});
        }
    } else if (stored) {
        send_receipt(origin.from, to, 0, ReceiptStatus::stored, {id});  // a duplicate is stored too (6.7)
    }  // else: every device had it before it was written; the sender got `receipt delivered`
    for (std::size_t i = 0; i < copies.size(); ++i) {
        const MailboxId mailbox{to, copies[i].device};
        auto [box, sent] = boxes[i];
        if (box != nullptr && box->peer != nullptr) {
            if (!sent) {
                box->more = true;
                pump_locked(mailbox, *box);
            }
            tell_if_drained_locked(mailbox);
        }
        forget_if_idle_locked(mailbox);
    }
}

void Delivery::tell_if_drained_locked(const MailboxId& device) {
    for (const auto d : devices_of(device.user)) {
        const auto it = m_boxes.find(MailboxId{device.user, d});
        if (it != m_boxes.end() ? it->second.backlog.messages != 0 : d != device.device) {
            return;  // something left, or a device whose mailbox was not counted since the start
        }
    }
    m_router.drained(device.user);
}

void Delivery::pump_locked(const MailboxId& mailbox, Box& box) {
    const auto peer = served_locked(mailbox, box);
    if (!peer) {
        return;
    }
    while (box.more && box.in_flight.size() < m_limits.window) {
        const std::size_t want = m_limits.window - box.in_flight.size();
        auto rows = m_store.pending(mailbox.user, mailbox.device, box.after_seq, want);
        if (!rows) {
            m_log(LogLevel::error, "stored messages not read: " + rows.error().message());
            return;
        }
        for (auto& row : *rows) {
            box.after_seq = row.seq;
            Key key{row.sender, row.id};
            if (box.acked.count(key) != 0 || !box.in_flight.insert(key).second) {
                continue;  // sent as the mailbox filled (and maybe acknowledged already)
            }
            peer->deliver(Frame{FrameType::message, 0, row.sender, mailbox.user,
                                encode_delivered(row.stored_at, pair_conversation_id(row.sender, mailbox.user),
                                                 row.sender_device, row.envelope)});
            m_router.count_routed();
        }
        if (rows->size() < want) {
            box.more = false;
        }
    }
}

void Delivery::login(const MailboxId& device, const Peer* peer) {
    const std::lock_guard lock(m_mutex);
    auto box = box_locked(device);
    if (!box) {
        m_log(LogLevel::error, "stored messages not counted: " + box.error().message());
        return;
    }
    Box& b = **box;
    b.peer = peer;
    ++b.generation;
    b.after_seq = 0;
    b.in_flight.clear();
    b.more = b.backlog.messages > 0;
    b.unsent_queued = b.queued;
    pump_locked(device, b);
    tell_if_drained_locked(device);
}

void Delivery::logout(const MailboxId& device, const Peer* peer) {
    const std::lock_guard lock(m_mutex);
    const auto it = m_boxes.find(device);
    if (it == m_boxes.end() || it->second.peer != peer) {
        return;
    }
    it->second.peer = nullptr;
    it->second.in_flight.clear();
    it->second.more = false;
    it->second.unsent_queued = 0;
    forget_if_idle_locked(device);
}

Status Delivery::ack(const MailboxId& recipient, const std::string& sender, const std::vector<MessageId>& ids) {
    const std::lock_guard lock(m_mutex);
    const auto it = m_boxes.find(recipient);
    if (it != m_boxes.end()) {
        Box& box = it->second;
        // The deletion goes through the group commit (batched, off this thread); until it commits the rows stay
        // counted, and a new login would send them again (the client knows their ids). An id not in flight (acked
        // twice, or from an earlier connection's delivery) costs no write.
        std::vector<MessageId> stored;
        for (const auto& id : ids) {
            Key key{sender, id};
            if (box.in_flight.erase(key) != 0) {
                stored.push_back(id);
                box.acked.insert(std::move(key));
            }
        }
        if (!stored.empty()) {
            std::weak_ptr<Delivery> weak = weak_from_this();
            const bool queued = m_commit->enqueue_removal(
                store::MessageStore::Removal{recipient.user, recipient.device, sender, stored},
                [weak, recipient, sender, stored](Result<store::StoredUsage> r) {
                    if (auto self = weak.lock()) {
                        self->removed(recipient, sender, stored, r);
                    }
                });
            if (!queued) {
                // Not recorded: the messages are in flight again, so the same ack sent again counts.
                for (const auto& id : stored) {
                    box.acked.erase({sender, id});
                    box.in_flight.emplace(sender, id);
                }
                return Error{Errc::busy, "server busy: acknowledgement not recorded, send it again later"};
            }
        }
        if (box.peer != nullptr) {
            pump_locked(recipient, box);
        }
    }
    m_router.count_delivered(ids.size());
    send_receipt(sender, recipient.user, recipient.device, ReceiptStatus::delivered, ids);
    return ok();
}

void Delivery::removed(const MailboxId& recipient, const std::string& sender, const std::vector<MessageId>& ids,
                       const Result<store::StoredUsage>& r) {
    const std::lock_guard lock(m_mutex);
    if (const auto box = m_boxes.find(recipient); box != m_boxes.end()) {
        for (const auto& id : ids) {
            box->second.acked.erase({sender, id});
        }
    }
    if (!r) {
        m_log(LogLevel::error,
              "acknowledged messages not deleted (they are sent again at the next login): " + r.error().message());
        return;
    }
    const auto it = m_boxes.find(recipient);
    account_locked(it == m_boxes.end() ? nullptr : &it->second, sender, *r, false);
    if (it == m_boxes.end()) {
        return;
    }
    if (it->second.peer != nullptr) {
        tell_if_drained_locked(recipient);
    }
    forget_if_idle_locked(recipient);
}

Result<std::set<std::string>> Delivery::senders(const std::string& user) {
    std::set<std::string> out;
    for (const auto device : devices_of(user)) {
        std::uint64_t after = 0;
        for (bool more = true; more;) {
            SIM_TRY(const auto rows, m_store.pending(user, device, after, 1000));
            for (const auto& row : rows) {
                out.insert(row.sender);
                after = row.seq;
            }
            more = rows.size() == 1000;
        }
    }
    return out;
}

Result<store::StoredUsage> Delivery::backlog(const MailboxId& device) {
    const std::lock_guard lock(m_mutex);
    SIM_TRY(Box* const box, box_locked(device));
    const auto n = box->backlog;
    forget_if_idle_locked(device);
    return n;
}

Result<store::StoredUsage> Delivery::backlog(const std::string& user) {
    store::StoredUsage sum;
    for (const auto device : devices_of(user)) {
        SIM_TRY(const auto usage, backlog(MailboxId{user, device}));
        sum += usage;
    }
    return sum;
}

Result<std::uint64_t> Delivery::sender_bytes(const std::string& sender) {
    const std::lock_guard lock(m_mutex);
    SIM_TRY_STATUS(load_usage_locked());
    const auto it = m_sender_bytes.find(sender);
    return it == m_sender_bytes.end() ? std::uint64_t{0} : it->second;
}

Result<store::StoredUsage> Delivery::store_usage() {
    const std::lock_guard lock(m_mutex);
    SIM_TRY_STATUS(load_usage_locked());
    return store::StoredUsage{m_store_messages, m_store_bytes};
}

void Delivery::forget_if_idle_locked(const MailboxId& mailbox) {
    const auto it = m_boxes.find(mailbox);
    if (it != m_boxes.end() && it->second.backlog.messages == 0 && it->second.peer == nullptr) {
        m_boxes.erase(it);
    }
}

void Delivery::send_receipt(const std::string& sender, const std::string& peer, DeviceId device,
                            ReceiptStatus status, const std::vector<MessageId>& ids) {
    for (std::size_t i = 0; i < ids.size(); i += max_ids_per_frame) {
        Receipt r;
        r.peer = peer;
        r.device = device;
        r.ids.assign(ids.begin() + static_cast<std::ptrdiff_t>(i),
                     ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + max_ids_per_frame)));
        if (!deliver_to_user(m_bus, sender,
                             Frame{FrameType::receipt, static_cast<std::uint32_t>(status), std::string(server_name),
                                   sender, encode_receipt(r)})) {
            return;  // offline: a receipt is not stored (the sender's outbox sends the message again)
        }
    }
}

}  // namespace sim::server_detail
