#pragma once
// One generic reader for the test-vector files under tests/vectors/: Botan-style `.vec`, NIST `.rsp`, and the
// `.vec` files that scripts/import_vectors.py makes from Wycheproof and Noise JSON.
//
// Format: `[Section]` lines start a section; `Key = value` lines add a field to the current record; a blank line ends
// the record; `#` starts a comment line. Keys are case-sensitive. CRLF is accepted.

#include <sim/bytes.h>

#include <map>
#include <string>
#include <vector>

namespace simtest {

struct VecRecord {
    std::string file;
    std::string section;
    int line = 0;  // line of the record's first field, for messages
    std::map<std::string, std::string> fields;

    [[nodiscard]] bool has(const std::string& key) const { return fields.count(key) != 0; }
    /// The field's text; throws std::out_of_range naming the key and line when absent.
    [[nodiscard]] const std::string& get(const std::string& key) const;
    /// The field decoded from hex; throws std::invalid_argument when it is not hex.
    [[nodiscard]] sim::Bytes hex(const std::string& key) const;
    /// "file:line" for failure messages.
    [[nodiscard]] std::string where() const;
};

/// Read `relative` (a path below tests/vectors/). Throws std::runtime_error when the file cannot be read.
std::vector<VecRecord> read_vec_file(const std::string& relative);

/// Absolute path of a file below tests/vectors/.
std::string vector_path(const std::string& relative);

}  // namespace simtest
