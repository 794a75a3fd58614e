"""Writer for the `.vec` test-vector format read by tests/unit/vec_reader.cpp.

`[Section]` lines, `key = value` fields, records separated by blank lines, `#` comments.
"""


def write_vec(path, header_lines, sections):
    """sections: list of (section_name, [record_dict, ...]); values are str (hex for bytes)."""
    with open(path, "w", encoding="utf-8") as out:
        for line in header_lines:
            out.write(f"# {line}\n")
        for name, records in sections:
            out.write(f"\n[{name}]\n")
            for rec in records:
                out.write("\n")
                for key, value in rec.items():
                    out.write(f"{key} = {value}\n")
