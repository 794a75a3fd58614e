#pragma once
// Private: the end-to-end half of the client core (docs/protocol.md section 6). It owns the identity, prekeys,
// Double Ratchet sessions, pinned peers, sequence numbers, the ids seen and the inbox, keeps them in the ClientState,
// and turns server frames into events and frames to send. Texts it seals go into the outbox (durable_outbox.h), which
// the core owns. Not thread-safe: the client core calls it under its lock.
//
// Changes (the outbox's included) are collected and written in one batch by commit(); frames that acknowledge or
// upload something that must be durable first (acks, prekey uploads) are queued and handed out only after a
// successful commit.

#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/e2e.h>
#include <sim/frame.h>
#include <sim/messages.h>

#include "device_lists.h"
#include "durable_outbox.h"
#include "inbox.h"

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace sim::client_detail {

class E2eClient {
public:
    /// `state`, `rng` and `outbox` must outlive this object.
    E2eClient(const ClientConfig& config, ClientState& state, Rng& rng, DurableOutbox& outbox);
    ~E2eClient();
    E2eClient(const E2eClient&) = delete;
    E2eClient& operator=(const E2eClient&) = delete;

    /// After login: load (or create) the identity of `user`. Errc::invalid_state when the state belongs to another
    /// user; storage errors.
    Status set_user(const std::string& user);
    [[nodiscard]] bool ready() const noexcept { return !m_user.empty(); }
    /// Before login: read the outbox of a state that has an identity, so outbox_size() is right from the start
    /// (nothing is sent before login). Errors are left for set_user() to report.
    void preload_outbox();
    /// Whether the state holds an identity (a state that was used before).
    [[nodiscard]] bool has_identity() const;
    /// This installation's device as the state records it (docs/protocol.md 6.9): nullopt for a state without a
    /// device record (device 1 of an account, or a new state). Errc::corrupt_database, storage errors.
    [[nodiscard]] Result<std::optional<DeviceId>> stored_device() const;
    /// A linked device's keys, from the grant of an approving device: the identity (the device key), the device
    /// record (`device`, the account key's seed) and `also` (the grant's device list) are written in one batch
    /// before it returns. Errc::invalid_state when the state already holds an identity or is in use;
    /// Errc::invalid_key for a bad seed.
    Status adopt_link(const std::string& user, DeviceId device, const e2e::IdentityKeyPair& device_key,
                      ByteView account_seed, std::vector<StateWrite> also);
    /// This installation's device (after set_user).
    [[nodiscard]] DeviceId device() const noexcept { return m_device; }
    /// The device key: the X3DH identity of this device (after set_user).
    [[nodiscard]] const e2e::IdentityKeyPair& device_key() const { return *m_identity; }
    /// The account key: signs the account's device lists; peers pin it and safety numbers are computed over it. The
    /// device key itself on device 1 of an account from before devices (after set_user).
    [[nodiscard]] const e2e::IdentityKeyPair& account_key() const { return m_account ? *m_account : *m_identity; }
    /// Acknowledge message `id` from `peer` once the next commit succeeds (acks are batched per peer).
    void ack(const std::string& peer, const MessageId& id);
    /// Whether message `id` from `peer` was shown before (ids are remembered per peer, in the state, bounded).
    [[nodiscard]] bool seen(std::string_view peer, const MessageId& id) const;
    /// Remember `id` as shown, in the next commit (server-assigned messages; end-to-end ones remember their own).
    void remember(const std::string& peer, const MessageId& id);
    /// A message to show: written to the inbox in the next commit (before its ack goes out); returns its index.
    std::uint64_t keep_received(const InboxEntry& entry);
    [[nodiscard]] Result<std::vector<InboxEntry>> inbox(std::uint64_t from, std::size_t limit,
                                                        std::string_view peer) const;
    [[nodiscard]] InboxStatus inbox_status() const noexcept { return m_inbox.status(); }
    Status mark_read(std::uint64_t up_to);

    void on_prekey_status(const PrekeyStatus& status);
    /// An end-to-end KEYGEN (docs/protocol.md 6.2): mode 2, device 1's bundle; mode 3, the peer's account key,
    /// signed device list and a bundle per device (the peer may be this user: our other devices). Sessions start
    /// with the devices that have none, queued texts are sealed for them (or it is held while an identity change is
    /// pending).
    void on_keys(const KeyAssignment& keys);
    /// A delivered end-to-end message from `peer`; `received_at` is the server's receive time (delivery header,
    /// kept with it). An own copy (docs/protocol.md 6.5: sent by another device of ours to `peer`) comes with
    /// `own_copy`.
    void on_message(const std::string& peer, const Delivered& delivered, bool own_copy = false);
    /// The device list of `whose` (a peer, or this user) in force changed (Devices accepted a newer one): sessions
    /// of removed devices go, queued texts are sealed again for the new list, held messages are tried again.
    void list_changed(const std::string& whose);
    /// The server refused a message to `peer` with devices_changed: its queued texts are brought up to the lists
    /// now in force (sealed for new devices, keys asked for when a session is missing).
    void devices_refused(const std::string& peer);
    /// Seal and queue a text message sent at `sent_at` (the sender's timestamp it carries, also when it waits for
    /// a session unsealed); committed (outbox included) before it returns.
    Result<MessageId> send_text(const std::string& peer, std::string_view text, WallTime sent_at,
                                std::size_t max_inner);
    /// Queue an outbox payload (outbox.h) under `id`; committed before it returns.
    Status enqueue(const MessageId& id, const std::string& peer, Bytes payload);
    /// The `message` payload for a queued text to `peer` (outbox.h, a QueuedText): nullopt while it does not cover
    /// the devices now in force (the stream is then held, and the next tick() seals it for them).
    [[nodiscard]] std::optional<Submission> submission(const std::string& peer, ByteView payload);
    /// Names whose keys are needed (a peer's, or ours for our other devices): the core asks with an `init`.
    std::vector<std::string> take_wanted_keys() { return std::exchange(m_wanted_keys, {}); }
    /// Periodic work: answer DH ratchet steps with a ratchet-only message.
    void tick();

    [[nodiscard]] bool has_session(std::string_view peer) const;
    [[nodiscard]] std::vector<std::string> peers_with_sessions() const;
    [[nodiscard]] std::optional<SuiteId> session_suite(std::string_view peer) const;
    [[nodiscard]] Result<PeerIdentity> peer_identity(std::string_view peer) const;
    Status verify_peer(std::string_view peer);
    Status accept_identity(std::string_view peer);

    /// Write every pending change in one batch; on success the queued frames become available.
    Status commit();
    /// Events produced since the last call.
    std::vector<ClientEvent> take_events();
    /// Frames to send whose state is committed (acks, prekey uploads, ratchet-only replies).
    std::vector<Frame> take_frames();

    struct PeerState;
    struct DeviceState;

private:
    PeerState& peer_state(const std::string& peer);
    const PeerState* find_peer(std::string_view peer) const;
    Status load_prekeys();
    [[nodiscard]] bool ready_to_preload() const;
    Status load_peer(const std::string& peer);
    void upload_prekeys(bool replace);
    /// The device list in force for `p` (nullopt: none accepted; read from the state once). Storage errors.
    Result<const e2e::DeviceList*> list_of(PeerState& p);
    /// The devices a message must be sealed for: a peer's listed devices ({1} without a list); for ourselves our
    /// other listed devices (none without a list).
    Result<std::vector<DeviceId>> targets(PeerState& p);
    /// The key device `device` of `p` must use: from the list in force; without one, device 1 of a peer uses the
    /// pinned identity. Empty when not known.
    Result<Bytes> expected_key(PeerState& p, DeviceId device);
    void open_with_session(PeerState& p, DeviceId device, const Delivered& d, const std::string& conversation_peer);
    void open_initial(PeerState& p, DeviceId device, const Delivered& d, const e2e::MessageInfo& info,
                      const std::string& conversation_peer);
    void deliver_content(PeerState& p, DeviceId device, const Delivered& d, std::uint64_t steps_before,
                         std::uint64_t steps_after, SecureBytes plaintext, const std::string& conversation_peer);
    /// One body of `content` for `device` of `p`, in the conversation with `conversation_peer`.
    Result<Bytes> seal_body(PeerState& p, DeviceId device, E2eContent content, const std::string& conversation_peer);
    /// Start a session with `device` of `p` from its bundle (its key already checked).
    bool start_session(PeerState& p, DeviceId device, const e2e::PrekeyBundle& bundle, SuiteId hint);
    /// Accept a KEYGEN for `p` whose identity is settled.
    void apply_keys(PeerState& p, const KeyAssignment& keys);
    /// Sessions of devices no longer listed for `p` are dropped.
    void drop_unlisted(PeerState& p);
    /// Bring the texts queued for `peer` up to the devices in force: a body sealed for each device without one,
    /// bodies of devices no longer listed dropped; the stream is released when all are complete, else the names
    /// whose keys are missing are wanted. Older unsealed texts become queued texts here.
    void complete(const std::string& peer);
    /// complete() for every peer with queued texts (our own devices changed).
    void complete_all();
    /// Ask the core for `name`'s keys (an `init`), unless they are being applied right now.
    void want_keys(const std::string& name);
    /// Messages held for want of a device's key (or a list): tried again.
    void replay_held(PeerState& p);
    void keyed_event(const PeerState& p, SuiteId suite, bool first_contact);
    /// A different identity key for `p`: pending until accepted, announced once per new key.
    void note_identity_change(PeerState& p, const Bytes& key);
    void ratchet_event(const std::string& peer, std::uint64_t steps, KeyDirection direction);
    void queue_frame(Frame frame, bool after_commit);
    void event(ClientEvent e) { m_events.push_back(std::move(e)); }
    void error_event(const std::string& peer, const Error& error);
    std::string safety_number_with(const PeerState& p, ByteView identity) const;
    void mark_dirty(PeerState& p);

    const ClientConfig& m_config;
    ClientState& m_state;
    Rng& m_rng;

    std::string m_user;
    DeviceId m_device = first_device;  // from the state's device record; 1 without one
    std::optional<e2e::IdentityKeyPair> m_identity;
    std::optional<e2e::IdentityKeyPair> m_account;  // set when it is not m_identity (a linked device)
    struct Prekeys;
    std::unique_ptr<Prekeys> m_prekeys;
    std::map<std::string, std::unique_ptr<PeerState>, std::less<>> m_peers;

    /// In send order (sent in that order, so the recipient's ratchet skips nothing it need not).
    DurableOutbox& m_outbox;
    Inbox m_inbox;
    DeviceLists m_lists;
    std::vector<std::string> m_wanted_keys;
    std::set<std::string> m_to_complete;  // peers whose queued texts submission() found short of a device
    std::string m_applying;               // whose keys apply_keys() is taking (not asked for again meanwhile)
    bool m_prekeys_dirty = false;
    bool m_peers_index_dirty = false;

    std::vector<StateWrite> m_writes;
    std::map<std::string, std::vector<MessageId>> m_pending_acks;
    std::vector<Frame> m_after_commit;
    std::vector<Frame> m_ready_frames;
    std::vector<ClientEvent> m_events;
};

}  // namespace sim::client_detail
