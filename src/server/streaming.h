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
    bool logprobs = false;              // chunks carry the logprobs of the tokens whose text they hold
    std::string echo_prefix;            // completions with echo: sent first (per choice)
    // chat with tools offered: the answer goes through chat::ToolCallParser as it is generated;
    // content streams as content, each call as a header delta (index, id, type, name) once its
    // name is complete and then its arguments as they grow; finish_reason tool_calls when a
    // call was sent and every call's arguments closed.
    std::vector<chat::ToolFunction> tools;
    chat::ToolFormat tool_format = chat::ToolFormat::hermes;
    bool parallel_tool_calls = true;    // false: calls after the first are not sent
    bool include_usage = true;          // stream_options.include_usage false: no usage
};

// Sets `res` up to stream `jobs` (admitted or ended already; n > 1: one per choice, index =
// position) to its client. Each chunk carries one choice (`choices: [{index: i, ...}]`); each
// choice ends with its own finish_reason chunk, and the last of those carries `usage` (the
// prompt once, every choice's tokens). An error in any choice ends the stream with an error
// event, the other choices cancelled.
void stream_job(httplib::Response& res, ServerState& state, std::vector<std::shared_ptr<engine::Job>> jobs,
                std::shared_ptr<ClientConnection> conn, StreamHeader header);

}  // namespace kvrag::server
