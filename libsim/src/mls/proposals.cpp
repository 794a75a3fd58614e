// RFC 9420 s10 KeyPackage, s12.1 Proposal.
#include "proposals.h"

#include "framing.h"
#include "primitives.h"

namespace sim::mls {

namespace {

Status encode_tbs(TlsWriter& w, const KeyPackage& kp) {
    w.u16(kp.version);
    w.u16(kp.cipher_suite);
    SIM_TRY_STATUS(w.vector(kp.init_key));
    SIM_TRY_STATUS(kp.leaf_node.encode_into(w));
    Bytes ext;
    SIM_TRY_STATUS(encode_extensions(kp.extensions, ext));
    w.raw(ext);
    return ok();
}

}  // namespace

Status KeyPackage::encode_into(TlsWriter& w) const {
    SIM_TRY_STATUS(encode_tbs(w, *this));
    return w.vector(signature);
}

Result<Bytes> KeyPackage::to_be_signed() const {
    TlsWriter w;
    SIM_TRY_STATUS(encode_tbs(w, *this));
    return std::move(w).bytes();
}

bool KeyPackage::verify() const {
    const auto tbs = to_be_signed();
    return tbs && verify_with_label(leaf_node.signature_key, "KeyPackageTBS", *tbs, signature);
}

Result<Bytes> KeyPackage::ref() const {
    TlsWriter w;
    SIM_TRY_STATUS(encode_into(w));
    return ref_hash("MLS 1.0 KeyPackage Reference", w.bytes());
}

Result<KeyPackage> decode_key_package(TlsReader& r) {
    KeyPackage kp;
    SIM_TRY(kp.version, r.u16());
    SIM_TRY(kp.cipher_suite, r.u16());
    SIM_TRY(const auto init_key, r.vector(max_key_size));
    kp.init_key = to_bytes(init_key);
    SIM_TRY(kp.leaf_node, decode_leaf_node(r));
    SIM_TRY(const auto ext, r.vector(max_extensions_size));
    SIM_TRY(kp.extensions, decode_extensions(ext));
    SIM_TRY(const auto signature, r.vector(max_signature_size));
    kp.signature = to_bytes(signature);
    return kp;
}

Result<Proposal> decode_proposal(TlsReader& r) {
    // The structural walk checks every type and yields the exact encoding; Add, Update and Remove are then decoded
    // in full from the same position and must end where the walk ended.
    TlsReader walk = r;
    SIM_TRY(const auto encoding, read_proposal(walk));
    Proposal p;
    p.encoding = to_bytes(encoding);
    SIM_TRY(const auto type, r.u16());
    p.type = static_cast<ProposalType>(type);
    switch (type) {
        case 1: {
            SIM_TRY(p.add, decode_key_package(r));
            break;
        }
        case 2: {
            SIM_TRY(p.update, decode_leaf_node(r));
            break;
        }
        case 3: {
            SIM_TRY(p.removed, r.u32());
            break;
        }
        default:
            r = walk;
            break;
    }
    if (r.position() != walk.position()) {
        return Error{Errc::internal, "proposal decoders disagree on its length"};
    }
    return p;
}

}  // namespace sim::mls
