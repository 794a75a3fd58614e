// The frame codec: Frame, FrameType, AckStage, encode/decode, error frames and the incremental FrameDecoder.
#include "common.h"

#include <sim/frame.h>

#include <pybind11/operators.h>

#include <optional>

namespace simpy {

namespace {

std::string frame_repr(const sim::Frame& f) {
    const py::object payload = to_py_bytes(f.payload);
    std::string payload_repr;
    if (f.payload.size() <= 32) {
        payload_repr = py::repr(payload).cast<std::string>();
    } else {
        payload_repr = "<" + std::to_string(f.payload.size()) + " bytes>";
    }
    return "Frame(" + py::str(py::cast(f.type)).cast<std::string>() + ", sid=" + std::to_string(f.sid) +
           ", source=" + py::repr(to_py_str(f.source)).cast<std::string>() +
           ", destination=" + py::repr(to_py_str(f.destination)).cast<std::string>() + ", payload=" + payload_repr +
           ")";
}

}  // namespace

void register_frame(py::module_& m) {
    using sim::FrameType;
    py::enum_<FrameType>(m, "FrameType", "Frame types (header byte 1).")
        .value("HANDSHAKE", FrameType::handshake, "one handshake message, directly on TCP")
        .value("RECORD", FrameType::record, "one sealed record of the client-server channel, directly on TCP")
        .value("INIT", FrameType::init, "log in / start a conversation (payload: credentials)")
        .value("ACK_INIT", FrameType::ack_init, "the server's answer to init or probe (sid: an AckStage)")
        .value("KEYGEN", FrameType::keygen, "conversation key assignment (sid 9999)")
        .value("MESSAGE", FrameType::message, "conversation message (payload sealed end to end)")
        .value("PROBE", FrameType::probe, "is the destination online yet?")
        .value("ERROR", FrameType::error, "an error code and a detail text")
        .value("CLOSE", FrameType::close, "leave a conversation or log out")
        .value("PREKEYS", FrameType::prekeys, "prekey upload (client) or prekey status (server)")
        .value("ACK", FrameType::ack, "recipient to server: these message ids are stored")
        .value("RECEIPT", FrameType::receipt, "server to sender: messages stored (sid 1) or delivered (sid 2)")
        .value("LIMITS", FrameType::limits, "server to client after login: the rates and window to pace sending by")
        .value("PASSWD", FrameType::passwd, "client: change the password; server: changed, with a new session token")
        .value("LINK", FrameType::link, "linking a new device: step, device, data (docs/protocol.md 6.9)")
        .value("DEVICES", FrameType::devices, "device lists and the owner's devices (docs/protocol.md 6.9)")
        .value("PRESENCE", FrameType::presence, "presence of contacts (docs/protocol.md 6.10)")
        .def_property_readonly(
            "is_transport", [](FrameType t) { return sim::is_transport_frame(t); },
            "True for the types that travel directly on TCP (HANDSHAKE, RECORD).");

    py::enum_<sim::AckStage>(m, "AckStage", "Stages carried in the sid of an ACK_INIT frame.")
        .value("AUTHENTICATED", sim::AckStage::authenticated)
        .value("DESTINATION_ONLINE", sim::AckStage::destination_online)
        .value("DESTINATION_OFFLINE", sim::AckStage::destination_offline);

    m.attr("FRAME_VERSION") = sim::frame_version;
    m.attr("FRAME_HEADER_SIZE") = sim::frame_header_size;
    m.attr("MIN_FRAME_SIZE") = sim::min_frame_size;
    m.attr("MAX_NAME_SIZE") = sim::max_name_size;
    m.attr("DEFAULT_MAX_FRAME_SIZE") = sim::default_max_frame_size;
    m.attr("MAX_ERROR_DETAIL_SIZE") = sim::max_error_detail_size;
    m.attr("KEYGEN_SID") = sim::keygen_sid;

    py::class_<sim::Frame>(m, "Frame",
                           "One frame: type, sid, source and destination names (str) and a payload (bytes).")
        .def(py::init([](FrameType type, std::uint32_t sid, const Text& source, const Text& destination,
                         const Blob& payload) {
                 return sim::Frame{type, sid, source.value, destination.value, payload.value};
             }),
             py::arg("type"), py::kw_only(), py::arg("sid") = 0U, py::arg("source") = Text{},
             py::arg("destination") = Text{}, py::arg("payload") = Blob{})
        .def_readwrite("type", &sim::Frame::type)
        .def_readwrite("sid", &sim::Frame::sid)
        .def_property(
            "source", [](const sim::Frame& f) { return to_py_str(f.source); },
            [](sim::Frame& f, const py::object& v) { f.source = text_from(v, "Frame.source").value; })
        .def_property(
            "destination", [](const sim::Frame& f) { return to_py_str(f.destination); },
            [](sim::Frame& f, const py::object& v) { f.destination = text_from(v, "Frame.destination").value; })
        .def_property(
            "payload", [](const sim::Frame& f) { return to_py_bytes(f.payload); },
            [](sim::Frame& f, const py::object& v) { f.payload = blob_from(v, "Frame.payload").value; })
        .def(
            "encode",
            [](const sim::Frame& f, std::size_t max_frame_size) {
                return to_py_bytes(unwrap(sim::encode_frame(f, max_frame_size)));
            },
            py::kw_only(), py::arg("max_frame_size") = sim::default_max_frame_size,
            "The wire encoding. Raises FrameError (a name too long or holding a control byte, a transport frame "
            "with a sid or names, an undefined type) or MessageTooLarge.")
        .def_static(
            "decode",
            [](const Blob& data, std::size_t max_frame_size) {
                return unwrap(sim::decode_frame(data.view(), max_frame_size));
            },
            py::arg("data"), py::kw_only(), py::arg("max_frame_size") = sim::default_max_frame_size,
            "Decode a buffer that holds exactly one frame. Raises FrameError (truncated, trailing bytes, bad "
            "fields...) or MessageTooLarge.")
        .def_property_readonly(
            "encoded_size", [](const sim::Frame& f) { return sim::encoded_frame_size(f); },
            "Size of the encoding (header included), without checking the frame.")
        .def(
            "peer_error",
            [](const sim::Frame& f) { return make_error_object(unwrap(sim::parse_error_frame(f)).to_error()); },
            "For an ERROR frame: the reported error as a libsim.Error object (returned, not raised). Raises "
            "FrameError for a malformed error frame, InvalidArgument for another frame type.")
        .def(py::self == py::self)  // NOLINT(misc-redundant-expression)
        .def("__repr__", &frame_repr)
        .def("__copy__", [](const sim::Frame& f) { return f; })
        .def(
            "__deepcopy__", [](const sim::Frame& f, const py::dict&) { return f; }, py::arg("memo"));

    m.def(
        "make_error_frame",
        [](sim::Errc code, const Text& detail) { return sim::make_error_frame(code, detail.value); }, py::arg("code"),
        py::arg("detail") = Text{},
        "An ERROR frame carrying `code` and `detail` (control characters become '?', a long detail is cut). Never "
        "put secrets or user content in the detail.");

    py::class_<sim::FrameDecoder>(m, "FrameDecoder",
                                  "Incremental decoder for a byte stream of frames: feed() bytes in any split, then "
                                  "iterate to get the complete frames. After an error it stays failed.")
        .def(py::init<std::size_t>(), py::kw_only(), py::arg("max_frame_size") = sim::default_max_frame_size)
        .def(
            "feed", [](sim::FrameDecoder& d, const Blob& data) { d.feed(data.view()); }, py::arg("data"),
            "Append received bytes (ignored once the decoder has failed).")
        .def(
            "next", [](sim::FrameDecoder& d) -> std::optional<sim::Frame> { return unwrap(d.next()); },
            "The next complete frame, or None when more bytes are needed. Raises FrameError / MessageTooLarge.")
        .def("__iter__", [](py::object self) { return self; })
        .def("__next__",
             [](sim::FrameDecoder& d) {
                 auto f = unwrap(d.next());
                 if (!f) {
                     throw py::stop_iteration();
                 }
                 return std::move(*f);
             })
        .def_property_readonly("bytes_needed", &sim::FrameDecoder::bytes_needed,
                               "How many more bytes the next frame needs (0 when a frame or error is ready).")
        .def_property_readonly("buffered", &sim::FrameDecoder::buffered, "Bytes received but not yet returned.")
        .def_property_readonly("failed", &sim::FrameDecoder::failed, "True after an error.")
        .def_property_readonly("max_frame_size", &sim::FrameDecoder::max_frame_size);
}

}  // namespace simpy
