#pragma once
/// @file
/// A consistent copy of a SQLite account database while servers keep using it (`simd backup`). Kept apart from
/// `sim/store.h` because only administration tools need it.

#include <sim/error.h>

#include <string>

namespace sim::store {

/// Copy the SQLite database at `source` to `destination` with SQLite's online backup API: the copy is one
/// consistent snapshot, taken while other connections (a running simd, `simd user ...`) read and write. The copy
/// is written to "<destination>.partial" and renamed over `destination`, so `destination` is either the old file
/// or the whole new copy. `source` is never created. Errc::storage_error when `source` cannot be opened (also when
/// it does not exist) or the copy fails, Errc::corrupt_database when it is not a database, Errc::io_error when the
/// rename fails; the partial file is removed then.
[[nodiscard]] Status backup_sqlite(const std::string& source, const std::string& destination);

}  // namespace sim::store
