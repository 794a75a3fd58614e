// libsim._libsim: the extension under the pure-Python package `libsim`. One source file per area.
#include "common.h"

PYBIND11_MODULE(_libsim, m) {
    m.doc() = "Native part of libsim; import the `libsim` package instead.";
    m.attr("__version__") = SIM_VERSION;
    simpy::register_errors(m);
    simpy::register_frame(m);
    simpy::register_rng_clock(m);
    simpy::register_crypto(m);
    simpy::register_session(m);
    simpy::register_handshake(m);
    simpy::register_client(m);
    simpy::register_channel(m);  // after client: its defaults use TrustMode
}
