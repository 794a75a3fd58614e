#pragma once
/// @file
/// TreeKEM (RFC 9420 s7.4-s7.6, s12.4.2): UpdatePath encoding, creating an UpdatePath, merging a received one into
/// the public tree (with its parent-hash chain and leaf signature checked) and decrypting its path secret with a
/// member's private state. Internal to libsim.

#include "codec.h"
#include "primitives.h"
#include "ratchet_tree.h"

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstdint>
#include <map>
#include <set>
#include <vector>

namespace sim::mls {

/// s7.6 UpdatePathNode.
struct UpdatePathNode {
    Bytes encryption_key;
    std::vector<HpkeCiphertext> encrypted_path_secret;
};

/// s7.6 UpdatePath.
struct UpdatePath {
    LeafNode leaf_node;
    std::vector<UpdatePathNode> nodes;

    Status encode_into(TlsWriter& w) const;
};

/// Decode an UpdatePath. Errors of decode_leaf_node and the codec.
Result<UpdatePath> decode_update_path(TlsReader& r);

/// A member's private TreeKEM state: its leaf's HPKE private key and the path secrets of the parent nodes it knows.
struct TreePrivate {
    std::uint32_t leaf = 0;
    SecureBytes leaf_private;
    std::map<std::uint32_t, SecureBytes> path_secrets;  ///< node index -> path secret
};

/// s7.4: the HPKE key pair of a node from its path secret: KEM.DeriveKeyPair(DeriveSecret(path_secret, "node")).
Result<HpkeKeyPair> node_key_pair(ByteView path_secret);

/// True when every key of `priv` matches the public key of its (non-blank) node in `tree`.
[[nodiscard]] bool private_state_consistent(const RatchetTree& tree, const TreePrivate& priv);

/// s12.4.2: merge `path`, sent by leaf `sender`, into `tree`: one node per filtered-direct-path node
/// (Errc::bad_field otherwise), the sender's direct path blanked and set, parent hashes computed; the new leaf must
/// come from a commit, carry the computed parent hash and a valid signature (Errc::auth_failed).
/// `tree` is changed only on success.
Status merge_update_path(RatchetTree& tree, std::uint32_t sender, const UpdatePath& path, ByteView group_id);

/// What a receiver learns from an UpdatePath.
struct PathSecrets {
    std::uint32_t node = 0;     ///< the node whose path secret was decrypted
    SecureBytes path_secret;    ///< that path secret
    SecureBytes commit_secret;  ///< DeriveSecret(last path secret, "path")
};

/// s12.4.2: decrypt the path secret addressed to `priv` in `path` (sender `sender`), `merged` being the tree after
/// merge_update_path and `group_context` the encoded provisional GroupContext; derive the path secrets above it,
/// check that they give the path's public keys (Errc::auth_failed) and return the commit secret. Leaves in
/// `excluded` (added by the same commit) are left out of the resolutions. Errc::invalid_argument when `priv`
/// holds no key for the path, Errc::bad_field for a wrong number of ciphertexts, HPKE errors.
Result<PathSecrets> decrypt_update_path(const RatchetTree& merged, std::uint32_t sender, const UpdatePath& path,
                                        const TreePrivate& priv, ByteView group_context,
                                        const std::set<std::uint32_t>& excluded = {});

/// What the sender of a new UpdatePath keeps.
struct CreatedPath {
    UpdatePath path;
    RatchetTree tree;  ///< the tree with the path merged
    TreePrivate priv;  ///< the sender's new private state
    SecureBytes commit_secret;
    Bytes tree_hash;  ///< root tree hash of `tree`
};

/// s7.5: a fresh UpdatePath for leaf `sender` of `tree`: new leaf key, random path secrets up the filtered direct
/// path, parent hashes, the leaf re-signed (source commit) with `signature_private`, and each path secret encrypted
/// to the resolution of its copath child (minus `excluded`) under `context` with its tree hash replaced by the new
/// one. Errc::invalid_argument for a blank sender leaf.
Result<CreatedPath> create_update_path(const RatchetTree& tree, std::uint32_t sender, ByteView signature_private,
                                       GroupContext context, Rng& rng, const std::set<std::uint32_t>& excluded = {});

}  // namespace sim::mls
