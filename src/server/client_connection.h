// Is the HTTP client still there? Used to cancel a request whose client left.
//
// cpp-httplib 0.11 gives a handler the request but not its socket, and its DataSink's
// is_writable() only says the socket buffer has room (a closed peer still reads as writable).
// So the handler finds its own connection's socket: the one file descriptor whose peer address
// and port and local port equal the request's remote_addr/remote_port/local_port (that 4-tuple
// names one TCP connection). It then polls it: a FIN or RST from the client (POLLRDHUP/POLLHUP/
// POLLERR, or a zero-byte MSG_PEEK read) means the client is gone. Reading with MSG_PEEK never
// consumes a pipelined next request. Linux: the descriptors are listed from /proc/self/fd.
// When no descriptor matches (not Linux, or it could not be read) the connection is reported
// alive, and a streaming response still notices a failed write.
#pragma once

#include <string>

namespace httplib {
struct Request;
}

namespace kvrag::server {

class ClientConnection {
public:
    explicit ClientConnection(const httplib::Request& req);
    // False once the client closed or reset the connection. Cheap (one poll).
    bool alive();
    int fd() const { return fd_; }

private:
    int fd_ = -1;
    bool gone_ = false;
};

}  // namespace kvrag::server
