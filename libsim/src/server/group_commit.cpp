#include "group_commit.h"

namespace sim::server_detail {

bool GroupCommit::enqueue(store::StoredMessage message, Done done, Admit admit) {
    const std::lock_guard lock(m_mutex);
    m_queue.push_back(Item{std::move(message), std::move(done), std::move(admit)});
    if (m_job_in_flight) {
        return true;  // the running job (or its successor) takes it
    }
    // No job in flight means the queue was empty: it holds only this message.
    auto self = shared_from_this();
    if (!m_executor.submit([self] { self->run(); })) {
        m_queue.clear();
        return false;
    }
    m_job_in_flight = true;
    return true;
}

void GroupCommit::run() {
    std::vector<Item> batch;
    {
        const std::lock_guard lock(m_mutex);
        batch.swap(m_queue);
    }
    // Left out: what the admit check refuses (in batch order, so a stream's refusals are seen in sending order).
    std::vector<Item> written;
    written.reserve(batch.size());
    for (auto& item : batch) {
        if (item.admit && !item.admit()) {
            item.done(Error{Errc::out_of_order, "an earlier message of this stream was not stored"});
        } else {
            written.push_back(std::move(item));
        }
    }
    if (!written.empty()) {
        std::vector<store::StoredMessage> messages;
        messages.reserve(written.size());
        for (auto& item : written) {
            messages.push_back(std::move(item.message));
        }
        const auto fresh = m_store.append(messages);
        {
            const std::lock_guard lock(m_mutex);
            ++m_commits;
            m_messages += messages.size();
        }
        for (std::size_t i = 0; i < written.size(); ++i) {
            if (fresh && fresh->size() == written.size()) {
                written[i].done((*fresh)[i]);
            } else {
                written[i].done(fresh ? Error{Errc::internal, "store returned a wrong result count"} : fresh.error());
            }
        }
    }
    // Whatever arrived during this commit goes in the next one: one job in flight at a time.
    {
        const std::lock_guard lock(m_mutex);
        if (m_queue.empty()) {
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
