#pragma once
// Private: group commit of the mailboxes (docs/protocol.md 6.7). Appends and removals (acknowledged messages) are
// queued; one commit job at a time runs on the server's Executor, writes every append and every removal queued when
// it starts in ONE store transaction (appends first; an append whose removal is queued too is not written), and
// runs each completion. Under load many messages share one commit (one fsync); when idle a message is committed
// alone, at once. A completion runs only after its transaction has committed. No store I/O happens on the caller's
// thread (an I/O thread) or under the caller's locks.

#include "histogram.h"

#include <sim/clock.h>
#include <sim/store.h>
#include <sim/transport.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace sim::server_detail {

class GroupCommit : public std::enable_shared_from_this<GroupCommit> {
public:
    /// What became of one copy of a message (or the batch's error).
    enum class Written : std::uint8_t {
        fresh,      ///< stored now
        duplicate,  ///< was stored already
        cancelled,  ///< not written: a removal of it was queued before its commit (its recipient has it already)
    };
    /// Per copy, in the order they were queued.
    using Done = std::function<void(Result<std::vector<Written>>)>;

    /// `store`, `executor` and `clock` must outlive every job (the server core keeps them alive). `clock` times
    /// each message from enqueue() to its transaction's commit (commit_latency()).
    GroupCommit(store::MessageStore& store, Executor& executor, const Clock& clock)
        : m_store(store), m_executor(executor), m_clock(clock) {}

    /// Asked on the commit thread just before the batch holding the message is written: false leaves it out (its
    /// completion gets Errc::out_of_order). Lets the caller drop what a failure of an earlier batch invalidated.
    using Admit = std::function<bool()>;

    /// Queue one message: its copies, one per recipient device mailbox, are written in the same transaction (all or
    /// none); its completion runs once, on the executor, after the commit. Returns false (and never runs `done`)
    /// when the executor refuses the job. Never blocks on the database, never runs `done` or `admit` inline, so the
    /// caller may hold locks that they take. An empty `admit` always writes.
    [[nodiscard]] bool enqueue(std::vector<store::StoredMessage> copies, Done done, Admit admit = {});

    /// The outcome of a removal: what was stored of the ids and is deleted now, or the transaction's error. Removals
    /// of one (mailbox, sender) queued together share one transaction: the first completion gets what it deleted,
    /// the others nothing (only the sum is meaningful).
    using Removed = std::function<void(Result<store::StoredUsage>)>;
    /// Queue the deletion of these messages (from `removal.sender`, in the mailbox of (recipient, recipient device));
    /// the completion runs on the executor after the transaction. Returns false (and never runs `done`) when the
    /// executor refuses the job.
    [[nodiscard]] bool enqueue_removal(store::MessageStore::Removal removal, Removed done);

    /// Transactions run so far and messages they held (for tests and monitoring).
    [[nodiscard]] std::uint64_t commits() const;
    [[nodiscard]] std::uint64_t committed_messages() const;
    /// For each message written: the time from its enqueue() to the commit of its transaction.
    [[nodiscard]] HistogramSnapshot commit_latency() const { return m_latency.snapshot(); }

private:
    struct Item {
        std::vector<store::StoredMessage> copies;
        Done done;
        Admit admit;
        TimePoint queued;
    };
    struct Removal {
        store::MessageStore::Removal what;
        Removed done;
    };
    void run();
    /// After a job: run the next one if something was queued meanwhile, else mark that none is in flight.
    void finish_job();
    /// Submit a job if none is in flight (the caller holds m_mutex and has just queued something).
    bool start_job_locked();

    store::MessageStore& m_store;
    Executor& m_executor;
    const Clock& m_clock;
    // 0.1 ms (a memory store; one fsync on a fast disk is about 0.5 ms) .. 5 s (a database in trouble)
    LatencyHistogram m_latency{LatencyHistogram::steps_1_2_5(std::chrono::microseconds(100), std::chrono::seconds(5))};
    mutable std::mutex m_mutex;
    std::vector<Item> m_queue;
    std::vector<Removal> m_removals;
    bool m_job_in_flight = false;
    std::uint64_t m_commits = 0;
    std::uint64_t m_messages = 0;
};

}  // namespace sim::server_detail
