#include "server/client_connection.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <httplib.h>

namespace kvrag::server {
namespace {

// Address text and port of a socket address, as httplib formats remote_addr (numeric host).
bool address_of(const sockaddr_storage& ss, std::string& host, int& port) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        if (!inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf))) return false;
        port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        if (!inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf))) return false;
        port = ntohs(a->sin6_port);
    } else {
        return false;
    }
    host = buf;
    return true;
}

int find_socket(const std::string& remote_addr, int remote_port, int local_port) {
    DIR* dir = opendir("/proc/self/fd");
    if (!dir) return -1;
    int found = -1;
    while (dirent* e = readdir(dir)) {
        char* end = nullptr;
        const long fd = std::strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
        sockaddr_storage peer{}, self{};
        socklen_t lp = sizeof(peer), ls = sizeof(self);
        if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &lp) != 0) continue;
        if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&self), &ls) != 0) continue;
        std::string peer_host, self_host;
        int peer_port = -1, self_port = -1;
        if (!address_of(peer, peer_host, peer_port) || !address_of(self, self_host, self_port)) continue;
        if (peer_port == remote_port && self_port == local_port && peer_host == remote_addr) {
            found = static_cast<int>(fd);
            break;
        }
    }
    closedir(dir);
    return found;
}

}  // namespace

ClientConnection::ClientConnection(const httplib::Request& req)
    : fd_(find_socket(req.remote_addr, req.remote_port, req.local_port)) {}

bool ClientConnection::alive() {
    if (gone_) return false;
    if (fd_ < 0) return true;
    pollfd p{fd_, static_cast<short>(POLLIN | POLLRDHUP), 0};
    const int n = poll(&p, 1, 0);
    if (n < 0) return true;  // EINTR and the like: ask again next time
    if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) {
        gone_ = true;
    } else if (p.revents & POLLIN) {
        char c;
        const ssize_t r = recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) gone_ = true;
    }
    return !gone_;
}

}  // namespace kvrag::server
