// Replay driver for the normal (non-libFuzzer) build: runs LLVMFuzzerTestOneInput once on every file in the given
// folders (or on the given files), so the kept corpus and the crashing inputs in regressions/ are regression tests.
// Exit status: 0 when every input ran, 1 when a path cannot be read; a property violation aborts the process.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
// Optional in a target; libFuzzer calls it once before the first input.
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

bool run_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "replay: cannot open %s\n", path.c_str());
        return false;
    }
    const std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Copy into an exactly sized heap buffer so AddressSanitizer sees reads past the end.
    const std::vector<std::uint8_t> exact(data.begin(), data.end());
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", path.c_str(), exact.size());
    static_cast<void>(LLVMFuzzerTestOneInput(exact.data(), exact.size()));
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (LLVMFuzzerInitialize != nullptr) {
        static_cast<void>(LLVMFuzzerInitialize(&argc, &argv));
    }
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    std::size_t count = 0;
    bool ok = true;
    for (int i = 1; i < argc; ++i) {
        const std::filesystem::path arg(argv[i]);
        std::error_code ec;
        if (std::filesystem::is_directory(arg, ec)) {
            std::vector<std::filesystem::path> files;
            for (const auto& entry : std::filesystem::directory_iterator(arg, ec)) {
                // Dot files (.gitkeep) are not inputs.
                if (entry.is_regular_file() && entry.path().filename().string().front() != '.') {
                    files.push_back(entry.path());
                }
            }
            if (ec) {
                std::fprintf(stderr, "replay: cannot list %s: %s\n", arg.c_str(), ec.message().c_str());
                ok = false;
                continue;
            }
            std::sort(files.begin(), files.end());
            for (const auto& f : files) {
                ok = run_file(f) && ok;
                ++count;
            }
        } else if (std::filesystem::is_regular_file(arg, ec)) {
            ok = run_file(arg) && ok;
            ++count;
        } else {
            std::fprintf(stderr, "replay: no such file or folder: %s\n", arg.c_str());
            ok = false;
        }
    }
    std::fprintf(stderr, "replay: %zu inputs, %s\n", count, ok ? "all ran" : "some could not be read");
    return ok ? 0 : 1;
}
