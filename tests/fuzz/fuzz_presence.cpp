// libFuzzer target for the `presence` frame's payload (docs/protocol.md 6.10, src/proto/presence.h), which a client
// decodes from the server and the server from any logged-in client.
//
// Properties (a violation aborts):
// - nothing crashes, leaks or reads out of bounds on any input;
// - a payload the decoder accepts re-encodes to exactly the same bytes (one encoding per value), within the limits
//   the decoder promises (entries, name sizes).
#include <sim/bytes.h>

#include "../../libsim/src/proto/presence.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

void require(bool condition, const char* what) {
    if (!condition) {
        std::fprintf(stderr, "fuzz_presence: property violated: %s\n", what);
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const sim::ByteView in(data, size);
    if (const auto m = sim::decode_presence(in)) {
        require(m->entries.size() <= sim::max_presence_entries, "more entries than the limit");
        for (const auto& e : m->entries) {
            require(!e.user.empty() && e.user.size() <= sim::max_presence_name, "a name outside its bounds");
        }
        const auto again = sim::encode_presence(*m);
        require(again && *again == sim::Bytes(in.begin(), in.end()), "re-encoding differs");
    }
    return 0;
}
