// sim::Errc as libsim.Errc, and the translation of sim::Error into the exception classes of libsim/errors.py.
#include "common.h"

#include <sim/error.h>

namespace simpy {

namespace {

// Owned reference to libsim.errors._from_code; deliberately never released (it lives as long as the interpreter,
// and releasing it during interpreter shutdown is unsafe).
PyObject* g_error_factory = nullptr;

}  // namespace

py::object make_error_object(const sim::Error& error) {
    if (g_error_factory == nullptr) {
        // The extension used without its package: still a clear exception, just not a libsim.errors class.
        return py::reinterpret_steal<py::object>(
            PyObject_CallFunction(PyExc_RuntimeError, "s", error.message().c_str()));
    }
    return py::reinterpret_borrow<py::object>(g_error_factory)(static_cast<int>(error.code), to_py_str(error.detail));
}

void register_errors(py::module_& m) {
    // Upper-case member names, as Python enums spell constants; the values are the stable wire codes.
    py::enum_<sim::Errc>(m, "Errc", "Every error libsim reports (values are stable: they travel in error frames).")
        .value("OK", sim::Errc::ok)
        .value("TRUNCATED", sim::Errc::truncated)
        .value("FRAME_TOO_LARGE", sim::Errc::frame_too_large)
        .value("UNSUPPORTED_VERSION", sim::Errc::unsupported_version)
        .value("UNKNOWN_FRAME_TYPE", sim::Errc::unknown_frame_type)
        .value("BAD_LENGTH", sim::Errc::bad_length)
        .value("TRAILING_BYTES", sim::Errc::trailing_bytes)
        .value("BAD_FIELD", sim::Errc::bad_field)
        .value("INVALID_KEY", sim::Errc::invalid_key)
        .value("AUTH_FAILED", sim::Errc::auth_failed)
        .value("REPLAYED", sim::Errc::replayed)
        .value("OUT_OF_WINDOW", sim::Errc::out_of_window)
        .value("EPOCH_TOO_FAR", sim::Errc::epoch_too_far)
        .value("STALE_EPOCH", sim::Errc::stale_epoch)
        .value("KEY_EXPIRED", sim::Errc::key_expired)
        .value("SUITE_NOT_ALLOWED", sim::Errc::suite_not_allowed)
        .value("NO_COMMON_SUITE", sim::Errc::no_common_suite)
        .value("LIMIT_REACHED", sim::Errc::limit_reached)
        .value("INVALID_STATE", sim::Errc::invalid_state)
        .value("HANDSHAKE_FAILED", sim::Errc::handshake_failed)
        .value("SERVER_KEY_MISMATCH", sim::Errc::server_key_mismatch)
        .value("SERVER_KEY_UNKNOWN", sim::Errc::server_key_unknown)
        .value("IDENTITY_CHANGED", sim::Errc::identity_changed)
        .value("BAD_USERNAME", sim::Errc::bad_username)
        .value("BAD_PASSWORD", sim::Errc::bad_password)
        .value("AUTH_REJECTED", sim::Errc::auth_rejected)
        .value("USER_EXISTS", sim::Errc::user_exists)
        .value("USER_NOT_FOUND", sim::Errc::user_not_found)
        .value("THROTTLED", sim::Errc::throttled)
        .value("REGISTRATION_CLOSED", sim::Errc::registration_closed)
        .value("BAD_HASH", sim::Errc::bad_hash)
        .value("TOKEN_INVALID", sim::Errc::token_invalid)
        .value("DEVICE_UNKNOWN", sim::Errc::device_unknown)
        .value("STORAGE_ERROR", sim::Errc::storage_error)
        .value("SCHEMA_TOO_NEW", sim::Errc::schema_too_new)
        .value("CORRUPT_DATABASE", sim::Errc::corrupt_database)
        .value("STORE_FULL", sim::Errc::store_full)
        .value("NOT_AUTHENTICATED", sim::Errc::not_authenticated)
        .value("SOURCE_MISMATCH", sim::Errc::source_mismatch)
        .value("DESTINATION_OFFLINE", sim::Errc::destination_offline)
        .value("BAD_DESTINATION", sim::Errc::bad_destination)
        .value("NO_CONVERSATION", sim::Errc::no_conversation)
        .value("RATE_LIMITED", sim::Errc::rate_limited)
        .value("QUEUE_FULL", sim::Errc::queue_full)
        .value("TIMEOUT", sim::Errc::timeout)
        .value("CLOSED", sim::Errc::closed)
        .value("BUSY", sim::Errc::busy)
        .value("OUT_OF_ORDER", sim::Errc::out_of_order)
        .value("QUOTA_EXCEEDED", sim::Errc::quota_exceeded)
        .value("DEVICE_PENDING", sim::Errc::device_pending)
        .value("DEVICES_CHANGED", sim::Errc::devices_changed)
        .value("INVALID_ARGUMENT", sim::Errc::invalid_argument)
        .value("NOT_IMPLEMENTED", sim::Errc::not_implemented)
        .value("IO_ERROR", sim::Errc::io_error)
        .value("INTERNAL", sim::Errc::internal);

    m.def(
        "describe", [](sim::Errc code) { return std::string(sim::describe(code)); }, py::arg("code"),
        "Short, stable English description of an error code (never contains user data).");

    m.def(
        "_set_error_factory",
        [](py::object factory) {
            if (!PyCallable_Check(factory.ptr())) {
                throw py::type_error("the error factory must be callable");
            }
            if (g_error_factory != nullptr) {
                Py_DECREF(g_error_factory);
            }
            g_error_factory = factory.release().ptr();
        },
        py::arg("factory"), "Internal: libsim.errors registers the function that builds exception objects.");

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) {
                std::rethrow_exception(p);
            }
        } catch (const SimException& e) {
            try {
                const py::object exc = make_error_object(e.error());
                PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
            } catch (py::error_already_set& inner) {
                inner.restore();  // the factory itself failed: report that error
            }
        }
    });
}

}  // namespace simpy
