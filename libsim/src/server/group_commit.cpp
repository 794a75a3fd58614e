#include "group_commit.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

namespace sim::server_detail {

bool GroupCommit::enqueue(std::vector<store::StoredMessage> copies, Done done, Admit admit) {
    const std::lock_guard lock(m_mutex);
    m_queue.push_back(Item{std::move(copies), std::move(done), std::move(admit), m_clock.now()});
    if (!start_job_locked()) {
        m_queue.pop_back();
        return false;
    }
    return true;
}

bool GroupCommit::enqueue_removal(store::MessageStore::Removal removal, Removed done) {
    const std::lock_guard lock(m_mutex);
    m_removals.push_back(Removal{std::move(removal), std::move(done)});
    if (!start_job_locked()) {
        m_removals.pop_back();
        return false;
    }
    return true;
}

bool GroupCommit::start_job_locked() {
    if (m_job_in_flight) {
        return true;  // the running job (or its successor) takes it
    }
    auto self = shared_from_this();
    if (!m_executor.submit([self] { self->run(); })) {
        return false;
    }
    m_job_in_flight = true;
    return true;
}

void GroupCommit::run() {
    std::vector<Item> batch;
    std::vector<Removal> removals;
    {
        const std::lock_guard lock(m_mutex);
        batch.swap(m_queue);
        removals.swap(m_removals);
    }
    // A message acknowledged before it was written (its recipient got it as the mailbox filled) is not written:
    // its removal still runs (a copy stored earlier, by a re-send, goes too), and deletes nothing else.
    std::set<std::tuple<std::string_view, DeviceId, std::string_view, MessageId>> removing;
    for (const auto& r : removals) {
        for (const auto& id : r.what.ids) {
            removing.emplace(r.what.recipient, r.what.recipient_device, r.what.sender, id);
        }
    }
    // Left out: what the admit check refuses (in batch order, so a stream's refusals are seen in sending order).
    // Each copy's outcome is `cancelled` or the append's (filled in after the transaction).
    std::vector<Item> written;
    std::vector<std::vector<Written>> outcomes;
    written.reserve(batch.size());
    outcomes.reserve(batch.size());
    for (auto& item : batch) {
        if (item.admit && !item.admit()) {
            item.done(Error{Errc::out_of_order, "an earlier message of this stream was not stored"});
            continue;
        }
        std::vector<Written> outcome(item.copies.size(), Written::fresh);
        for (std::size_t i = 0; i < item.copies.size(); ++i) {
            const auto& m = item.copies[i];
            if (removing.count({m.recipient, m.recipient_device, m.sender, m.id}) != 0) {
                outcome[i] = Written::cancelled;
            }
        }
        written.push_back(std::move(item));
        outcomes.push_back(std::move(outcome));
    }
    // Removals: one group per (mailbox, sender), whatever number of acks asked for its ids.
    std::map<std::tuple<std::string_view, DeviceId, std::string_view>, std::vector<std::size_t>> groups;
    for (std::size_t i = 0; i < removals.size(); ++i) {
        const auto& r = removals[i].what;
        groups[{r.recipient, r.recipient_device, r.sender}].push_back(i);
    }
    store::MessageStore::Changes changes;
    for (std::size_t k = 0; k < written.size(); ++k) {
        for (std::size_t i = 0; i < written[k].copies.size(); ++i) {
            if (outcomes[k][i] != Written::cancelled) {
                changes.appends.push_back(std::move(written[k].copies[i]));
            }
        }
    }
    if (changes.appends.empty() && groups.empty()) {
        for (std::size_t k = 0; k < written.size(); ++k) {
            written[k].done(std::move(outcomes[k]));  // every copy cancelled
        }
        finish_job();
        return;
    }
    changes.removals.reserve(groups.size());
    for (const auto& [who, members] : groups) {
        store::MessageStore::Removal r{
            std::string(std::get<0>(who)), std::get<1>(who), std::string(std::get<2>(who)), {}};
        for (const auto i : members) {
            r.ids.insert(r.ids.end(), removals[i].what.ids.begin(), removals[i].what.ids.end());
        }
        changes.removals.push_back(std::move(r));
    }
    // The appends and the removals in one transaction: one fsync per job.
    auto applied = m_store.apply(changes);
    if (applied &&
        (applied->appended.size() != changes.appends.size() || applied->removed.size() != groups.size())) {
        applied = Error{Errc::internal, "store returned a wrong result count"};
    }
    {
        const std::lock_guard lock(m_mutex);
        ++m_commits;
        m_messages += applied ? changes.appends.size() : 0;
    }
    if (applied) {
        const auto now = m_clock.now();
        for (const auto& item : written) {
            m_latency.observe(now - item.queued);
        }
    }
    std::size_t a = 0;  // the next append's result
    for (std::size_t k = 0; k < written.size(); ++k) {
        if (!applied) {
            written[k].done(applied.error());
            continue;
        }
        for (auto& w : outcomes[k]) {
            if (w != Written::cancelled) {
                w = applied->appended[a++] ? Written::fresh : Written::duplicate;
            }
        }
        written[k].done(std::move(outcomes[k]));
    }
    std::size_t g = 0;
    for (const auto& [who, members] : groups) {
        bool first = true;
        for (const auto i : members) {
            // The group's sum goes to its first removal, once.
            removals[i].done(applied ? Result<store::StoredUsage>(first ? applied->removed[g] : store::StoredUsage{})
                                     : Result<store::StoredUsage>(applied.error()));
            first = false;
        }
        ++g;
    }
    finish_job();
}

void GroupCommit::finish_job() {
    // Whatever arrived during this commit goes in the next one: one job in flight at a time.
    {
        const std::lock_guard lock(m_mutex);
        if (m_queue.empty() && m_removals.empty()) {
            m_job_in_flight = false;
            return;
        }
    }
    auto self = shared_from_this();
    if (!m_executor.submit([self] { self->run(); })) {
        run();  // the pool is full: keep draining on this worker rather than dropping stored-to-be messages
    }
}

std::uint64_t GroupCommit::commits() const {
    const std::lock_guard lock(m_mutex);
    return m_commits;
}

std::uint64_t GroupCommit::committed_messages() const {
    const std::lock_guard lock(m_mutex);
    return m_messages;
}

}  // namespace sim::server_detail
