// Parsing of "HOST:PORT" addresses (flags of the daemon, the clients' server lists).
#ifndef ENGRAM_HOST_PORT_H_
#define ENGRAM_HOST_PORT_H_

#include <cstdint>
#include <stdexcept>
#include <string>

#include "engram/status.h"

namespace engram {

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

// `allow_port_zero`: for listen addresses, where port 0 asks for an ephemeral port.
inline StatusOr<HostPort> ParseHostPort(const std::string& s, bool allow_port_zero) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return Status::InvalidArgument("'" + s + "' is not HOST:PORT");
  try {
    const int port = std::stoi(s.substr(colon + 1));
    if (port < (allow_port_zero ? 0 : 1) || port > 65535) throw std::out_of_range("port");
    return HostPort{s.substr(0, colon), static_cast<uint16_t>(port)};
  } catch (const std::exception&) {
    return Status::InvalidArgument("'" + s + "' has a bad port");
  }
}

}  // namespace engram

#endif  // ENGRAM_HOST_PORT_H_
