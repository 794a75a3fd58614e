#include "delivery.h"

#include "fanout.h"

#include <algorithm>

namespace sim::server_detail {

Delivery::Delivery(store::MessageStore& store, std::shared_ptr<GroupCommit> commit, Router& router, RoutingBus& bus,
                   Limits limits, WallClock wall, Log log, FreeSpace free_space, DeviceDirectory* devices)
    : m_store(store),
      m_commit(std::move(commit)),
      m_router(router),
      m_bus(bus),
      m_limits(limits),
      m_wall(std::move(wall)),
      m_log(std::move(log)),
      m_free_space(std::move(free_space)),
      m_devices(devices) {}

Result<std::vector<DeviceId>> Delivery::devices_of(const std::string& user) {
    if (m_devices == nullptr) {
        return std::vector<DeviceId>{first_device};
    }
    return m_devices->devices(user);
}

Result<Delivery::Locked> Delivery::lock_box(const MailboxId& mailbox, bool create) {
    for (;;) {
        std::shared_ptr<Box> box;
        {
            const std::lock_guard lock(m_boxes_mutex);
            const auto it = m_boxes.find(mailbox);
            if (it != m_boxes.end()) {
                box = it->second;
            } else if (!create) {
                return Locked{};
            } else {
                // First contact since the start: count what an earlier run left in the store. From then on the count
                // is kept here (this server is the store's only writer). Nothing of a mailbox not in the map is being
                // written (a mailbox with anything queued or stored stays in it), so the count is exact.
                SIM_TRY(const auto stored, m_store.usage(mailbox.user, mailbox.device));
                box = std::make_shared<Box>();
                box->backlog = stored;
                box->backlog_messages = stored.messages;
                m_boxes.emplace(mailbox, box);
            }
        }
        std::unique_lock lock(box->mutex);
        if (!box->gone) {
            return Locked{std::move(box), std::move(lock)};
        }
        // Forgotten between the look-up and the lock: look again.
    }
}

void Delivery::forget_if_idle_locked(const MailboxId& mailbox, Box& box) {
    if (box.backlog.messages != 0 || box.peer != nullptr || box.queued != 0) {
        return;
    }
    box.gone = true;
    const std::lock_guard lock(m_boxes_mutex);
    const auto it = m_boxes.find(mailbox);
    if (it != m_boxes.end() && it->second.get() == &box) {
        m_boxes.erase(it);
    }
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

void Delivery::account_box(Box& box, const store::StoredUsage& usage, bool add) {
    if (add) {
        box.backlog += usage;
    } else {
        box.backlog -= usage;
    }
    box.backlog_messages = box.backlog.messages;
}

void Delivery::account_sender(const std::string& from, const store::StoredUsage& usage, bool add) {
    const std::lock_guard lock(m_quota_mutex);
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
    const std::lock_guard lock(origin.streams->mutex);
    return origin.streams->order.check(key(origin, to), origin.seq);
}

std::uint32_t Delivery::refused(const Origin& origin, const std::string& to) {
    const std::lock_guard lock(origin.streams->mutex);
    const auto k = key(origin, to);
    origin.streams->order.refused(k, origin.seq);
    return origin.streams->order.next(k);
}

Status Delivery::submit(const Origin& origin, const std::string& to, const ConversationId& conversation,
                        const MessageId& id, std::vector<Copy> copies, std::uint32_t& expected) {
    const auto k = key(origin, to);
    auto& streams = *origin.streams;
    // The mailboxes (the recipient's and the sender's own other devices'), locked in mailbox order (the only
    // order anything locks several in).
    std::vector<Locked> boxes;
    boxes.reserve(copies.size());
    const auto forget_all = [&] {  // the mailboxes locked so far, if idle
        for (std::size_t i = 0; i < boxes.size(); ++i) {
            forget_if_idle_locked(mailbox_of(origin, to, copies[i]), *boxes[i].box);
        }
    };
    // The stream expects the message again. Streams lock held.
    const auto refuse_locked = [&](Error e) -> Status {
        streams.order.refused(k, origin.seq);
        expected = origin.seq;
        forget_all();
        return e;
    };
    if (copies.empty() ||
        std::adjacent_find(copies.begin(), copies.end(),
                           [&](const Copy& a, const Copy& b) {
                               return mailbox_of(origin, to, a) >= mailbox_of(origin, to, b);
                           }) != copies.end() ||
        std::any_of(copies.begin(), copies.end(), [&](const Copy& c) { return c.own && c.device == origin.device; })) {
        const std::lock_guard lock(streams.mutex);
        return refuse_locked(Error{Errc::bad_field, "a message needs one copy per device, in mailbox order"});
    }
    for (const auto& c : copies) {
        auto locked = lock_box(mailbox_of(origin, to, c));
        if (!locked) {
            const std::lock_guard lock(streams.mutex);
            return refuse_locked(locked.error());
        }
        boxes.push_back(std::move(*locked));
    }
    std::unique_lock stream_lock(streams.mutex);
    // Checked again under the lock: a failed commit may have moved the stream back since the caller asked.
    if (const auto want = streams.order.check(k, origin.seq); want != 0) {
        expected = want;
        forget_all();
        return Error{Errc::out_of_order, "an earlier message of this conversation must come first"};
    }
    // Every copy fits its mailbox, and all of them the sender's quota and the store: all or none.
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < copies.size(); ++i) {
        if (auto full = mailbox_full_locked(*boxes[i].box, copies[i].envelope.size())) {
            return refuse_locked(std::move(*full));
        }
        total += copies[i].envelope.size();
    }
    {
        const std::lock_guard lock(m_quota_mutex);
        if (const auto st = load_usage_locked(); !st) {
            return refuse_locked(st.error());
        }
        if (auto over = over_quota_locked(origin.from, total)) {
            return refuse_locked(std::move(*over));
        }
    }
    const store::WallTime received_at = m_wall();
    // Drained as it fills: a caught-up attached mailbox gets its copy now, while it is being committed.
    std::vector<std::pair<std::shared_ptr<Peer>, Frame>> early;
    std::vector<Queued> queued(copies.size());
    std::vector<store::StoredMessage> rows(copies.size());
    for (std::size_t i = 0; i < copies.size(); ++i) {
        const MailboxId mailbox = mailbox_of(origin, to, copies[i]);
        queued[i] = Queued{mailbox, copies[i].envelope.size(), 0};
        if (auto peer = caught_up_locked(mailbox, *boxes[i].box)) {
            // An own copy goes out as it will from the store: `source` the sender, `destination` the recipient.
            const auto own = copies[i].own ? decode_own_copy(copies[i].envelope) : Result<OwnCopy>{OwnCopy{}};
            if (own) {
                queued[i].sent_to = boxes[i].box->generation;
                early.emplace_back(std::move(peer),
                                   Frame{FrameType::message, 0, origin.from, to,
                                         encode_delivered(received_at, conversation, origin.device,
                                                          copies[i].own ? own->envelope : copies[i].envelope)});
            }
        }
        auto& m = rows[i];
        m.recipient = mailbox.user;
        m.recipient_device = mailbox.device;
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
        return refuse_locked(Error{Errc::busy, "server busy: message not stored, send it again later"});
    }
    streams.order.accepted(k, origin.seq);
    stream_lock.unlock();
    account_sender(origin.from, store::StoredUsage{copies.size(), total}, true);
    for (std::size_t i = 0; i < boxes.size(); ++i) {
        Box& box = *boxes[i].box;
        account_box(box, store::StoredUsage{1, queued[i].bytes}, true);
        ++box.queued;
        if (queued[i].sent_to != 0) {
            box.in_flight.emplace(origin.from, id);
        } else if (box.peer != nullptr) {
            ++box.unsent_queued;
        }
    }
    // Handed to the connections with their mailboxes still locked: nothing of the mailbox overtakes them.
    for (const auto& [peer, frame] : early) {
        peer->deliver(frame);
        m_router.count_routed();
    }
    return ok();
}

std::shared_ptr<Peer> Delivery::caught_up_locked(const MailboxId& mailbox, const Box& box) {
    if (box.peer == nullptr || box.more || box.unsent_queued != 0 || undeleted(box) >= m_limits.window) {
        return nullptr;
    }
    return served_locked(mailbox, box);
}

std::shared_ptr<Peer> Delivery::served_locked(const MailboxId& mailbox, const Box& box) {
    auto peer = m_bus.local(mailbox);
    return peer && peer.get() == box.peer ? peer : nullptr;
}

bool Delivery::admit(const Origin& origin, const std::string& to) {
    const std::lock_guard lock(origin.streams->mutex);
    return origin.streams->order.admit(key(origin, to), origin.seq) == 0;
}

void Delivery::committed(const Origin& origin, const std::string& to, const MessageId& id,
                         const std::vector<Queued>& copies, const Result<std::vector<GroupCommit::Written>>& r) {
    using Written = GroupCommit::Written;
    // The mailboxes stay known while anything of theirs is being committed; locked in device order.
    std::vector<Locked> boxes;
    boxes.reserve(copies.size());
    for (const auto& c : copies) {
        auto locked = lock_box(c.mailbox, false);
        boxes.push_back(locked ? std::move(*locked) : Locked{});
    }
    bool stored = false;  // some copy is in the store now (fresh or a duplicate), not all were acknowledged first
    std::vector<bool> sent(copies.size(), false);  // sent as it was queued, to the connection attached now
    store::StoredUsage not_stored;
    for (std::size_t i = 0; i < copies.size(); ++i) {
        Box* box = boxes[i].box.get();
        sent[i] = box != nullptr && box->peer != nullptr && copies[i].sent_to != 0 &&
                  copies[i].sent_to == box->generation;
        if (box != nullptr) {
            box->queued -= std::min<std::size_t>(box->queued, 1);
            if (box->peer != nullptr && !sent[i]) {
                box->unsent_queued -= std::min<std::size_t>(box->unsent_queued, 1);
            }
        }
        const auto written = r ? (*r)[i] : Written::cancelled;
        if (written != Written::fresh) {
            // Not stored, or counted before (a duplicate), or not written (cancelled: acknowledged first).
            if (box != nullptr) {
                account_box(*box, store::StoredUsage{1, copies[i].bytes}, false);
            }
            not_stored += store::StoredUsage{1, copies[i].bytes};
        }
        stored = stored || written != Written::cancelled;
    }
    if (not_stored.messages != 0) {
        account_sender(origin.from, not_stored, false);
    }
    const auto k = key(origin, to);
    const bool skipped = !r && r.code() == Errc::out_of_order;
    bool first_failed = false;
    {
        const std::lock_guard lock(origin.streams->mutex);
        origin.streams->order.committed(k, origin.seq,
                                        r ? StreamOrder::Outcome::written
                                          : (skipped ? StreamOrder::Outcome::skipped : StreamOrder::Outcome::failed));
        first_failed = !r && !skipped && origin.streams->order.next(k) == origin.seq;
    }
    if (skipped) {
        // An earlier message of the stream failed and its sender was told to send again from there; this one is
        // among those it sends again.
    } else if (!r) {
        m_router.count_refused(Errc::storage_error);
        m_log(LogLevel::error, "offline message not stored: " + r.error().message());
        if (origin.seq == 0) {
            (void)m_bus.deliver(MailboxId{origin.from, origin.device},
                                make_error_frame(Errc::storage_error, "message not stored, send it again later"));
        } else if (const auto sender = origin.sender.lock(); sender && first_failed) {
            // One refusal per failed run of the stream: the first (lowest) number; the client sends again from it.
            const Refusal refusal{to, id, Errc::storage_error, origin.seq};
            sender->deliver(Frame{FrameType::receipt, static_cast<std::uint32_t>(ReceiptStatus::refused),
                                  std::string(server_name), origin.from, encode_refusal(refusal)});
        }
    } else if (stored) {
        send_receipt(origin.from, to, 0, ReceiptStatus::stored, {id});  // a duplicate is stored too (6.7)
    }  // else: every device had it before it was written; the sender got `receipt delivered`
    std::vector<MailboxId> wake;  // stored for a device no connection of this node serves
    for (std::size_t i = 0; i < copies.size(); ++i) {
        Box* box = boxes[i].box.get();
        const MailboxId& mailbox = copies[i].mailbox;
        if (box == nullptr || box->peer == nullptr) {
            if (r && (*r)[i] != Written::cancelled) {
                wake.push_back(mailbox);
            }
            if (box != nullptr) {
                forget_if_idle_locked(mailbox, *box);
            }
            continue;
        }
        if (!sent[i]) {
            box->more = true;
            pump_locked(mailbox, *box);
        }
        tell_if_drained_locked(mailbox, *box);
        forget_if_idle_locked(mailbox, *box);
    }
    boxes.clear();  // unlocked: another node holding the device drains it from the store
    for (const auto& mailbox : wake) {
        m_bus.wake(mailbox);
    }
}

void Delivery::woken(const MailboxId& device, Executor& executor) {
    std::shared_ptr<Box> box;
    {
        const std::lock_guard lock(m_boxes_mutex);
        const auto it = m_boxes.find(device);
        if (it == m_boxes.end()) {
            return;  // not served here (a device served here stays known while its connection lasts)
        }
        box = it->second;
    }
    if (box->wake_queued.exchange(true)) {
        return;  // the queued drain reads what this wake-up announces: it clears the flag before reading
    }
    std::weak_ptr<Delivery> weak = weak_from_this();
    if (!executor.submit([weak, device] {
            if (auto self = weak.lock()) {
                self->drain_woken(device);
            }
        })) {
        box->wake_queued = false;
        m_log(LogLevel::warning, "a wake-up from another node was dropped (workers busy); the device gets those "
                                 "messages with the next one or at its next login");
    }
}

void Delivery::drain_woken(const MailboxId& mailbox) {
    auto locked = lock_box(mailbox, false);
    if (!locked || !locked->box) {
        return;
    }
    Box& box = *locked->box;
    box.wake_queued = false;  // before the read: a wake-up from now on queues another drain
    if (box.peer == nullptr) {
        forget_if_idle_locked(mailbox, box);
        return;
    }
    // Another node wrote to this mailbox: the count kept here misses its messages. Read it again; exact when
    // nothing of this node's is between queue and completion, else the larger (a count too low would end a
    // server-assigned conversation's delivery early).
    if (const auto stored = m_store.usage(mailbox.user, mailbox.device); !stored) {
        m_log(LogLevel::error, "stored messages not counted: " + stored.error().message());
    } else if (box.queued == 0 && box.acked.empty()) {
        box.backlog = *stored;
    } else {
        box.backlog.messages = std::max(box.backlog.messages, stored->messages);
        box.backlog.bytes = std::max(box.backlog.bytes, stored->bytes);
    }
    box.backlog_messages = box.backlog.messages;
    // From the start: the other node's rows may have lower sequence numbers than rows read already (each node's
    // transactions take their numbers before they commit). What was sent and not deleted is skipped by its id.
    box.after_seq = 0;
    box.more = true;
    pump_locked(mailbox, box);
    tell_if_drained_locked(mailbox, box);
}

void Delivery::tell_if_drained_locked(const MailboxId& device, const Box& box) {
    if (box.backlog.messages != 0) {
        return;
    }
    const auto devices = devices_of(device.user);
    if (!devices) {
        return;  // not told now: the next commit or deletion asks again
    }
    for (const auto d : *devices) {
        if (d == device.device) {
            continue;
        }
        // Another device's mailbox: a look at its count without its lock (only one mailbox lock is taken at a time
        // here); one not counted since the start may hold messages.
        const std::lock_guard lock(m_boxes_mutex);
        const auto it = m_boxes.find(MailboxId{device.user, d});
        if (it == m_boxes.end() || it->second->backlog_messages.load() != 0) {
            return;
        }
    }
    m_router.drained(device.user);
}

void Delivery::pump_locked(const MailboxId& mailbox, Box& box) {
    const auto peer = served_locked(mailbox, box);
    if (!peer) {
        return;
    }
    while (box.more && undeleted(box) < m_limits.window) {
        const std::size_t want = m_limits.window - undeleted(box);
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
            if (row.sender == mailbox.user) {
                // A copy for one of the sender's own devices (nobody sends to themselves otherwise): it names the
                // conversation's peer, which the frame carries as its destination (6.5).
                const auto own = decode_own_copy(row.envelope);
                if (!own) {
                    m_log(LogLevel::error, "a stored own copy does not decode: " + own.error().message());
                    continue;
                }
                peer->deliver(Frame{FrameType::message, 0, row.sender, own->peer,
                                    encode_delivered(row.stored_at, pair_conversation_id(row.sender, own->peer),
                                                     row.sender_device, own->envelope)});
            } else {
                peer->deliver(Frame{FrameType::message, 0, row.sender, mailbox.user,
                                    encode_delivered(row.stored_at, pair_conversation_id(row.sender, mailbox.user),
                                                     row.sender_device, row.envelope)});
            }
            m_router.count_routed();
        }
        if (rows->size() < want) {
            box.more = false;
        }
    }
}

void Delivery::login(const MailboxId& device, const Peer* peer) {
    m_bus.sync_attachments();  // a commit on another node after the read below wakes this node
    auto locked = lock_box(device);
    if (!locked) {
        m_log(LogLevel::error, "stored messages not counted: " + locked.error().message());
        return;
    }
    Box& b = *locked->box;
    b.peer = peer;
    ++b.generation;
    b.after_seq = 0;
    b.in_flight.clear();
    b.more = b.backlog.messages > 0;
    b.unsent_queued = b.queued;
    pump_locked(device, b);  // logins run on a worker
    tell_if_drained_locked(device, b);
}

void Delivery::logout(const MailboxId& device, const Peer* peer) {
    auto locked = lock_box(device, false);
    if (!locked || !locked->box || locked->box->peer != peer) {
        return;
    }
    Box& b = *locked->box;
    b.peer = nullptr;
    b.in_flight.clear();
    b.more = false;
    b.unsent_queued = 0;
    forget_if_idle_locked(device, b);
}

Status Delivery::ack(const MailboxId& recipient, const std::string& sender, const std::vector<MessageId>& ids) {
    auto locked = lock_box(recipient, false);
    if (!locked) {
        return locked.error();
    }
    if (locked->box) {
        Box& box = *locked->box;
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
        // Nothing more can be sent yet: acknowledged messages stay in the window until their deletion commits
        // (removed() drains then, on the commit thread), so the store is never read on this I/O thread.
    }
    m_router.count_delivered(ids.size());
    send_receipt(sender, recipient.user, recipient.device, ReceiptStatus::delivered, ids);
    return ok();
}

void Delivery::removed(const MailboxId& recipient, const std::string& sender, const std::vector<MessageId>& ids,
                       const Result<store::StoredUsage>& r) {
    auto locked = lock_box(recipient, false);
    Box* box = locked && locked->box ? locked->box.get() : nullptr;
    if (box != nullptr) {
        for (const auto& id : ids) {
            box->acked.erase({sender, id});
        }
    }
    if (!r) {
        m_log(LogLevel::error,
              "acknowledged messages not deleted (they are sent again at the next login): " + r.error().message());
    } else {
        account_sender(sender, *r, false);
        if (box != nullptr) {
            account_box(*box, *r, false);
        }
    }
    if (box == nullptr) {
        return;
    }
    if (box->peer != nullptr) {
        pump_locked(recipient, *box);  // the deletion opened the window
        tell_if_drained_locked(recipient, *box);
    }
    forget_if_idle_locked(recipient, *box);
}

Result<std::set<std::string>> Delivery::senders(const std::string& user) {
    std::set<std::string> out;
    SIM_TRY(const auto devices, devices_of(user));
    for (const auto device : devices) {
        std::uint64_t after = 0;
        for (bool more = true; more;) {
            SIM_TRY(const auto rows, m_store.pending(user, device, after, 1000));
            for (const auto& row : rows) {
                if (row.sender != user) {  // an own copy: not a conversation partner
                    out.insert(row.sender);
                }
                after = row.seq;
            }
            more = rows.size() == 1000;
        }
    }
    return out;
}

Result<store::StoredUsage> Delivery::backlog(const MailboxId& device) {
    SIM_TRY(auto locked, lock_box(device));
    const auto n = locked.box->backlog;
    forget_if_idle_locked(device, *locked.box);
    return n;
}

Result<store::StoredUsage> Delivery::backlog(const std::string& user) {
    store::StoredUsage sum;
    SIM_TRY(const auto devices, devices_of(user));
    for (const auto device : devices) {
        SIM_TRY(const auto usage, backlog(MailboxId{user, device}));
        sum += usage;
    }
    return sum;
}

Result<std::uint64_t> Delivery::sender_bytes(const std::string& sender) {
    const std::lock_guard lock(m_quota_mutex);
    SIM_TRY_STATUS(load_usage_locked());
    const auto it = m_sender_bytes.find(sender);
    return it == m_sender_bytes.end() ? std::uint64_t{0} : it->second;
}

Result<store::StoredUsage> Delivery::store_usage() {
    const std::lock_guard lock(m_quota_mutex);
    SIM_TRY_STATUS(load_usage_locked());
    return store::StoredUsage{m_store_messages, m_store_bytes};
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
