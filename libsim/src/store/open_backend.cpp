// Backend selection by URL.
#include <sim/store.h>

namespace sim::store {

Result<std::unique_ptr<Backend>> open_backend(std::string_view url) {
    if (url == "memory:") {
        return make_memory_backend();
    }
    if (url.substr(0, 7) == "sqlite:") {
        SqliteConfig config;
        config.path = std::string(url.substr(7));
        if (config.path.empty()) {
            return Error{Errc::invalid_argument, "sqlite: URL needs a path"};
        }
        return open_sqlite_backend(config);
    }
    if (url.substr(0, 10) == "mariadb://" || url.substr(0, 8) == "mysql://") {
        return open_mariadb_backend(MariaDbConfig{std::string(url)});
    }
    if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        return open_postgres_backend(PostgresConfig{std::string(url)});
    }
    return Error{Errc::invalid_argument, "backend URL must start with memory:, sqlite:, mariadb:// or postgresql://"};
}

}  // namespace sim::store
