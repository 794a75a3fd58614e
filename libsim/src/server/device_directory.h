#pragma once
// Private: the server's directory of active devices (docs/architecture.md, "Multi-device accounts"): which devices
// of a user a message must cover (docs/protocol.md 6.5). The truth is the device store (store::DeviceStore); this
// keeps the active ids of the users who have a connection attached here ("pinned", loaded at login on a worker and
// kept until their last connection leaves) and, for a short while and in a bounded number, of users looked up as
// recipients. The server changes the entries itself when it stores a list (activation, removal). What another node
// changes reaches this one through the op 5 its attached devices are sent (forget()), through the expiry of the
// unpinned entries, and through the re-read the server does before it refuses a message (refresh()).
//
// Thread-safe. The store is never read with the directory's lock held; a read that raced with a change of the same
// user is not kept (the next use reads again), so an entry is never older than the last change made here.

#include <sim/clock.h>
#include <sim/error.h>
#include <sim/frame.h>
#include <sim/store.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace sim::server_detail {

class DeviceDirectory {
public:
    struct Options {
        std::size_t max_unpinned = 4096;                   ///< users cached without a connection here
        Duration unpinned_ttl = std::chrono::seconds(30);  ///< how long such an entry is believed
    };

    /// `store` null: every account has device 1 only (a server without a device store). `clock` measures the
    /// expiry of unpinned entries.
    DeviceDirectory(store::DeviceStore* store, const Clock& clock, Options options);

    /// The active devices of `user`, in increasing order: from the directory, else read from the store and kept.
    /// {first_device} without a device store and for a user the store does not know (the message checks that follow
    /// then refuse as before devices). Errc::storage_error.
    [[nodiscard]] Result<std::vector<DeviceId>> devices(const std::string& user);
    /// Read from the store now and keep it (the entry may be stale: another node stored a list). Errc::storage_error.
    [[nodiscard]] Result<std::vector<DeviceId>> refresh(const std::string& user);
    /// The entry, if there is one (no store read).
    [[nodiscard]] std::optional<std::vector<DeviceId>> cached(const std::string& user);
    /// A connection of `user` is attached: the entry stays (read now when missing) until the matching unpin().
    /// Errc::storage_error (the entry is pinned all the same and read at its next use).
    Status pin(const std::string& user);
    void unpin(const std::string& user);
    /// The user's devices changed elsewhere: the next use reads the store.
    void forget(const std::string& user);

    /// Entries held (tests, monitoring).
    [[nodiscard]] std::size_t size();

private:
    struct Entry {
        std::optional<std::vector<DeviceId>> devices;  // empty: to be read
        std::size_t pins = 0;
        TimePoint read_at{};
        std::uint64_t change = 0;  // m_changes when the read that filled it (or the forget that emptied it) began
    };
    /// Reads the store; keeps the result if nothing changed `user`'s entry since `change`.
    Result<std::vector<DeviceId>> load(const std::string& user, std::uint64_t change);
    /// The entry still holds (lock held).
    [[nodiscard]] bool fresh_locked(const Entry& e) const;
    /// Drop expired unpinned entries, then the oldest ones, down to the bound (lock held).
    void trim_locked();

    store::DeviceStore* m_store;
    const Clock& m_clock;
    Options m_options;

    std::mutex m_mutex;
    std::map<std::string, Entry> m_entries;
    std::uint64_t m_changes = 0;  // counts the changes (forget, refresh), so a slower read does not overwrite one
};

}  // namespace sim::server_detail
