// Push frames built by hand for tests that talk to a daemon below the client library.
#ifndef ENGRAM_TESTS_TESTING_PUSH_FRAME_H_
#define ENGRAM_TESTS_TESTING_PUSH_FRAME_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "client/transport.h"
#include "engram/status.h"
#include "engram/wire.h"

namespace engram::testing {

// A kPush payload for one server (the client library would split by server): `grads` holds
// dim floats per row.
inline std::vector<uint8_t> PushPayload(const std::string& table, uint64_t client, uint64_t seq,
                                        const std::vector<uint64_t>& rows, const std::vector<float>& grads) {
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  w.PutString(table);
  w.Put<uint64_t>(client);
  w.Put<uint64_t>(seq);
  w.Put<uint32_t>(static_cast<uint32_t>(rows.size()));
  w.PutBytes(rows.data(), rows.size() * 8);
  w.PutBytes(grads.data(), grads.size() * 4);
  return p;
}

// Sends one request on `conn` and waits up to 5 s for its answer.
inline Status CallOnce(client::Transport& transport, int conn, wire::MsgType type, std::vector<uint8_t> payload) {
  auto id = transport.Send(conn, type, 0, std::move(payload));
  if (!id.ok()) return id.status();
  return transport.Wait(*id, client::Clock::now() + std::chrono::seconds(5)).status();
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_PUSH_FRAME_H_
