#pragma once
// Shared helpers of the extension: strict argument types (text is `str`, bytes are bytes-like), conversion of
// sim::Error into the Python exception hierarchy of libsim.errors, and durations in seconds.

#include <sim/bytes.h>
#include <sim/clock.h>
#include <sim/error.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

namespace simpy {

namespace py = pybind11;

/// An argument that must be a Python `str` (bytes are refused, not decoded), held as UTF-8.
struct Text {
    std::string value;
};

/// An argument that must be bytes-like (bytes, bytearray, memoryview...); a `str` is refused. Copied on load, so
/// the GIL can be released while C++ works on it.
struct Blob {
    sim::Bytes value;
    [[nodiscard]] sim::ByteView view() const noexcept { return value; }
};

/// Like Blob, for secrets: the copy lives in zeroizing memory.
struct SecretBlob {
    sim::SecureBytes value;
};

/// A libsim error travelling through C++ until the exception translator turns it into a libsim.errors class.
class SimException final : public std::exception {
public:
    explicit SimException(sim::Error error) : m_error(std::move(error)), m_what(m_error.message()) {}
    [[nodiscard]] const sim::Error& error() const noexcept { return m_error; }
    [[nodiscard]] const char* what() const noexcept override { return m_what.c_str(); }

private:
    sim::Error m_error;
    std::string m_what;
};

[[noreturn]] inline void raise(sim::Error error) {
    throw SimException(std::move(error));
}

/// The value of `r`, or raise its error.
template <typename T>
T unwrap(sim::Result<T>&& r) {
    if (!r) {
        raise(std::move(r).error());
    }
    return std::move(r).value();
}

/// Raise the error of a failed Status.
inline void check(const sim::Status& st) {
    if (!st) {
        raise(st.error());
    }
}

/// A Python exception object (not raised) for `error`, built by libsim.errors (see errors.cpp).
py::object make_error_object(const sim::Error& error);

/// bytes from a byte range.
inline py::bytes to_py_bytes(sim::ByteView v) {
    return {reinterpret_cast<const char*>(v.data()), v.size()};
}

/// str from UTF-8 received from a peer: invalid sequences become U+FFFD instead of raising.
inline py::str to_py_str(std::string_view s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (o == nullptr) {
        throw py::error_already_set();
    }
    return py::reinterpret_steal<py::str>(o);
}

/// A duration given in seconds (int or float): finite and not negative, else ValueError naming `what`.
inline sim::Duration seconds_to_duration(double seconds, const char* what) {
    if (!std::isfinite(seconds) || seconds < 0.0) {
        throw py::value_error(std::string(what) + " must be a finite number of seconds >= 0");
    }
    if (seconds > 1e9) {  // ~31 years: beyond this nanosecond counts overflow
        throw py::value_error(std::string(what) + " is too large");
    }
    return std::chrono::duration_cast<sim::Duration>(std::chrono::duration<double>(seconds));
}

inline double duration_to_seconds(sim::Duration d) {
    return std::chrono::duration<double>(d).count();
}

/// A `str` from an arbitrary object (property setters), else TypeError naming `what`.
inline Text text_from(const py::handle& obj, const char* what) {
    if (!PyUnicode_Check(obj.ptr())) {
        throw py::type_error(std::string(what) + " must be str, not " + Py_TYPE(obj.ptr())->tp_name);
    }
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(obj.ptr(), &size);
    if (data == nullptr) {
        throw py::error_already_set();
    }
    return Text{std::string(data, static_cast<std::size_t>(size))};
}

/// Bytes from a bytes-like object (property setters), else TypeError naming `what`.
inline Blob blob_from(const py::handle& obj, const char* what);

/// Registration functions, one per area (one source file each).
void register_errors(py::module_& m);
void register_frame(py::module_& m);
void register_rng_clock(py::module_& m);
void register_crypto(py::module_& m);
void register_session(py::module_& m);
void register_handshake(py::module_& m);
void register_channel(py::module_& m);
void register_client(py::module_& m);

}  // namespace simpy

namespace pybind11::detail {

template <>
struct type_caster<simpy::Text> {
    PYBIND11_TYPE_CASTER(simpy::Text, const_name("str"));

    bool load(handle src, bool /*convert*/) {
        if (!src || !PyUnicode_Check(src.ptr())) {
            return false;
        }
        Py_ssize_t size = 0;
        const char* data = PyUnicode_AsUTF8AndSize(src.ptr(), &size);
        if (data == nullptr) {  // e.g. a lone surrogate: not encodable as UTF-8
            PyErr_Clear();
            return false;
        }
        value.value.assign(data, static_cast<std::size_t>(size));
        return true;
    }

    static handle cast(const simpy::Text& src, return_value_policy /*policy*/, handle /*parent*/) {
        return simpy::to_py_str(src.value).release();
    }
};

/// Shared loader of Blob and SecretBlob: any object with the buffer protocol except str.
template <typename Vec>
bool load_bytes_like(handle src, Vec& out) {
    if (!src || PyUnicode_Check(src.ptr()) || !PyObject_CheckBuffer(src.ptr())) {
        return false;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(src.ptr(), &view, PyBUF_SIMPLE) != 0) {
        PyErr_Clear();
        return false;
    }
    const auto* p = static_cast<const std::uint8_t*>(view.buf);
    out.assign(p, p + view.len);
    PyBuffer_Release(&view);
    return true;
}

template <>
struct type_caster<simpy::Blob> {
    PYBIND11_TYPE_CASTER(simpy::Blob, const_name("bytes"));

    bool load(handle src, bool /*convert*/) { return load_bytes_like(src, value.value); }

    static handle cast(const simpy::Blob& src, return_value_policy /*policy*/, handle /*parent*/) {
        return simpy::to_py_bytes(src.value).release();
    }
};

template <>
struct type_caster<simpy::SecretBlob> {
    PYBIND11_TYPE_CASTER(simpy::SecretBlob, const_name("bytes"));

    bool load(handle src, bool /*convert*/) { return load_bytes_like(src, value.value); }

    static handle cast(const simpy::SecretBlob& src, return_value_policy /*policy*/, handle /*parent*/) {
        return simpy::to_py_bytes(src.value).release();
    }
};

}  // namespace pybind11::detail

namespace simpy {

inline Blob blob_from(const py::handle& obj, const char* what) {
    Blob b;
    if (!py::detail::load_bytes_like(obj, b.value)) {
        throw py::type_error(std::string(what) + " must be bytes-like (bytes, bytearray, memoryview), not " +
                             Py_TYPE(obj.ptr())->tp_name);
    }
    return b;
}

}  // namespace simpy
