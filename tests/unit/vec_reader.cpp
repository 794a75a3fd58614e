#include "vec_reader.h"

#include <fstream>
#include <stdexcept>

namespace simtest {

namespace {
std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos) {
        return {};
    }
    const auto e = s.find_last_not_of(" \t\r");
    return s.substr(b, e - b + 1);
}
}  // namespace

const std::string& VecRecord::get(const std::string& key) const {
    const auto it = fields.find(key);
    if (it == fields.end()) {
        throw std::out_of_range("missing field '" + key + "' at " + where());
    }
    return it->second;
}

sim::Bytes VecRecord::hex(const std::string& key) const {
    sim::Bytes out;
    if (!sim::from_hex(get(key), out)) {
        throw std::invalid_argument("field '" + key + "' is not hex at " + where());
    }
    return out;
}

std::string VecRecord::where() const { return file + ":" + std::to_string(line); }

std::string vector_path(const std::string& relative) { return std::string(SIM_VECTORS_DIR) + "/" + relative; }

std::vector<VecRecord> read_vec_file(const std::string& relative) {
    std::ifstream in(vector_path(relative));
    if (!in) {
        throw std::runtime_error("cannot read vector file " + vector_path(relative));
    }
    std::vector<VecRecord> records;
    VecRecord current;
    current.file = relative;
    std::string section;
    std::string raw;
    int line_no = 0;
    auto flush = [&] {
        if (!current.fields.empty()) {
            records.push_back(current);
        }
        current.fields.clear();
        current.line = 0;
    };
    while (std::getline(in, raw)) {
        ++line_no;
        const std::string line = trim(raw);
        if (line.empty()) {
            flush();
            continue;
        }
        if (line[0] == '#') {
            continue;
        }
        if (line.front() == '[' && line.back() == ']') {
            flush();
            section = line.substr(1, line.size() - 2);
            current.section = section;
            continue;
        }
        const auto eq = line.find('=');
        if (eq == std::string::npos) {
            continue;  // e.g. NIST headers without '='
        }
        if (current.fields.empty()) {
            current.line = line_no;
            current.section = section;
        }
        current.fields[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
    }
    flush();
    return records;
}

}  // namespace simtest
