// Server-sent events for a streaming completion: one chunk per text piece as the scheduler
// produces it, a final chunk with finish_reason and usage (or an error event when the job did
// not finish), then [DONE]. A failed write or a closed connection cancels the job, whose cells
// the scheduler frees at its next step.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "chat/tool_calls.h"
#include "engine/job.h"
#include "server/client_connection.h"
#include "server/server_state.h"

namespace httplib {
struct Response;
}

namespace kvrag::server {

struct StreamHeader {
    std::string id;       // "chatcmpl-..." / "cmpl-..."
    std::string model;    // as the client named it (or the served id)
    int64_t created = 0;
    bool chat = false;
    bool logprobs = false;              // chunks carry the logprobs of the tokens they hold
    std::string echo_prefix;            // completions with echo: sent first
    // chat with tools offered: the answer goes through chat::ToolCallParser as it is generated;
    // content streams as content, each call as a header delta (index, id, type, name) once its
    // name is complete and then its arguments as they grow; finish_reason tool_calls when a
    // call was sent and every call's arguments closed.
    std::vector<chat::ToolFunction> tools;
    chat::ToolFormat tool_format = chat::ToolFormat::hermes;
};

// Sets `res` up to stream `job` (admitted or ended already) to its client.
void stream_job(httplib::Response& res, ServerState& state, std::shared_ptr<engine::Job> job,
                std::shared_ptr<ClientConnection> conn, StreamHeader header);

}  // namespace kvrag::server
